//! D-Bus message framing, hand-written.
//!
//! This is the proxy's hot path: every message in both directions passes
//! through [`message_len`] and [`Header::parse`]. We read only the fixed
//! 16-byte prefix and the header-field array, borrowing every string from the
//! receive buffer, and never deserialize a body unless the filter must read or
//! rewrite it (a handful of org.freedesktop.DBus calls). A full
//! deserialization (zbus/zvariant `Message`) would allocate and validate the
//! body of every 1 MiB payload just to forward it unchanged.
//!
//! Both byte orders are accepted; messages we build are little-endian.

use thiserror::Error;

/// The protocol's limit on a whole message (header + body), 128 MiB.
pub const MAX_MESSAGE_LEN: usize = 128 * 1024 * 1024;
/// The protocol's limit on an array (the header-field array included), 64 MiB.
const MAX_ARRAY_LEN: u32 = 64 * 1024 * 1024;
/// Nesting limit for the containers we skip in unknown header fields.
const MAX_DEPTH: u32 = 64;

pub const METHOD_CALL: u8 = 1;
pub const METHOD_RETURN: u8 = 2;
pub const ERROR: u8 = 3;
pub const SIGNAL: u8 = 4;

pub const FLAG_NO_REPLY_EXPECTED: u8 = 0x1;
pub const FLAG_NO_AUTO_START: u8 = 0x2;

const FIELD_PATH: u8 = 1;
const FIELD_INTERFACE: u8 = 2;
const FIELD_MEMBER: u8 = 3;
const FIELD_ERROR_NAME: u8 = 4;
const FIELD_REPLY_SERIAL: u8 = 5;
const FIELD_DESTINATION: u8 = 6;
const FIELD_SENDER: u8 = 7;
const FIELD_SIGNATURE: u8 = 8;
const FIELD_UNIX_FDS: u8 = 9;

/// Why a message could not be framed or parsed. Any of these closes the
/// connection it came from.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum WireError {
    #[error("invalid endianness marker {0:#x}")]
    Endianness(u8),
    #[error("unsupported protocol version {0}")]
    Version(u8),
    #[error("message of {0} bytes exceeds the 128 MiB limit")]
    TooLong(u64),
    #[error("message truncated")]
    Truncated,
    #[error("serial 0")]
    ZeroSerial,
    #[error("invalid message type {0}")]
    Type(u8),
    #[error("malformed header field {0}")]
    Field(u8),
    #[error("header field {0} appears twice")]
    DuplicateField(u8),
    #[error("required header field {0} missing")]
    MissingField(&'static str),
    #[error("malformed value in header or body")]
    Value,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Endian {
    Little,
    Big,
}

impl Endian {
    fn from_marker(b: u8) -> Result<Self, WireError> {
        match b {
            b'l' => Ok(Endian::Little),
            b'B' => Ok(Endian::Big),
            other => Err(WireError::Endianness(other)),
        }
    }
    fn u32(self, b: &[u8]) -> u32 {
        let a = [b[0], b[1], b[2], b[3]];
        match self {
            Endian::Little => u32::from_le_bytes(a),
            Endian::Big => u32::from_be_bytes(a),
        }
    }
    fn put_u32(self, v: u32) -> [u8; 4] {
        match self {
            Endian::Little => v.to_le_bytes(),
            Endian::Big => v.to_be_bytes(),
        }
    }
}

fn align(n: usize, a: usize) -> usize {
    (n + a - 1) & !(a - 1)
}

/// Total length of the message whose first 16 bytes are `prefix`.
pub fn message_len(prefix: &[u8]) -> Result<usize, WireError> {
    if prefix.len() < 16 {
        return Err(WireError::Truncated);
    }
    let e = Endian::from_marker(prefix[0])?;
    if prefix[3] != 1 {
        return Err(WireError::Version(prefix[3]));
    }
    let body = e.u32(&prefix[4..8]) as u64;
    let fields = e.u32(&prefix[12..16]);
    if fields > MAX_ARRAY_LEN {
        return Err(WireError::TooLong(fields as u64));
    }
    let total = align(16 + fields as usize, 8) as u64 + body;
    if total > MAX_MESSAGE_LEN as u64 {
        return Err(WireError::TooLong(total));
    }
    Ok(total as usize)
}

/// Offset of the body in the message whose first 16 bytes are `prefix`.
pub fn body_offset(prefix: &[u8]) -> Result<usize, WireError> {
    message_len(prefix)?;
    let e = Endian::from_marker(prefix[0])?;
    Ok(align(16 + e.u32(&prefix[12..16]) as usize, 8))
}

/// The routing-relevant part of a message, borrowed from its bytes.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Header<'a> {
    pub msg_type: u8,
    pub flags: u8,
    pub serial: u32,
    pub path: Option<&'a str>,
    pub interface: Option<&'a str>,
    pub member: Option<&'a str>,
    pub error_name: Option<&'a str>,
    pub reply_serial: Option<u32>,
    pub destination: Option<&'a str>,
    pub sender: Option<&'a str>,
    pub signature: &'a str,
    pub unix_fds: u32,
    /// Offset of the body in the message.
    pub body_offset: usize,
    big_endian: bool,
}

/// A cursor over marshalled data; offsets are relative to the message start,
/// which is where D-Bus alignment is measured from.
struct Cursor<'a> {
    buf: &'a [u8],
    pos: usize,
    end: usize,
    e: Endian,
}

impl<'a> Cursor<'a> {
    fn align(&mut self, a: usize) -> Result<(), WireError> {
        let p = align(self.pos, a);
        if p > self.end {
            return Err(WireError::Value);
        }
        // Padding must be zero (the daemon rejects it otherwise too).
        if self.buf[self.pos..p].iter().any(|&b| b != 0) {
            return Err(WireError::Value);
        }
        self.pos = p;
        Ok(())
    }
    fn take(&mut self, n: usize) -> Result<&'a [u8], WireError> {
        if self.end - self.pos < n {
            return Err(WireError::Value);
        }
        let s = &self.buf[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }
    fn u8(&mut self) -> Result<u8, WireError> {
        Ok(self.take(1)?[0])
    }
    fn u32(&mut self) -> Result<u32, WireError> {
        self.align(4)?;
        let b = self.take(4)?;
        Ok(self.e.u32(b))
    }
    fn str_of_len(&mut self, len: usize) -> Result<&'a str, WireError> {
        let b = self.take(len)?;
        if self.u8()? != 0 {
            return Err(WireError::Value);
        }
        if b.contains(&0) {
            return Err(WireError::Value);
        }
        std::str::from_utf8(b).map_err(|_| WireError::Value)
    }
    fn string(&mut self) -> Result<&'a str, WireError> {
        let len = self.u32()? as usize;
        self.str_of_len(len)
    }
    fn signature(&mut self) -> Result<&'a str, WireError> {
        let len = self.u8()? as usize;
        self.str_of_len(len)
    }

    /// Skips one value of the single complete type at the start of `sig`;
    /// returns the rest of the signature.
    fn skip_value<'s>(&mut self, sig: &'s [u8], depth: u32) -> Result<&'s [u8], WireError> {
        if depth > MAX_DEPTH {
            return Err(WireError::Value);
        }
        let (&c, rest) = sig.split_first().ok_or(WireError::Value)?;
        match c {
            b'y' => {
                self.take(1)?;
            }
            b'n' | b'q' => {
                self.align(2)?;
                self.take(2)?;
            }
            b'b' | b'i' | b'u' | b'h' => {
                self.u32()?;
            }
            b'x' | b't' | b'd' => {
                self.align(8)?;
                self.take(8)?;
            }
            b's' | b'o' => {
                self.string()?;
            }
            b'g' => {
                self.signature()?;
            }
            b'v' => {
                let inner = self.signature()?;
                let left = self.skip_value(inner.as_bytes(), depth + 1)?;
                if !left.is_empty() {
                    return Err(WireError::Value);
                }
            }
            b'a' => {
                let len = self.u32()?;
                if len > MAX_ARRAY_LEN {
                    return Err(WireError::Value);
                }
                let elem_align = type_alignment(rest)?;
                self.align(elem_align)?;
                let stop = self.pos.checked_add(len as usize).ok_or(WireError::Value)?;
                if stop > self.end {
                    return Err(WireError::Value);
                }
                let elem_end = complete_type_end(rest, depth + 1)?;
                let elem = &rest[..elem_end];
                while self.pos < stop {
                    let saved_end = self.end;
                    self.end = stop;
                    let r = self.skip_value(elem, depth + 1);
                    self.end = saved_end;
                    r?;
                }
                return Ok(&rest[elem_end..]);
            }
            b'(' | b'{' => {
                self.align(8)?;
                let close = if c == b'(' { b')' } else { b'}' };
                let mut inner = rest;
                loop {
                    match inner.first() {
                        Some(&x) if x == close => return Ok(&inner[1..]),
                        Some(_) => inner = self.skip_value(inner, depth + 1)?,
                        None => return Err(WireError::Value),
                    }
                }
            }
            _ => return Err(WireError::Value),
        }
        Ok(rest)
    }
}

fn type_alignment(sig: &[u8]) -> Result<usize, WireError> {
    Ok(match sig.first().ok_or(WireError::Value)? {
        b'y' | b'g' | b'v' => 1,
        b'n' | b'q' => 2,
        b'b' | b'i' | b'u' | b'h' | b's' | b'o' | b'a' => 4,
        b'x' | b't' | b'd' | b'(' | b'{' => 8,
        _ => return Err(WireError::Value),
    })
}

/// Length of the single complete type at the start of `sig`.
fn complete_type_end(sig: &[u8], depth: u32) -> Result<usize, WireError> {
    if depth > MAX_DEPTH {
        return Err(WireError::Value);
    }
    match sig.first().ok_or(WireError::Value)? {
        b'a' => Ok(1 + complete_type_end(&sig[1..], depth + 1)?),
        b'(' | b'{' => {
            let close = if sig[0] == b'(' { b')' } else { b'}' };
            let mut i = 1;
            while i < sig.len() && sig[i] != close {
                i += complete_type_end(&sig[i..], depth + 1)?;
            }
            if i >= sig.len() {
                return Err(WireError::Value);
            }
            Ok(i + 1)
        }
        _ => Ok(1),
    }
}

impl<'a> Header<'a> {
    /// Parses the header of one complete message (`msg.len()` must equal
    /// [`message_len`] of its prefix).
    pub fn parse(msg: &'a [u8]) -> Result<Header<'a>, WireError> {
        let total = message_len(msg)?;
        if msg.len() != total {
            return Err(WireError::Truncated);
        }
        Self::parse_with_total(msg, total)
    }

    /// Parses the header from the first bytes of a message, at least up to
    /// [`body_offset`]: enough to decide about a large message before its
    /// body has arrived. Body accessors then see no body.
    pub fn parse_prefix(buf: &'a [u8]) -> Result<Header<'a>, WireError> {
        let total = message_len(buf)?;
        let end = body_offset(buf)?.min(buf.len());
        Self::parse_with_total(&buf[..end], total)
    }

    fn parse_with_total(msg: &'a [u8], total: usize) -> Result<Header<'a>, WireError> {
        let e = Endian::from_marker(msg[0])?;
        let msg_type = msg[1];
        if !(METHOD_CALL..=SIGNAL).contains(&msg_type) {
            return Err(WireError::Type(msg_type));
        }
        let serial = e.u32(&msg[8..12]);
        if serial == 0 {
            return Err(WireError::ZeroSerial);
        }
        let fields_len = e.u32(&msg[12..16]) as usize;
        let fields_end = 16 + fields_len;
        let body_offset = align(fields_end, 8);
        if body_offset > msg.len() {
            return Err(WireError::Truncated);
        }
        let mut h = Header {
            msg_type,
            flags: msg[2],
            serial,
            body_offset,
            big_endian: e == Endian::Big,
            ..Header::default()
        };
        let mut seen = 0u32;
        let mut c = Cursor {
            buf: msg,
            pos: 16,
            end: fields_end,
            e,
        };
        while c.pos < fields_end {
            c.align(8)?;
            let code = c.u8()?;
            let sig = c.signature().map_err(|_| WireError::Field(code))?;
            if (1..=9).contains(&code) {
                if seen & (1 << code) != 0 {
                    return Err(WireError::DuplicateField(code));
                }
                seen |= 1 << code;
            }
            let want = match code {
                FIELD_PATH => "o",
                FIELD_INTERFACE | FIELD_MEMBER | FIELD_ERROR_NAME | FIELD_DESTINATION
                | FIELD_SENDER => "s",
                FIELD_REPLY_SERIAL | FIELD_UNIX_FDS => "u",
                FIELD_SIGNATURE => "g",
                0 => return Err(WireError::Field(0)),
                _ => {
                    // Unknown fields must be accepted and ignored (sd-bus
                    // and newer buses send some).
                    let left = c
                        .skip_value(sig.as_bytes(), 0)
                        .map_err(|_| WireError::Field(code))?;
                    if !left.is_empty() {
                        return Err(WireError::Field(code));
                    }
                    continue;
                }
            };
            if sig != want {
                return Err(WireError::Field(code));
            }
            let bad = |_| WireError::Field(code);
            match code {
                FIELD_PATH => h.path = Some(c.string().map_err(bad)?),
                FIELD_INTERFACE => h.interface = Some(c.string().map_err(bad)?),
                FIELD_MEMBER => h.member = Some(c.string().map_err(bad)?),
                FIELD_ERROR_NAME => h.error_name = Some(c.string().map_err(bad)?),
                FIELD_DESTINATION => h.destination = Some(c.string().map_err(bad)?),
                FIELD_SENDER => h.sender = Some(c.string().map_err(bad)?),
                FIELD_REPLY_SERIAL => h.reply_serial = Some(c.u32().map_err(bad)?),
                FIELD_UNIX_FDS => h.unix_fds = c.u32().map_err(bad)?,
                FIELD_SIGNATURE => h.signature = c.signature().map_err(bad)?,
                _ => unreachable!("filtered above"),
            }
        }
        if c.pos != fields_end {
            return Err(WireError::Value);
        }
        // Header padding must be zero.
        if msg[fields_end..body_offset].iter().any(|&b| b != 0) {
            return Err(WireError::Value);
        }
        match msg_type {
            METHOD_CALL => {
                h.path.ok_or(WireError::MissingField("PATH"))?;
                h.member.ok_or(WireError::MissingField("MEMBER"))?;
            }
            SIGNAL => {
                h.path.ok_or(WireError::MissingField("PATH"))?;
                h.interface.ok_or(WireError::MissingField("INTERFACE"))?;
                h.member.ok_or(WireError::MissingField("MEMBER"))?;
            }
            ERROR => {
                h.error_name.ok_or(WireError::MissingField("ERROR_NAME"))?;
                h.reply_serial
                    .ok_or(WireError::MissingField("REPLY_SERIAL"))?;
            }
            _ => {
                h.reply_serial
                    .ok_or(WireError::MissingField("REPLY_SERIAL"))?;
            }
        }
        if h.reply_serial == Some(0) {
            return Err(WireError::ZeroSerial);
        }
        if h.signature.is_empty() && body_offset != total {
            return Err(WireError::Value);
        }
        Ok(h)
    }

    fn endian(&self) -> Endian {
        if self.big_endian {
            Endian::Big
        } else {
            Endian::Little
        }
    }

    /// Whether the sender waits for a reply.
    pub fn expects_reply(&self) -> bool {
        self.msg_type == METHOD_CALL && self.flags & FLAG_NO_REPLY_EXPECTED == 0
    }

    /// The first body argument when it is a string (`s`), as upstream's
    /// `get_arg0_string`.
    pub fn arg0_str(&self, msg: &'a [u8]) -> Option<&'a str> {
        if !self.signature.starts_with('s') {
            return None;
        }
        let mut c = Cursor {
            buf: msg,
            pos: self.body_offset,
            end: msg.len(),
            e: self.endian(),
        };
        c.string().ok()
    }

    /// The first three body arguments when the body starts with `sss`.
    pub fn args_sss(&self, msg: &'a [u8]) -> Option<[&'a str; 3]> {
        if !self.signature.starts_with("sss") {
            return None;
        }
        let mut c = Cursor {
            buf: msg,
            pos: self.body_offset,
            end: msg.len(),
            e: self.endian(),
        };
        Some([c.string().ok()?, c.string().ok()?, c.string().ok()?])
    }

    /// The strings of a body that is exactly one `as`.
    pub fn body_strv(&self, msg: &'a [u8]) -> Option<Vec<&'a str>> {
        if self.signature != "as" {
            return None;
        }
        let mut c = Cursor {
            buf: msg,
            pos: self.body_offset,
            end: msg.len(),
            e: self.endian(),
        };
        let len = c.u32().ok()? as usize;
        let stop = c.pos.checked_add(len)?;
        if stop != msg.len() {
            return None;
        }
        let mut out = Vec::new();
        while c.pos < stop {
            out.push(c.string().ok()?);
        }
        (c.pos == stop).then_some(out)
    }
}

/// Replaces the body of `msg` (whose body is one `as`) by `names`, keeping
/// every header byte and the byte order.
pub fn rewrite_strv_body(msg: &[u8], header: &Header<'_>, names: &[&str]) -> Vec<u8> {
    let e = header.endian();
    let mut out = Vec::with_capacity(msg.len());
    out.extend_from_slice(&msg[..header.body_offset]);
    let start = out.len();
    out.extend_from_slice(&[0; 4]);
    for n in names {
        let p = align(out.len(), 4);
        out.resize(p, 0);
        out.extend_from_slice(&e.put_u32(n.len() as u32));
        out.extend_from_slice(n.as_bytes());
        out.push(0);
    }
    let arr_len = (out.len() - start - 4) as u32;
    out[start..start + 4].copy_from_slice(&e.put_u32(arr_len));
    let body_len = (out.len() - header.body_offset) as u32;
    out[4..8].copy_from_slice(&e.put_u32(body_len));
    out
}

/// A body argument for messages we build.
#[derive(Debug, Clone, Copy)]
pub enum Arg<'a> {
    Str(&'a str),
    Bool(bool),
}

/// A message the proxy makes up itself (little-endian).
#[derive(Debug, Default)]
pub struct Builder<'a> {
    pub msg_type: u8,
    pub flags: u8,
    pub serial: u32,
    pub path: Option<&'a str>,
    pub interface: Option<&'a str>,
    pub member: Option<&'a str>,
    pub error_name: Option<&'a str>,
    pub reply_serial: Option<u32>,
    pub destination: Option<&'a str>,
    pub sender: Option<&'a str>,
    pub args: &'a [Arg<'a>],
}

impl Builder<'_> {
    pub fn build(&self) -> Vec<u8> {
        let mut sig = String::new();
        let mut body = Vec::new();
        for a in self.args {
            match a {
                Arg::Str(s) => {
                    sig.push('s');
                    pad(&mut body, 4);
                    body.extend_from_slice(&(s.len() as u32).to_le_bytes());
                    body.extend_from_slice(s.as_bytes());
                    body.push(0);
                }
                Arg::Bool(b) => {
                    sig.push('b');
                    pad(&mut body, 4);
                    body.extend_from_slice(&(*b as u32).to_le_bytes());
                }
            }
        }
        let mut m = vec![b'l', self.msg_type, self.flags, 1];
        m.extend_from_slice(&(body.len() as u32).to_le_bytes());
        m.extend_from_slice(&self.serial.to_le_bytes());
        m.extend_from_slice(&[0; 4]);
        let str_field = |m: &mut Vec<u8>, code: u8, s: Option<&str>, t: u8| {
            if let Some(s) = s {
                pad(m, 8);
                m.extend_from_slice(&[code, 1, t, 0]);
                m.extend_from_slice(&(s.len() as u32).to_le_bytes());
                m.extend_from_slice(s.as_bytes());
                m.push(0);
            }
        };
        str_field(&mut m, FIELD_PATH, self.path, b'o');
        str_field(&mut m, FIELD_INTERFACE, self.interface, b's');
        str_field(&mut m, FIELD_MEMBER, self.member, b's');
        str_field(&mut m, FIELD_ERROR_NAME, self.error_name, b's');
        str_field(&mut m, FIELD_DESTINATION, self.destination, b's');
        str_field(&mut m, FIELD_SENDER, self.sender, b's');
        if let Some(r) = self.reply_serial {
            pad(&mut m, 8);
            m.extend_from_slice(&[FIELD_REPLY_SERIAL, 1, b'u', 0]);
            m.extend_from_slice(&r.to_le_bytes());
        }
        if !sig.is_empty() {
            pad(&mut m, 8);
            m.extend_from_slice(&[FIELD_SIGNATURE, 1, b'g', 0, sig.len() as u8]);
            m.extend_from_slice(sig.as_bytes());
            m.push(0);
        }
        let fields_len = (m.len() - 16) as u32;
        m[12..16].copy_from_slice(&fields_len.to_le_bytes());
        pad(&mut m, 8);
        m.extend_from_slice(&body);
        m
    }
}

fn pad(v: &mut Vec<u8>, a: usize) {
    let n = align(v.len(), a);
    v.resize(n, 0);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn call(dest: &str, member: &str, arg: &str) -> Vec<u8> {
        Builder {
            msg_type: METHOD_CALL,
            serial: 7,
            path: Some("/org/freedesktop/DBus"),
            interface: Some("org.freedesktop.DBus"),
            member: Some(member),
            destination: Some(dest),
            args: &[Arg::Str(arg)],
            ..Default::default()
        }
        .build()
    }

    #[test]
    fn roundtrip_built_message() {
        let m = call("org.freedesktop.DBus", "GetNameOwner", "org.x");
        assert_eq!(message_len(&m).unwrap(), m.len());
        let h = Header::parse(&m).unwrap();
        assert_eq!(h.member, Some("GetNameOwner"));
        assert_eq!(h.destination, Some("org.freedesktop.DBus"));
        assert_eq!(h.serial, 7);
        assert_eq!(h.signature, "s");
        assert_eq!(h.arg0_str(&m), Some("org.x"));
        assert!(h.expects_reply());
    }

    /// A big-endian method call with an unknown header field (code 200, a
    /// variant holding `a(sv)`), as hand-marshalled bytes.
    #[test]
    fn big_endian_and_unknown_field() {
        let mut m: Vec<u8> = vec![b'B', 1, 0, 1, 0, 0, 0, 0, 0, 0, 0, 9, 0, 0, 0, 0];
        // PATH "/a"
        m.extend_from_slice(&[1, 1, b'o', 0, 0, 0, 0, 2, b'/', b'a', 0]);
        pad(&mut m, 8);
        // MEMBER "M"
        m.extend_from_slice(&[3, 1, b's', 0, 0, 0, 0, 1, b'M', 0]);
        pad(&mut m, 8);
        // unknown field 200: signature "a(sv)", empty array
        m.extend_from_slice(&[200, 5, b'a', b'(', b's', b'v', b')', 0]);
        m.extend_from_slice(&[0, 0, 0, 0]);
        pad(&mut m, 8);
        let fields_len = (m.len() - 16) as u32;
        m[12..16].copy_from_slice(&fields_len.to_be_bytes());
        pad(&mut m, 8);
        let h = Header::parse(&m).expect("parses");
        assert_eq!(h.serial, 9);
        assert_eq!(h.path, Some("/a"));
        assert_eq!(h.member, Some("M"));
    }

    #[test]
    fn rejects_duplicate_destination() {
        let m = call("org.a", "X", "y");
        let h = Header::parse(&m).unwrap();
        // Append a second DESTINATION field by rebuilding the header.
        let mut m2 = m[..16].to_vec();
        let fields_end = 16 + u32::from_le_bytes(m[12..16].try_into().unwrap()) as usize;
        m2.extend_from_slice(&m[16..fields_end]);
        pad(&mut m2, 8);
        m2.extend_from_slice(&[6, 1, b's', 0, 5, 0, 0, 0]);
        m2.extend_from_slice(b"org.b\0");
        let fl = (m2.len() - 16) as u32;
        m2[12..16].copy_from_slice(&fl.to_le_bytes());
        pad(&mut m2, 8);
        m2.extend_from_slice(&m[h.body_offset..]);
        assert_eq!(Header::parse(&m2), Err(WireError::DuplicateField(6)));
    }

    #[test]
    fn strv_rewrite() {
        let names = ["a.b", ":1.2", "org.freedesktop.DBus"];
        // A method return with REPLY_SERIAL 2, SIGNATURE "as", empty array.
        let mut hand = vec![b'l', 2, 0, 1, 4, 0, 0, 0, 3, 0, 0, 0, 0, 0, 0, 0];
        hand.extend_from_slice(&[5, 1, b'u', 0, 2, 0, 0, 0]);
        hand.extend_from_slice(&[8, 1, b'g', 0, 2, b'a', b's', 0]);
        let fl = (hand.len() - 16) as u32;
        hand[12..16].copy_from_slice(&fl.to_le_bytes());
        hand.extend_from_slice(&[0, 0, 0, 0]);
        let h = Header::parse(&hand).unwrap();
        assert_eq!(h.body_strv(&hand).unwrap(), Vec::<&str>::new());
        let full = rewrite_strv_body(&hand, &h, &names);
        let h2 = Header::parse(&full).unwrap();
        assert_eq!(h2.body_strv(&full).unwrap(), names.to_vec());
        let less = rewrite_strv_body(&full, &h2, &names[..1]);
        let h3 = Header::parse(&less).unwrap();
        assert_eq!(h3.body_strv(&less).unwrap(), vec!["a.b"]);
    }

    #[test]
    fn prefix_parse_sees_no_body() {
        let m = call("org.freedesktop.DBus", "GetNameOwner", "org.x");
        let at = body_offset(&m).unwrap();
        let h = Header::parse_prefix(&m[..at]).unwrap();
        assert_eq!(h.member, Some("GetNameOwner"));
        assert_eq!(h.arg0_str(&m[..at]), None);
        assert_eq!(
            Header::parse_prefix(&m).unwrap(),
            Header::parse(&m).unwrap()
        );
    }

    #[test]
    fn length_limits() {
        let mut p = [0u8; 16];
        p[0] = b'l';
        p[3] = 1;
        p[4..8].copy_from_slice(&(200u32 * 1024 * 1024).to_le_bytes());
        assert!(matches!(message_len(&p), Err(WireError::TooLong(_))));
        p[4..8].copy_from_slice(&(100u32 * 1024 * 1024).to_le_bytes());
        assert_eq!(message_len(&p).unwrap(), 16 + 100 * 1024 * 1024);
        p[0] = b'x';
        assert_eq!(message_len(&p), Err(WireError::Endianness(b'x')));
    }
}
