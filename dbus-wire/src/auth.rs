//! The SASL handshake that opens every D-Bus connection, both ways we
//! take part in it:
//!
//! - [`external`]: a client authenticating with EXTERNAL (the server
//!   checks our uid from the socket's credentials), optionally asking for
//!   fd passing, before BEGIN; the launcher's systemd call and the probe.
//! - [`ClientAuth`] and [`BusAuth`]: the proxy's relay, line by line as
//!   xdg-dbus-proxy does: the client's lines go to the bus unchanged (the
//!   proxy's own connection carries the same uid, so EXTERNAL succeeds),
//!   each command's one reply comes back, and BEGIN ends it. Clients that
//!   pipeline the whole exchange and their first message in one write
//!   (sd-bus does) are handled: what follows BEGIN is already message data.

use std::io::{Read, Write};

use thiserror::Error;

/// Upstream's limit on the whole handshake.
pub const MAX_AUTH_BYTES: usize = 16 * 1024;

/// The line that ends the handshake; message data follows it.
pub const BEGIN: &[u8] = b"BEGIN\r\n";

/// Why the proxy's relay gave up on a client's handshake.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum RelayError {
    #[error("invalid AUTH line")]
    InvalidLine,
    #[error("handshake longer than {MAX_AUTH_BYTES} bytes")]
    TooLong,
    #[error("first byte must be NUL")]
    FirstByte,
}

/// Why our own EXTERNAL authentication failed.
#[derive(Debug, Error)]
pub enum AuthError {
    #[error("authentication i/o: {0}")]
    Io(#[from] std::io::Error),
    #[error("the server closed the connection during authentication")]
    Eof,
    #[error("the server refused EXTERNAL authentication: {0:?}")]
    Rejected(String),
    #[error("the server answered {0:?}, not a SASL reply")]
    Unexpected(String),
    #[error("the server's SASL line is longer than {MAX_LINE} bytes")]
    LineTooLong,
}

/// The longest server line we read: `OK <32 hex digits>` and the
/// mechanism lists of REJECTED are far shorter.
const MAX_LINE: usize = 512;

/// What the server agreed to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Authenticated {
    /// The server's GUID from its `OK` line.
    pub guid: String,
    /// Whether the server agreed to pass fds (`AGREE_UNIX_FD`).
    pub unix_fd: bool,
}

/// The first bytes a client sends: the NUL byte and `AUTH EXTERNAL` with
/// `uid` as the hex of its decimal digits (what libdbus and sd-bus send).
pub fn external_request(uid: u32) -> Vec<u8> {
    let mut out = b"\0AUTH EXTERNAL ".to_vec();
    for b in uid.to_string().bytes() {
        out.extend_from_slice(format!("{b:02x}").as_bytes());
    }
    out.extend_from_slice(b"\r\n");
    out
}

/// Authenticates as `uid` with EXTERNAL over `r`/`w` (both ends of one
/// socket), asking for fd passing when `negotiate_unix_fd`. Stops before
/// BEGIN so the caller can send [`BEGIN`] together with its first message.
/// Reads one byte at a time from `r` unless it buffers, so no message byte
/// is taken from a bare socket.
pub fn external(
    r: &mut impl Read,
    w: &mut impl Write,
    uid: u32,
    negotiate_unix_fd: bool,
) -> Result<Authenticated, AuthError> {
    w.write_all(&external_request(uid))?;
    let line = read_line(r)?;
    let guid = match line.strip_prefix("OK ") {
        Some(g) if !g.is_empty() && g.bytes().all(|b| b.is_ascii_hexdigit()) => g.to_owned(),
        _ if line.starts_with("REJECTED") => return Err(AuthError::Rejected(line)),
        _ => return Err(AuthError::Unexpected(line)),
    };
    let mut unix_fd = false;
    if negotiate_unix_fd {
        w.write_all(b"NEGOTIATE_UNIX_FD\r\n")?;
        let line = read_line(r)?;
        unix_fd = match line.as_str() {
            "AGREE_UNIX_FD" => true,
            l if l.starts_with("ERROR") => false,
            _ => return Err(AuthError::Unexpected(line)),
        };
    }
    Ok(Authenticated { guid, unix_fd })
}

/// One server line without its CRLF.
fn read_line(r: &mut impl Read) -> Result<String, AuthError> {
    let mut line = Vec::new();
    let mut one = [0u8; 1];
    while !line.ends_with(b"\r\n") {
        if line.len() > MAX_LINE {
            return Err(AuthError::LineTooLong);
        }
        match r.read(&mut one) {
            Ok(0) => return Err(AuthError::Eof),
            Ok(_) => line.push(one[0]),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e.into()),
        }
    }
    line.truncate(line.len() - 2);
    if !line_is_valid(&line) {
        return Err(AuthError::Unexpected(
            String::from_utf8_lossy(&line).into_owned(),
        ));
    }
    // Valid lines are printable ASCII.
    Ok(String::from_utf8_lossy(&line).into_owned())
}

/// A line is ASCII without control characters and starts with an upper
/// case command (upstream `auth_line_is_valid`); both directions.
pub fn line_is_valid(line: &[u8]) -> bool {
    matches!(line.first(), Some(b'A'..=b'Z')) && line.iter().all(|&b| (b' '..0x7f).contains(&b))
}

/// The relay's client-side state: splits what the client sent into lines
/// to relay.
#[derive(Debug, Default)]
pub struct ClientAuth {
    buf: Vec<u8>,
    got_nul: bool,
    total: usize,
}

/// The lines that can be relayed now.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Relay {
    /// Bytes to send to the bus (the initial NUL and whole lines).
    pub to_bus: Vec<u8>,
    /// How many bus replies these lines ask for.
    pub replies: usize,
    /// BEGIN was seen: `rest` is the start of the message stream.
    pub begin: bool,
    pub rest: Vec<u8>,
}

impl ClientAuth {
    /// Feeds bytes read from the client.
    pub fn feed(&mut self, data: &[u8]) -> Result<Relay, RelayError> {
        self.total += data.len();
        self.buf.extend_from_slice(data);
        let mut relay = Relay::default();
        let mut pos = 0;
        if !self.got_nul {
            match self.buf.first() {
                None => return Ok(relay),
                Some(0) => {
                    self.got_nul = true;
                    relay.to_bus.push(0);
                    pos = 1;
                }
                Some(_) => return Err(RelayError::FirstByte),
            }
        }
        while let Some(i) = self.buf[pos..].windows(2).position(|w| w == b"\r\n") {
            let line = &self.buf[pos..pos + i];
            if !line_is_valid(line) {
                return Err(RelayError::InvalidLine);
            }
            relay.to_bus.extend_from_slice(&self.buf[pos..pos + i + 2]);
            pos += i + 2;
            if line == b"BEGIN" || line.starts_with(b"BEGIN ") {
                relay.begin = true;
                relay.rest = self.buf[pos..].to_vec();
                self.buf.clear();
                return Ok(relay);
            }
            relay.replies += 1;
        }
        self.buf.drain(..pos);
        if self.total - relay.rest.len() > MAX_AUTH_BYTES {
            return Err(RelayError::TooLong);
        }
        Ok(relay)
    }
}

/// The relay's bus-side state: counts complete reply lines.
#[derive(Debug, Default)]
pub struct BusAuth {
    buf: Vec<u8>,
    total: usize,
}

impl BusAuth {
    /// Feeds bytes read from the bus; returns (complete lines to relay to
    /// the client, how many lines they are). Bytes after the last complete
    /// line stay buffered.
    pub fn feed(&mut self, data: &[u8], max_lines: usize) -> Result<(Vec<u8>, usize), RelayError> {
        self.total += data.len();
        if self.total > MAX_AUTH_BYTES * 4 {
            return Err(RelayError::TooLong);
        }
        self.buf.extend_from_slice(data);
        let mut pos = 0;
        let mut lines = 0;
        while lines < max_lines {
            match self.buf[pos..].windows(2).position(|w| w == b"\r\n") {
                Some(i) => {
                    pos += i + 2;
                    lines += 1;
                }
                None => break,
            }
        }
        let out = self.buf[..pos].to_vec();
        self.buf.drain(..pos);
        Ok((out, lines))
    }

    /// Whatever the bus sent beyond the handshake.
    pub fn into_rest(self) -> Vec<u8> {
        self.buf
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pipelined_sd_bus_style() {
        let mut a = ClientAuth::default();
        let r = a
            .feed(b"\0AUTH EXTERNAL 30\r\nNEGOTIATE_UNIX_FD\r\nBEGIN\r\nl\x01\x00\x01")
            .unwrap();
        assert_eq!(r.replies, 2);
        assert!(r.begin);
        assert_eq!(r.rest, b"l\x01\x00\x01");
        assert_eq!(
            r.to_bus,
            b"\0AUTH EXTERNAL 30\r\nNEGOTIATE_UNIX_FD\r\nBEGIN\r\n"
        );
    }

    #[test]
    fn split_lines() {
        let mut a = ClientAuth::default();
        let r = a.feed(b"\0AUTH EXT").unwrap();
        assert_eq!(r.to_bus, b"\0");
        assert_eq!(r.replies, 0);
        let r = a.feed(b"ERNAL\r").unwrap();
        assert!(r.to_bus.is_empty());
        let r = a.feed(b"\nBEGIN\r\n").unwrap();
        assert_eq!(r.to_bus, b"AUTH EXTERNAL\r\nBEGIN\r\n");
        assert_eq!(r.replies, 1);
        assert!(r.begin);
    }

    #[test]
    fn rejects_garbage() {
        assert_eq!(
            ClientAuth::default().feed(b"\0auth\r\n"),
            Err(RelayError::InvalidLine)
        );
        assert_eq!(
            ClientAuth::default().feed(b"\0AUTH \x01\r\n"),
            Err(RelayError::InvalidLine)
        );
        assert_eq!(ClientAuth::default().feed(b"A"), Err(RelayError::FirstByte));
        let mut a = ClientAuth::default();
        assert_eq!(
            a.feed(
                &[b'\0'; 1]
                    .iter()
                    .chain(&[b'A'; 20000])
                    .copied()
                    .collect::<Vec<_>>()
            ),
            Err(RelayError::TooLong)
        );
    }

    #[test]
    fn bus_lines() {
        let mut b = BusAuth::default();
        assert_eq!(
            b.feed(b"OK 123\r\nAGR", 2).unwrap(),
            (b"OK 123\r\n".to_vec(), 1)
        );
        assert_eq!(b.feed(b"EE_UNIX_FD\r\n", 1).unwrap().1, 1);
        assert!(b.into_rest().is_empty());
    }

    /// A scripted server: what it answers, and what the client wrote.
    fn run_client(server: &[u8], fd: bool) -> (Result<Authenticated, AuthError>, Vec<u8>) {
        let mut r = server;
        let mut w = Vec::new();
        let out = external(&mut r, &mut w, 1000, fd);
        (out, w)
    }

    #[test]
    fn external_client_ok_and_fd() {
        let (r, w) = run_client(b"OK 0123abcd\r\nAGREE_UNIX_FD\r\nl\x01", true);
        assert_eq!(
            r.unwrap(),
            Authenticated {
                guid: "0123abcd".into(),
                unix_fd: true
            }
        );
        assert_eq!(w, b"\0AUTH EXTERNAL 31303030\r\nNEGOTIATE_UNIX_FD\r\n");
        let (r, w) = run_client(b"OK 0123abcd\r\n", false);
        assert!(!r.unwrap().unix_fd);
        assert_eq!(w, external_request(1000));
        let (r, _) = run_client(b"OK 0123abcd\r\nERROR no fds here\r\n", true);
        assert!(!r.unwrap().unix_fd);
        assert_eq!(external_request(0), b"\0AUTH EXTERNAL 30\r\n");
    }

    #[test]
    fn external_client_failures() {
        assert!(matches!(
            run_client(b"REJECTED DBUS_COOKIE_SHA1\r\n", false).0,
            Err(AuthError::Rejected(l)) if l == "REJECTED DBUS_COOKIE_SHA1"
        ));
        assert!(matches!(
            run_client(b"OK \r\n", false).0,
            Err(AuthError::Unexpected(_))
        ));
        assert!(matches!(
            run_client(b"OK 12zz\r\n", false).0,
            Err(AuthError::Unexpected(_))
        ));
        assert!(matches!(run_client(b"OK 12", false).0, Err(AuthError::Eof)));
        assert!(matches!(
            run_client(b"DATA\x01\r\n", false).0,
            Err(AuthError::Unexpected(_))
        ));
        assert!(matches!(
            run_client(&[b'O'; 2000], false).0,
            Err(AuthError::LineTooLong)
        ));
        assert!(matches!(
            run_client(b"OK 12\r\nBEGIN\r\n", true).0,
            Err(AuthError::Unexpected(_))
        ));
    }
}
