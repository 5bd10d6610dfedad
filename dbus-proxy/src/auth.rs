//! The SASL handshake, relayed line by line as xdg-dbus-proxy does: the
//! client's lines go to the bus unchanged (the proxy's own connection
//! carries the same uid, so EXTERNAL succeeds), each command's one reply
//! comes back, and BEGIN ends it. Clients that pipeline the whole exchange
//! and their first message in one write (sd-bus does) are handled: what
//! follows BEGIN is already message data.

use thiserror::Error;

/// Upstream's limit on the whole handshake.
pub const MAX_AUTH_BYTES: usize = 16 * 1024;

#[derive(Debug, Error, PartialEq, Eq)]
pub enum AuthError {
    #[error("invalid AUTH line")]
    InvalidLine,
    #[error("handshake longer than {MAX_AUTH_BYTES} bytes")]
    TooLong,
    #[error("first byte must be NUL")]
    FirstByte,
}

/// A line is ASCII without control characters and starts with an upper
/// case command (upstream `auth_line_is_valid`).
pub fn line_is_valid(line: &[u8]) -> bool {
    matches!(line.first(), Some(b'A'..=b'Z')) && line.iter().all(|&b| (b' '..0x7f).contains(&b))
}

/// Client-side state: splits what the client sent into lines to relay.
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
    pub fn feed(&mut self, data: &[u8]) -> Result<Relay, AuthError> {
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
                Some(_) => return Err(AuthError::FirstByte),
            }
        }
        while let Some(i) = self.buf[pos..].windows(2).position(|w| w == b"\r\n") {
            let line = &self.buf[pos..pos + i];
            if !line_is_valid(line) {
                return Err(AuthError::InvalidLine);
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
            return Err(AuthError::TooLong);
        }
        Ok(relay)
    }
}

/// Bus-side state: counts complete reply lines.
#[derive(Debug, Default)]
pub struct BusAuth {
    buf: Vec<u8>,
    total: usize,
}

impl BusAuth {
    /// Feeds bytes read from the bus; returns (complete lines to relay to
    /// the client, how many lines they are). Bytes after the last complete
    /// line stay buffered.
    pub fn feed(&mut self, data: &[u8], max_lines: usize) -> Result<(Vec<u8>, usize), AuthError> {
        self.total += data.len();
        if self.total > MAX_AUTH_BYTES * 4 {
            return Err(AuthError::TooLong);
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
            Err(AuthError::InvalidLine)
        );
        assert_eq!(
            ClientAuth::default().feed(b"\0AUTH \x01\r\n"),
            Err(AuthError::InvalidLine)
        );
        assert_eq!(ClientAuth::default().feed(b"A"), Err(AuthError::FirstByte));
        let mut a = ClientAuth::default();
        assert_eq!(
            a.feed(
                &[b'\0'; 1]
                    .iter()
                    .chain(&[b'A'; 20000])
                    .copied()
                    .collect::<Vec<_>>()
            ),
            Err(AuthError::TooLong)
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
}
