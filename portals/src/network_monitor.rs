//! `org.freedesktop.portal.NetworkMonitor` (version 3), as upstream's
//! `network-monitor.c` over GLib's netlink network monitor: the state comes
//! from the kernel's routes (`/proc/net/route`, `/proc/net/ipv6_route`, the
//! main table's up, non-reject routes off `lo`), re-read when an rtnetlink
//! route or link notification arrives, never on a timer.
//!
//! - available: a default route (IPv4 or IPv6) exists;
//! - metered: false (no NetworkManager here to say otherwise);
//! - connectivity: 4 (full) when available, else 1 (local only), as GLib's
//!   netlink monitor reports it;
//! - CanReach: the name resolves and some address lies in a route's
//!   network (a default route covers all); any failure is false;
//! - `changed` (no arguments) whenever the set of routes changes.
//!
//! Every method answers NotAllowed ("This call is not available inside the
//! sandbox") to an app without `network` in its `[Context] shared`.

use std::net::IpAddr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::{Arc, Mutex};

use porthole_service::{Callers, PortalError};
use tokio::io::unix::AsyncFd;
use zbus::message::Header;
use zbus::object_server::SignalEmitter;
use zvariant::{OwnedValue, Value};

pub const INTERFACE: &str = "org.freedesktop.portal.NetworkMonitor";

const RTF_UP: u32 = 0x1;
const RTF_REJECT: u32 = 0x200;

/// One route's network.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Route {
    pub dest: IpAddr,
    pub prefix: u8,
}

impl Route {
    fn contains(&self, addr: IpAddr) -> bool {
        let bits = |a: IpAddr| -> (u128, u32) {
            match a {
                IpAddr::V4(v4) => (u128::from(u32::from(v4)) << 96, 32),
                IpAddr::V6(v6) => (u128::from(v6), 128),
            }
        };
        let (dest, width) = bits(self.dest);
        let (other, other_width) = bits(addr);
        if width != other_width || u32::from(self.prefix) > width {
            return false;
        }
        let prefix = u32::from(self.prefix);
        let mask = if prefix == 0 {
            0
        } else {
            u128::MAX << (128 - prefix)
        };
        dest & mask == other & mask
    }
}

/// The IPv4 routes in `/proc/net/route`'s text.
pub fn parse_ipv4(text: &str) -> Vec<Route> {
    text.lines()
        .skip(1)
        .filter_map(|line| {
            let f: Vec<&str> = line.split_whitespace().collect();
            let (iface, dest, flags, mask) = (f.first()?, f.get(1)?, f.get(3)?, f.get(7)?);
            let flags = u32::from_str_radix(flags, 16).ok()?;
            if *iface == "lo" || flags & RTF_UP == 0 || flags & RTF_REJECT != 0 {
                return None;
            }
            // The kernel prints the addresses in host (little-endian) order.
            let dest = u32::from_str_radix(dest, 16).ok()?.swap_bytes();
            let mask = u32::from_str_radix(mask, 16).ok()?.swap_bytes();
            Some(Route {
                dest: IpAddr::V4(dest.into()),
                prefix: mask.leading_ones() as u8,
            })
        })
        .collect()
}

/// The IPv6 routes in `/proc/net/ipv6_route`'s text.
pub fn parse_ipv6(text: &str) -> Vec<Route> {
    text.lines()
        .filter_map(|line| {
            let f: Vec<&str> = line.split_whitespace().collect();
            let (dest, prefix, flags, iface) = (f.first()?, f.get(1)?, f.get(8)?, f.get(9)?);
            let flags = u32::from_str_radix(flags, 16).ok()?;
            if *iface == "lo" || flags & RTF_UP == 0 || flags & RTF_REJECT != 0 {
                return None;
            }
            Some(Route {
                dest: IpAddr::V6(u128::from_str_radix(dest, 16).ok()?.into()),
                prefix: u8::from_str_radix(prefix, 16).ok()?,
            })
        })
        .collect()
}

/// The kernel's routes now (a missing file, as without IPv6, is none).
pub fn read_routes() -> Vec<Route> {
    let read = |path: &str| std::fs::read_to_string(path).unwrap_or_default();
    let mut routes = parse_ipv4(&read("/proc/net/route"));
    routes.extend(parse_ipv6(&read("/proc/net/ipv6_route")));
    routes.sort();
    routes.dedup();
    routes
}

/// What the portal reports.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct State {
    pub routes: Vec<Route>,
}

impl State {
    pub fn available(&self) -> bool {
        self.routes.iter().any(|r| r.prefix == 0)
    }

    pub fn connectivity(&self) -> u32 {
        if self.available() { 4 } else { 1 }
    }

    pub fn reaches(&self, addr: IpAddr) -> bool {
        self.routes.iter().any(|r| r.contains(addr))
    }
}

/// The portal.
pub struct NetworkMonitor {
    pub callers: Arc<Callers>,
    pub state: Arc<Mutex<State>>,
}

impl NetworkMonitor {
    pub fn new(callers: Arc<Callers>) -> Self {
        Self {
            callers,
            state: Arc::new(Mutex::new(State {
                routes: read_routes(),
            })),
        }
    }

    async fn allowed(
        &self,
        conn: &zbus::Connection,
        hdr: &Header<'_>,
    ) -> Result<State, PortalError> {
        let caller = self.callers.identify(conn, hdr).await;
        if !caller.require()?.has_network() {
            return Err(PortalError::NotAllowed(
                "This call is not available inside the sandbox".into(),
            ));
        }
        Ok(self.state.lock().expect("network state lock").clone())
    }
}

#[zbus::interface(name = "org.freedesktop.portal.NetworkMonitor")]
impl NetworkMonitor {
    async fn get_available(
        &self,
        #[zbus(header)] hdr: Header<'_>,
        #[zbus(connection)] conn: &zbus::Connection,
    ) -> Result<bool, PortalError> {
        Ok(self.allowed(conn, &hdr).await?.available())
    }

    async fn get_metered(
        &self,
        #[zbus(header)] hdr: Header<'_>,
        #[zbus(connection)] conn: &zbus::Connection,
    ) -> Result<bool, PortalError> {
        self.allowed(conn, &hdr).await?;
        Ok(false)
    }

    async fn get_connectivity(
        &self,
        #[zbus(header)] hdr: Header<'_>,
        #[zbus(connection)] conn: &zbus::Connection,
    ) -> Result<u32, PortalError> {
        Ok(self.allowed(conn, &hdr).await?.connectivity())
    }

    async fn get_status(
        &self,
        #[zbus(header)] hdr: Header<'_>,
        #[zbus(connection)] conn: &zbus::Connection,
    ) -> Result<std::collections::HashMap<String, OwnedValue>, PortalError> {
        let state = self.allowed(conn, &hdr).await?;
        Ok([
            ("available", Value::from(state.available())),
            ("metered", Value::from(false)),
            ("connectivity", Value::from(state.connectivity())),
        ]
        .into_iter()
        .filter_map(|(k, v)| OwnedValue::try_from(v).ok().map(|v| (k.to_owned(), v)))
        .collect())
    }

    async fn can_reach(
        &self,
        hostname: &str,
        port: u32,
        #[zbus(header)] hdr: Header<'_>,
        #[zbus(connection)] conn: &zbus::Connection,
    ) -> Result<bool, PortalError> {
        let state = self.allowed(conn, &hdr).await?;
        let Ok(port) = u16::try_from(port) else {
            return Ok(false);
        };
        let addrs = match tokio::net::lookup_host((hostname, port)).await {
            Ok(addrs) => addrs,
            Err(e) => {
                tracing::debug!(hostname, "CanReach: resolving: {e}");
                return Ok(false);
            }
        };
        Ok(addrs.into_iter().any(|a| state.reaches(a.ip())))
    }

    /// Lower-case on the wire, as upstream names it.
    #[zbus(signal, name = "changed")]
    async fn changed(emitter: &SignalEmitter<'_>) -> zbus::Result<()>;

    #[zbus(property(emits_changed_signal = "const"), name = "version")]
    fn version(&self) -> u32 {
        3
    }
}

/// An rtnetlink socket subscribed to route and link changes.
pub fn route_socket() -> std::io::Result<AsyncFd<OwnedFd>> {
    // SAFETY: socket(2) with constant arguments; the result is checked
    // before it is used as a descriptor.
    let raw = unsafe {
        libc::socket(
            libc::AF_NETLINK,
            libc::SOCK_RAW | libc::SOCK_CLOEXEC | libc::SOCK_NONBLOCK,
            libc::NETLINK_ROUTE,
        )
    };
    if raw < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: `raw` is a new descriptor that nothing else owns.
    let fd = unsafe { OwnedFd::from_raw_fd(raw) };
    // SAFETY: sockaddr_nl is a plain C struct for which all zeroes is a
    // valid value (family and groups are set below).
    let mut addr: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
    addr.nl_family = libc::AF_NETLINK as libc::sa_family_t;
    addr.nl_groups = (libc::RTMGRP_LINK | libc::RTMGRP_IPV4_ROUTE | libc::RTMGRP_IPV6_ROUTE) as u32;
    // SAFETY: `addr` is a valid sockaddr_nl and the length passed is its
    // size; `fd` is open.
    let rc = unsafe {
        libc::bind(
            fd.as_raw_fd(),
            (&raw const addr).cast::<libc::sockaddr>(),
            std::mem::size_of::<libc::sockaddr_nl>() as libc::socklen_t,
        )
    };
    if rc < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: the OwnedFd keeps the descriptor open for as long as the
    // AsyncFd owns it, and always returns that same descriptor.
    unsafe { AsyncFd::register_with_interest(fd, tokio::io::Interest::READABLE) }
        .map_err(std::io::Error::from)
}

/// Reads every pending notification (their content does not matter: the
/// routes are read again whole).
fn drain(fd: &OwnedFd) -> std::io::Result<()> {
    let mut buf = [0u8; 16 * 1024];
    loop {
        // SAFETY: `buf` is writable for its whole length and `fd` is open.
        let n = unsafe {
            libc::recv(
                fd.as_raw_fd(),
                buf.as_mut_ptr().cast(),
                buf.len(),
                libc::MSG_DONTWAIT,
            )
        };
        if n < 0 {
            let e = std::io::Error::last_os_error();
            return match e.kind() {
                std::io::ErrorKind::WouldBlock => Ok(()),
                // ENOBUFS: notifications were lost; re-reading is the cure.
                _ if e.raw_os_error() == Some(libc::ENOBUFS) => Ok(()),
                std::io::ErrorKind::Interrupted => continue,
                _ => Err(e),
            };
        }
    }
}

/// Re-reads the routes on each notification and emits `changed` when they
/// differ.
pub async fn watch(conn: zbus::Connection, state: Arc<Mutex<State>>, socket: AsyncFd<OwnedFd>) {
    let emitter = match SignalEmitter::new(&conn, crate::desktop::OBJECT_PATH) {
        Ok(e) => e,
        Err(e) => {
            tracing::error!("the portal's signal emitter: {e}");
            return;
        }
    };
    loop {
        let mut guard = match socket.readable().await {
            Ok(g) => g,
            Err(e) => {
                tracing::error!("watching routes: {e}");
                return;
            }
        };
        if let Err(e) = drain(socket.get_ref()) {
            tracing::error!("reading route notifications: {e}");
            return;
        }
        guard.clear_ready();
        let routes = read_routes();
        let changed = {
            let mut state = state.lock().expect("network state lock");
            let changed = state.routes != routes;
            state.routes = routes;
            changed
        };
        if changed {
            tracing::debug!("routes changed");
            if let Err(e) = NetworkMonitor::changed(&emitter).await {
                tracing::warn!("emitting changed: {e}");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proc_route_tables_parse() {
        let v4 = "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT\n\
                  eth0\t00000000\t010200C0\t0003\t0\t0\t0\t00000000\t0\t0\t0\n\
                  eth0\t000200C0\t00000000\t0001\t0\t0\t0\t00FFFFFF\t0\t0\t0\n\
                  eth0\t000300C0\t00000000\t0201\t0\t0\t0\t00FFFFFF\t0\t0\t0\n\
                  lo\t0000007F\t00000000\t0001\t0\t0\t0\t000000FF\t0\t0\t0\n";
        let routes = parse_ipv4(v4);
        assert_eq!(routes.len(), 2, "{routes:?}");
        let state = State { routes };
        assert!(state.available());
        assert_eq!(state.connectivity(), 4);
        let v6 = "fd000000000000000000000000000000 40 00000000000000000000000000000000 00 00000000000000000000000000000000 00000100 00000001 00000000 00000001     eth0\n\
                  00000000000000000000000000000000 00 00000000000000000000000000000000 00 00000000000000000000000000000000 ffffffff 00000001 00000000 00200200       lo\n";
        let routes = parse_ipv6(v6);
        assert_eq!(routes.len(), 1);
        let state = State { routes };
        assert!(!state.available());
        assert_eq!(state.connectivity(), 1);
        assert!(state.reaches("fd00::5".parse().unwrap()));
        assert!(!state.reaches("fd01::5".parse().unwrap()));
        assert!(!state.reaches("192.0.2.1".parse().unwrap()));
    }

    #[test]
    fn prefixes_match_only_their_family() {
        let r = Route {
            dest: "192.0.2.0".parse().unwrap(),
            prefix: 24,
        };
        assert!(r.contains("192.0.2.77".parse().unwrap()));
        assert!(!r.contains("192.0.3.1".parse().unwrap()));
        assert!(!r.contains("::".parse().unwrap()));
        let default = Route {
            dest: "0.0.0.0".parse().unwrap(),
            prefix: 0,
        };
        assert!(default.contains("203.0.113.9".parse().unwrap()));
    }
}
