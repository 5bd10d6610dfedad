//! A minimal D-Bus client over a raw unix socket, for the probe's D-Bus
//! attacks (escape battery P19-P22) and for the harness's stand-in service
//! on the host. Little-endian messages, EXTERNAL authentication, only the
//! argument types the attacks need (s, u, as). Not a library: the point is
//! to put exact bytes on the wire, with nothing in between.

use std::io::{BufRead, Read, Write};
use std::os::unix::net::UnixStream;
use std::time::Duration;

const METHOD_CALL: u8 = 1;
const METHOD_RETURN: u8 = 2;
const ERROR: u8 = 3;
const NO_REPLY_EXPECTED: u8 = 1;

/// One argument of a call.
pub enum Arg<'a> {
    Str(&'a str),
    U32(u32),
    StrArray(&'a [&'a str]),
}

impl Arg<'_> {
    fn sig(&self) -> &'static str {
        match self {
            Arg::Str(_) => "s",
            Arg::U32(_) => "u",
            Arg::StrArray(_) => "as",
        }
    }
}

/// Byte buffer with D-Bus alignment relative to its start (message bodies
/// and the header both start 8-aligned).
struct Buf(Vec<u8>);

impl Buf {
    fn pad(&mut self, n: usize) {
        while !self.0.len().is_multiple_of(n) {
            self.0.push(0);
        }
    }
    fn u32(&mut self, v: u32) {
        self.pad(4);
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    fn str(&mut self, s: &str) {
        self.u32(s.len() as u32);
        self.0.extend_from_slice(s.as_bytes());
        self.0.push(0);
    }
    fn sig(&mut self, s: &str) {
        self.0.push(s.len() as u8);
        self.0.extend_from_slice(s.as_bytes());
        self.0.push(0);
    }
    fn arg(&mut self, a: &Arg<'_>) {
        match a {
            Arg::Str(s) => self.str(s),
            Arg::U32(v) => self.u32(*v),
            Arg::StrArray(items) => {
                self.pad(4);
                let at = self.0.len();
                self.0.extend_from_slice(&[0; 4]);
                // Elements are 4-aligned; the length excludes that padding.
                self.pad(4);
                let start = self.0.len();
                for s in items.iter() {
                    self.str(s);
                }
                let len = (self.0.len() - start) as u32;
                self.0[at..at + 4].copy_from_slice(&len.to_le_bytes());
            }
        }
    }
}

/// A received message, the parts we look at.
#[derive(Debug, Default)]
pub struct Message {
    pub kind: u8,
    pub flags: u8,
    pub serial: u32,
    pub reply_serial: Option<u32>,
    pub error_name: Option<String>,
    pub member: Option<String>,
    pub interface: Option<String>,
    pub path: Option<String>,
    pub sender: Option<String>,
    pub destination: Option<String>,
    pub body: Vec<u8>,
}

impl Message {
    /// The body's first value as a u32 (RequestName's reply) or string.
    pub fn first_u32(&self) -> Option<u32> {
        self.body
            .get(..4)
            .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }
    pub fn first_str(&self) -> Option<String> {
        let n = self.first_u32()? as usize;
        self.body
            .get(4..4 + n)
            .map(|b| String::from_utf8_lossy(b).into_owned())
    }
}

fn parse(bytes: &[u8], fields_len: usize) -> Message {
    let u32_at =
        |p: usize| u32::from_le_bytes([bytes[p], bytes[p + 1], bytes[p + 2], bytes[p + 3]]);
    let mut m = Message {
        kind: bytes[1],
        flags: bytes[2],
        serial: u32_at(8),
        ..Default::default()
    };
    let end = 16 + fields_len;
    let mut p = 16;
    let align = |p: usize, n: usize| p.div_ceil(n) * n;
    while p < end {
        p = align(p, 8);
        if p >= end {
            break;
        }
        let code = bytes[p];
        let sl = bytes[p + 1] as usize;
        let sig = bytes[p + 2..p + 2 + sl].to_vec();
        p += 3 + sl;
        match sig.as_slice() {
            b"s" | b"o" => {
                p = align(p, 4);
                let n = u32_at(p) as usize;
                let s = String::from_utf8_lossy(&bytes[p + 4..p + 4 + n]).into_owned();
                p += 5 + n;
                match code {
                    1 => m.path = Some(s),
                    2 => m.interface = Some(s),
                    3 => m.member = Some(s),
                    4 => m.error_name = Some(s),
                    6 => m.destination = Some(s),
                    7 => m.sender = Some(s),
                    _ => {}
                }
            }
            b"g" => {
                let n = bytes[p] as usize;
                p += 2 + n;
            }
            b"u" => {
                p = align(p, 4);
                if code == 5 {
                    m.reply_serial = Some(u32_at(p));
                }
                p += 4;
            }
            _ => break,
        }
    }
    m.body = bytes[align(end, 8)..].to_vec();
    m
}

/// A connection to a bus.
pub struct Conn {
    sock: UnixStream,
    serial: u32,
    pub unique_name: String,
}

/// The socket path of a `unix:path=` address.
pub fn socket_of(address: &str) -> Option<String> {
    address
        .split(';')
        .next()?
        .strip_prefix("unix:")?
        .split(',')
        .find_map(|kv| kv.strip_prefix("path="))
        .map(str::to_owned)
}

impl Conn {
    /// Connects, authenticates (EXTERNAL) and says Hello.
    pub fn open(address: &str) -> Result<Conn, String> {
        let path = socket_of(address).ok_or_else(|| format!("unsupported address {address}"))?;
        let sock = UnixStream::connect(&path).map_err(|e| format!("connect {path}: {e}"))?;
        let _ = sock.set_read_timeout(Some(Duration::from_secs(5)));
        // SAFETY: getuid has no preconditions.
        let uid = unsafe { libc::getuid() }.to_string();
        let hex: String = uid.bytes().map(|b| format!("{b:02x}")).collect();
        let mut w = &sock;
        w.write_all(format!("\0AUTH EXTERNAL {hex}\r\n").as_bytes())
            .map_err(|e| format!("auth: {e}"))?;
        let mut line = Vec::new();
        let mut one = [0u8; 1];
        while !line.ends_with(b"\r\n") {
            match (&sock).read(&mut one) {
                Ok(1) => line.push(one[0]),
                _ => return Err("auth: connection closed".into()),
            }
        }
        if !line.starts_with(b"OK ") {
            return Err(format!("auth: {}", String::from_utf8_lossy(&line).trim()));
        }
        w.write_all(b"BEGIN\r\n")
            .map_err(|e| format!("auth: {e}"))?;
        let mut c = Conn {
            sock,
            serial: 0,
            unique_name: String::new(),
        };
        let hello = c.call(
            "org.freedesktop.DBus",
            "/org/freedesktop/DBus",
            "org.freedesktop.DBus",
            "Hello",
            &[],
        )?;
        c.unique_name = hello.first_str().unwrap_or_default();
        Ok(c)
    }

    fn send(
        &mut self,
        kind: u8,
        flags: u8,
        fields: &[(u8, &str, &str)],
        reply_serial: Option<u32>,
        args: &[Arg<'_>],
    ) -> Result<u32, String> {
        self.serial += 1;
        let mut body = Buf(Vec::new());
        let mut sig = String::new();
        for a in args {
            body.arg(a);
            sig.push_str(a.sig());
        }
        let mut h = Buf(Vec::new());
        h.0.extend_from_slice(&[b'l', kind, flags, 1]);
        h.0.extend_from_slice(&(body.0.len() as u32).to_le_bytes());
        h.0.extend_from_slice(&self.serial.to_le_bytes());
        h.0.extend_from_slice(&[0; 4]);
        let start = h.0.len();
        for (code, ty, value) in fields {
            h.pad(8);
            h.0.push(*code);
            h.sig(ty);
            if *ty == "g" {
                h.sig(value);
            } else {
                h.str(value);
            }
        }
        if let Some(r) = reply_serial {
            h.pad(8);
            h.0.push(5);
            h.sig("u");
            h.u32(r);
        }
        if !sig.is_empty() {
            h.pad(8);
            h.0.push(8);
            h.sig("g");
            h.sig(&sig);
        }
        let len = (h.0.len() - start) as u32;
        h.0[12..16].copy_from_slice(&len.to_le_bytes());
        h.pad(8);
        h.0.extend_from_slice(&body.0);
        (&self.sock)
            .write_all(&h.0)
            .map_err(|e| format!("send: {e}"))?;
        Ok(self.serial)
    }

    /// Reads one message; Err("TIMEOUT") after the read timeout.
    pub fn read(&mut self) -> Result<Message, String> {
        let mut fixed = [0u8; 16];
        (&self.sock).read_exact(&mut fixed).map_err(|e| {
            if matches!(
                e.kind(),
                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
            ) {
                "TIMEOUT".to_string()
            } else {
                format!("DISCONNECTED ({e})")
            }
        })?;
        if fixed[0] != b'l' {
            return Err("big-endian message (unsupported by the probe)".into());
        }
        let body_len = u32::from_le_bytes([fixed[4], fixed[5], fixed[6], fixed[7]]) as usize;
        let fields_len = u32::from_le_bytes([fixed[12], fixed[13], fixed[14], fixed[15]]) as usize;
        let total = (16 + fields_len).div_ceil(8) * 8 + body_len;
        let mut bytes = fixed.to_vec();
        bytes.resize(total, 0);
        (&self.sock)
            .read_exact(&mut bytes[16..])
            .map_err(|e| format!("DISCONNECTED ({e})"))?;
        Ok(parse(&bytes, fields_len))
    }

    /// A method call and its reply; Err(error name) for an error reply.
    pub fn call(
        &mut self,
        dest: &str,
        path: &str,
        iface: &str,
        member: &str,
        args: &[Arg<'_>],
    ) -> Result<Message, String> {
        let serial = self.send(
            METHOD_CALL,
            0,
            &[
                (1, "o", path),
                (2, "s", iface),
                (3, "s", member),
                (6, "s", dest),
            ],
            None,
            args,
        )?;
        loop {
            let m = self.read()?;
            if m.reply_serial != Some(serial) {
                continue;
            }
            return match m.kind {
                METHOD_RETURN => Ok(m),
                ERROR => Err(m.error_name.unwrap_or_else(|| "ERROR".into())),
                k => Err(format!("unexpected message type {k}")),
            };
        }
    }

    /// `org.freedesktop.DBus.Method(args)` on the bus itself.
    pub fn bus(&mut self, member: &str, args: &[Arg<'_>]) -> Result<Message, String> {
        self.call(
            "org.freedesktop.DBus",
            "/org/freedesktop/DBus",
            "org.freedesktop.DBus",
            member,
            args,
        )
    }

    /// An empty reply to `call`.
    pub fn reply_empty(&mut self, call: &Message) -> Result<(), String> {
        let dest = call.sender.clone().unwrap_or_default();
        self.send(
            METHOD_RETURN,
            NO_REPLY_EXPECTED,
            &[(6, "s", &dest)],
            Some(call.serial),
            &[],
        )
        .map(|_| ())
    }

    /// Reads forever (no timeout), for the service loop.
    pub fn block(&self) {
        let _ = self.sock.set_read_timeout(None);
    }
}

/// Waits until stdin reaches EOF (the harness holds it open while it looks
/// at the host bus).
pub fn wait_stdin_eof() {
    let stdin = std::io::stdin();
    let mut lock = stdin.lock();
    let mut line = String::new();
    while lock.read_line(&mut line).map(|n| n > 0).unwrap_or(false) {
        line.clear();
    }
}

pub fn is_no_reply(m: &Message) -> bool {
    m.flags & NO_REPLY_EXPECTED != 0
}

pub fn is_call(m: &Message) -> bool {
    m.kind == METHOD_CALL
}
