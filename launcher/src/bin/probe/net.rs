//! The probe's network checks (issue 12): a connection through the SOCKS5
//! endpoint, through `NetworkAccess1.Connect` (the fd path) or directly,
//! and the timings the network benchmark compares.
//!
//!   net-connect MODE HOST PORT            one connection; sends an HTTP GET,
//!                                         prints the first 64 bytes answered
//!   net-bench MODE HOST PORT ROUNDS BULK_PORT
//!                                         ROUNDS set-ups (connect, first
//!                                         byte), then one bulk read to EOF
//!
//! MODE: `socks` (127.0.0.1:1080, RFC 1928 CONNECT by name), `fd` (the
//! portal through $DBUS_SESSION_BUS_ADDRESS), `direct` (plain connect).

use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::fd::OwnedFd;
use std::time::Instant;

use porthole_launcher::socks::{self, PortalConn};

fn bus_conn() -> Result<PortalConn, String> {
    let address = std::env::var("DBUS_SESSION_BUS_ADDRESS").map_err(|_| "no bus".to_string())?;
    let (_, target) =
        porthole_dbus_wire::address::first_unix_target(&address).map_err(|e| e.to_string())?;
    let path = match target {
        porthole_dbus_wire::UnixTarget::Path(p) => p,
        porthole_dbus_wire::UnixTarget::Abstract(_) => return Err("abstract bus".into()),
    };
    // SAFETY: getuid has no preconditions.
    let uid = unsafe { libc::getuid() };
    PortalConn::open(&path, uid).map_err(|e| e.to_string())
}

/// A connection in `mode`; `bus` is reused across calls of the fd mode.
fn open(
    mode: &str,
    host: &str,
    port: u16,
    bus: &mut Option<PortalConn>,
) -> Result<OwnedFd, String> {
    match mode {
        "direct" => TcpStream::connect((host, port))
            .map(OwnedFd::from)
            .map_err(|e| e.to_string()),
        "fd" => {
            if bus.is_none() {
                *bus = Some(bus_conn()?);
            }
            let conn = bus.as_mut().ok_or("no bus")?;
            conn.connect(host, port).map_err(|e| e.to_string())
        }
        "socks" => {
            let mut s =
                TcpStream::connect(("127.0.0.1", socks::PORT)).map_err(|e| e.to_string())?;
            s.set_nodelay(true).map_err(|e| e.to_string())?;
            let mut req = vec![5, 1, 0, 5, 1, 0, 3, host.len() as u8];
            req.extend_from_slice(host.as_bytes());
            req.extend_from_slice(&port.to_be_bytes());
            s.write_all(&req).map_err(|e| e.to_string())?;
            // The greeting's answer (2 bytes), then the reply: 10 bytes
            // with the IPv4 bound address ours always carries.
            let mut reply = [0u8; 12];
            s.read_exact(&mut reply).map_err(|e| e.to_string())?;
            if reply[..4] != [5, 0, 5, 0] {
                return Err(format!("SOCKS5 reply {:02x}", reply[3]));
            }
            Ok(OwnedFd::from(s))
        }
        other => Err(format!("unknown mode {other}")),
    }
}

pub fn connect(mode: &str, host: &str, port: &str) {
    let port: u16 = port.parse().unwrap_or(0);
    let mut bus = None;
    match open(mode, host, port, &mut bus) {
        Ok(fd) => {
            let mut s = TcpStream::from(fd);
            // An HTTP request, for servers that wait for one.
            let _ = s.write_all(b"GET / HTTP/1.0\r\n\r\n");
            let mut buf = [0u8; 64];
            let n = s.read(&mut buf).unwrap_or(0);
            crate::report_with(
                "NET.connect",
                "OK",
                serde_json::json!({ "first": String::from_utf8_lossy(&buf[..n]) }),
            );
        }
        Err(e) => crate::report("NET.connect", &e),
    }
}

pub fn bench(mode: &str, host: &str, port: &str, rounds: &str, bulk_port: &str) {
    let port: u16 = port.parse().unwrap_or(0);
    let bulk_port: u16 = bulk_port.parse().unwrap_or(0);
    let rounds: usize = rounds.parse().unwrap_or(100);
    let mut bus = None;
    let mut setup_us = Vec::with_capacity(rounds);
    for _ in 0..rounds {
        let t0 = Instant::now();
        let fd = match open(mode, host, port, &mut bus) {
            Ok(fd) => fd,
            Err(e) => return crate::report("NET.bench", &e),
        };
        let mut s = TcpStream::from(fd);
        let mut one = [0u8; 1];
        if s.read_exact(&mut one).is_err() {
            return crate::report("NET.bench", "no first byte");
        }
        setup_us.push(t0.elapsed().as_secs_f64() * 1e6);
    }
    setup_us.sort_by(f64::total_cmp);
    let t0 = Instant::now();
    let fd = match open(mode, host, bulk_port, &mut bus) {
        Ok(fd) => fd,
        Err(e) => return crate::report("NET.bench", &e),
    };
    let mut s = TcpStream::from(fd);
    let mut buf = vec![0u8; 1 << 20];
    let mut total = 0u64;
    loop {
        match s.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => total += n as u64,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return crate::report("NET.bench", &e.to_string()),
        }
    }
    let secs = t0.elapsed().as_secs_f64();
    crate::report_with(
        "NET.bench",
        "OK",
        serde_json::json!({
            "mode": mode,
            "setup_median_us": setup_us[setup_us.len() / 2],
            "setup_p90_us": setup_us[setup_us.len() * 9 / 10],
            "bulk_bytes": total,
            "bulk_mib_s": total as f64 / (1 << 20) as f64 / secs,
        }),
    );
}
