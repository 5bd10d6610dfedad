//! A minimal D-Bus client over a raw unix socket, for the probe's D-Bus
//! attacks (escape battery P19-P22) and for the harness's stand-in service
//! on the host: blocking, one call at a time, EXTERNAL authentication.
//! Messages are framed by porthole-dbus-wire, the same code the proxy
//! parses them with, and put on the socket as built, with nothing in
//! between.

use std::io::{BufRead, Read, Write};
use std::os::unix::net::UnixStream;
use std::time::Duration;

use porthole_dbus_wire::address::{self, UnixTarget};
use porthole_dbus_wire::{
    Builder, FLAG_NO_REPLY_EXPECTED, Header, METHOD_CALL, METHOD_RETURN, auth, message_len,
};

pub use porthole_dbus_wire::Arg;

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
    pub sender: Option<String>,
    pub destination: Option<String>,
    /// The whole message, as received.
    pub bytes: Vec<u8>,
    /// Where its body starts in `bytes`.
    pub body_offset: usize,
}

impl Message {
    fn from_bytes(bytes: Vec<u8>) -> Result<Message, String> {
        let h = Header::parse(&bytes).map_err(|e| format!("malformed message: {e}"))?;
        let own = |s: Option<&str>| s.map(str::to_owned);
        Ok(Message {
            kind: h.msg_type,
            flags: h.flags,
            serial: h.serial,
            reply_serial: h.reply_serial,
            error_name: own(h.error_name),
            member: own(h.member),
            interface: own(h.interface),
            sender: own(h.sender),
            destination: own(h.destination),
            body_offset: h.body_offset,
            bytes,
        })
    }

    /// Whether the message has a body.
    pub fn has_body(&self) -> bool {
        self.bytes.len() > self.body_offset
    }

    /// The body's first four bytes as a u32 (RequestName's reply), in the
    /// message's byte order, whatever the signature says.
    pub fn first_u32(&self) -> Option<u32> {
        let h = Header::parse(&self.bytes).ok()?;
        h.body_reader(&self.bytes).u32().ok()
    }

    /// The body's first value as a string (Hello's reply).
    pub fn first_str(&self) -> Option<String> {
        let h = Header::parse(&self.bytes).ok()?;
        let s = h.body_reader(&self.bytes).string().ok()?;
        Some(s.to_owned())
    }
}

/// A connection to a bus.
pub struct Conn {
    sock: UnixStream,
    serial: u32,
    pub unique_name: String,
}

fn connect(address: &str) -> Result<UnixStream, String> {
    let (_, target) = address::first_unix_target(address).map_err(|e| e.to_string())?;
    match target {
        UnixTarget::Path(p) => {
            UnixStream::connect(&p).map_err(|e| format!("connect {}: {e}", p.display()))
        }
        UnixTarget::Abstract(name) => {
            use std::os::linux::net::SocketAddrExt;
            let sa = std::os::unix::net::SocketAddr::from_abstract_name(&name)
                .map_err(|e| format!("connect {address}: {e}"))?;
            UnixStream::connect_addr(&sa).map_err(|e| format!("connect {address}: {e}"))
        }
    }
}

impl Conn {
    /// Connects, authenticates (EXTERNAL) and says Hello.
    pub fn open(address: &str) -> Result<Conn, String> {
        let sock = connect(address)?;
        let _ = sock.set_read_timeout(Some(Duration::from_secs(5)));
        // SAFETY: getuid has no preconditions.
        let uid = unsafe { libc::getuid() };
        auth::external(&mut &sock, &mut &sock, uid, false).map_err(|e| format!("auth: {e}"))?;
        (&sock)
            .write_all(auth::BEGIN)
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

    /// Sends `msg` with the next serial; returns the serial.
    fn send(&mut self, mut msg: Builder<'_>) -> Result<u32, String> {
        self.serial += 1;
        msg.serial = self.serial;
        (&self.sock)
            .write_all(&msg.build())
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
        let total = message_len(&fixed).map_err(|e| format!("malformed message: {e}"))?;
        let mut bytes = fixed.to_vec();
        bytes.resize(total, 0);
        (&self.sock)
            .read_exact(&mut bytes[16..])
            .map_err(|e| format!("DISCONNECTED ({e})"))?;
        Message::from_bytes(bytes)
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
        let serial = self.send(Builder {
            msg_type: METHOD_CALL,
            path: Some(path),
            interface: Some(iface),
            member: Some(member),
            destination: Some(dest),
            args,
            ..Default::default()
        })?;
        loop {
            let m = self.read()?;
            if m.reply_serial != Some(serial) {
                continue;
            }
            return match m.kind {
                METHOD_RETURN => Ok(m),
                porthole_dbus_wire::ERROR => Err(m.error_name.unwrap_or_else(|| "ERROR".into())),
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
        self.send(Builder {
            msg_type: METHOD_RETURN,
            flags: FLAG_NO_REPLY_EXPECTED,
            destination: Some(call.sender.as_deref().unwrap_or_default()),
            reply_serial: Some(call.serial),
            ..Default::default()
        })
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
    m.flags & FLAG_NO_REPLY_EXPECTED != 0
}

pub fn is_call(m: &Message) -> bool {
    m.kind == METHOD_CALL
}
