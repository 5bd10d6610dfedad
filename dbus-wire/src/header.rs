//! D-Bus message framing, hand-written: the fixed header, the header
//! fields, the length limits, and building headers.
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

use crate::marshal::{Arg, Encoder, Endian, MAX_ARRAY_LEN, Reader, align};

/// The protocol's limit on a whole message (header + body), 128 MiB.
pub const MAX_MESSAGE_LEN: usize = 128 * 1024 * 1024;

pub const METHOD_CALL: u8 = 1;
pub const METHOD_RETURN: u8 = 2;
pub const ERROR: u8 = 3;
pub const SIGNAL: u8 = 4;

pub const FLAG_NO_REPLY_EXPECTED: u8 = 0x1;
pub const FLAG_NO_AUTO_START: u8 = 0x2;

/// Header field codes (the spec's table of header fields).
pub const FIELD_PATH: u8 = 1;
pub const FIELD_INTERFACE: u8 = 2;
pub const FIELD_MEMBER: u8 = 3;
pub const FIELD_ERROR_NAME: u8 = 4;
pub const FIELD_REPLY_SERIAL: u8 = 5;
pub const FIELD_DESTINATION: u8 = 6;
pub const FIELD_SENDER: u8 = 7;
pub const FIELD_SIGNATURE: u8 = 8;
pub const FIELD_UNIX_FDS: u8 = 9;

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

/// Total length of the message whose first 16 bytes are `prefix`.
#[inline]
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
#[inline]
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
        let mut c = Reader::new(msg, 16, fields_end, e);
        while c.pos() < fields_end {
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
        if c.pos() != fields_end {
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

    /// The message's byte order.
    pub fn endian(&self) -> Endian {
        if self.big_endian {
            Endian::Big
        } else {
            Endian::Little
        }
    }

    /// A reader over the body of `msg` (the message this header came from).
    pub fn body_reader(&self, msg: &'a [u8]) -> Reader<'a> {
        Reader::new(msg, self.body_offset, msg.len(), self.endian())
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
        let mut c = self.body_reader(msg);
        c.string().ok()
    }

    /// The first three body arguments when the body starts with `sss`.
    pub fn args_sss(&self, msg: &'a [u8]) -> Option<[&'a str; 3]> {
        if !self.signature.starts_with("sss") {
            return None;
        }
        let mut c = self.body_reader(msg);
        Some([c.string().ok()?, c.string().ok()?, c.string().ok()?])
    }

    /// The strings of a body that is exactly one `as`.
    pub fn body_strv(&self, msg: &'a [u8]) -> Option<Vec<&'a str>> {
        if self.signature != "as" {
            return None;
        }
        let mut c = self.body_reader(msg);
        let stop = c.array(4).ok()?;
        if stop != msg.len() {
            return None;
        }
        let mut out = Vec::new();
        while c.pos() < stop {
            out.push(c.string().ok()?);
        }
        (c.pos() == stop).then_some(out)
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

/// A message we make up ourselves (little-endian): the proxy's replies
/// and calls, the launcher's call to systemd, the probe's calls.
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
    /// The message with `args` as its body.
    pub fn build(&self) -> Vec<u8> {
        let mut sig = String::new();
        let mut body = Encoder::new();
        for a in self.args {
            sig.push_str(a.signature());
            body.arg(a);
        }
        self.build_with_body(&sig, body.bytes())
    }

    /// The message with a body encoded elsewhere (`args` is ignored):
    /// `body` holds little-endian values of the types in `signature`.
    pub fn build_with_body(&self, signature: &str, body: &[u8]) -> Vec<u8> {
        let mut m = Vec::with_capacity(128 + body.len());
        m.extend_from_slice(&[b'l', self.msg_type, self.flags, 1]);
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
        if !signature.is_empty() {
            pad(&mut m, 8);
            m.extend_from_slice(&[FIELD_SIGNATURE, 1, b'g', 0, signature.len() as u8]);
            m.extend_from_slice(signature.as_bytes());
            m.push(0);
        }
        let fields_len = (m.len() - 16) as u32;
        m[12..16].copy_from_slice(&fields_len.to_le_bytes());
        pad(&mut m, 8);
        m.extend_from_slice(body);
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
    use crate::marshal::{Arg, Endian};

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

    /// The little-endian method call `call("org.a", "X", "y")` rebuilt as
    /// big-endian bytes by hand.
    fn big_endian_call() -> Vec<u8> {
        let mut m: Vec<u8> = vec![b'B', 1, 0, 1, 0, 0, 0, 6, 0, 0, 0, 7, 0, 0, 0, 0];
        m.extend_from_slice(&[1, 1, b'o', 0, 0, 0, 0, 2, b'/', b'a', 0]);
        pad(&mut m, 8);
        m.extend_from_slice(&[3, 1, b's', 0, 0, 0, 0, 1, b'X', 0]);
        pad(&mut m, 8);
        m.extend_from_slice(&[6, 1, b's', 0, 0, 0, 0, 5]);
        m.extend_from_slice(b"org.a\0");
        pad(&mut m, 8);
        m.extend_from_slice(&[8, 1, b'g', 0, 1, b's', 0]);
        let fields_len = (m.len() - 16) as u32;
        m[12..16].copy_from_slice(&fields_len.to_be_bytes());
        pad(&mut m, 8);
        m.extend_from_slice(&[0, 0, 0, 1, b'y', 0]);
        m
    }

    #[test]
    fn both_byte_orders_read_the_same() {
        let be = big_endian_call();
        let le = call("org.a", "X", "y");
        let (hb, hl) = (Header::parse(&be).unwrap(), Header::parse(&le).unwrap());
        assert_eq!(hb.endian(), Endian::Big);
        assert_eq!(hl.endian(), Endian::Little);
        assert_eq!(
            (hb.member, hb.destination, hb.signature),
            (Some("X"), Some("org.a"), "s")
        );
        assert_eq!(hb.serial, 7);
        assert_eq!(hb.arg0_str(&be), Some("y"));
        assert_eq!(hl.arg0_str(&le), Some("y"));
        assert_eq!(message_len(&be[..16]).unwrap(), be.len());
    }

    #[test]
    fn truncated_messages() {
        let m = call("org.a", "X", "y");
        assert_eq!(message_len(&m[..15]), Err(WireError::Truncated));
        for cut in [16, 20, m.len() - 1] {
            assert_eq!(Header::parse(&m[..cut]), Err(WireError::Truncated), "{cut}");
        }
        // A prefix shorter than the header fields.
        assert_eq!(Header::parse_prefix(&m[..24]), Err(WireError::Truncated));
        // The field array claims more bytes than the message has.
        let mut bad = m.clone();
        bad[12] = bad[12].wrapping_add(64);
        assert!(Header::parse(&bad).is_err());
    }

    #[test]
    fn malformed_fixed_header() {
        let m = call("org.a", "X", "y");
        let mut v = m.clone();
        v[3] = 2;
        assert_eq!(Header::parse(&v), Err(WireError::Version(2)));
        let mut t = m.clone();
        t[1] = 5;
        assert_eq!(Header::parse(&t), Err(WireError::Type(5)));
        t[1] = 0;
        assert_eq!(Header::parse(&t), Err(WireError::Type(0)));
        let mut z = m.clone();
        z[8..12].copy_from_slice(&[0; 4]);
        assert_eq!(Header::parse(&z), Err(WireError::ZeroSerial));
        // A field array over the 64 MiB array limit.
        let mut p = [0u8; 16];
        p[0] = b'l';
        p[3] = 1;
        p[12..16].copy_from_slice(&(65u32 * 1024 * 1024).to_le_bytes());
        assert!(matches!(message_len(&p), Err(WireError::TooLong(_))));
    }

    /// A method call whose header fields are PATH "/a", MEMBER "M" and
    /// `extra` (code, signature, value bytes), little-endian, no body.
    fn with_field(code: u8, sig: &[u8], value: &[u8]) -> Vec<u8> {
        let mut m: Vec<u8> = vec![b'l', 1, 0, 1, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0];
        m.extend_from_slice(&[1, 1, b'o', 0, 2, 0, 0, 0, b'/', b'a', 0]);
        pad(&mut m, 8);
        m.extend_from_slice(&[3, 1, b's', 0, 1, 0, 0, 0, b'M', 0]);
        pad(&mut m, 8);
        m.push(code);
        m.push(sig.len() as u8);
        m.extend_from_slice(sig);
        m.push(0);
        m.extend_from_slice(value);
        let fl = (m.len() - 16) as u32;
        m[12..16].copy_from_slice(&fl.to_le_bytes());
        pad(&mut m, 8);
        m
    }

    #[test]
    fn bad_field_types() {
        // DESTINATION as a u32, REPLY_SERIAL as a string, SIGNATURE as
        // a string, PATH as a signature.
        let cases: [(u8, &[u8], &[u8]); 4] = [
            (6, b"u", &[0, 0, 0, 0, 1, 0, 0, 0]),
            (5, b"s", &[0, 0, 0, 0, 1, 0, 0, 0, b'x', 0]),
            (8, b"s", &[0, 0, 0, 0, 1, 0, 0, 0, b's', 0]),
            (1, b"g", &[1, b's', 0]),
        ];
        for (code, sig, value) in cases {
            let m = with_field(code, sig, value);
            let e = Header::parse(&m).unwrap_err();
            assert!(
                matches!(e, WireError::Field(c) | WireError::DuplicateField(c) if c == code),
                "field {code}: {e:?}"
            );
        }
        // Field code 0 is invalid.
        assert_eq!(
            Header::parse(&with_field(0, b"u", &[1, 0, 0, 0])),
            Err(WireError::Field(0))
        );
        // An unknown field with a malformed value.
        assert_eq!(
            Header::parse(&with_field(100, b"s", &[9, 0, 0, 0, b'x', 0])),
            Err(WireError::Field(100))
        );
        // Empty structs and dict entries are not types: an array of them
        // in an unknown field took no bytes per element, and the skip
        // spun forever (regression: a hostile client hung the proxy).
        // Each value: 2 bytes to align the length, the length 8, 4 bytes
        // to align the elements, then 8 bytes of "elements".
        let hostile: &[u8] = &[0, 0, 8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];
        for sig in [&b"a()"[..], b"a{}", b"a{s}", b"a{sss}", b"a(())", b"v"] {
            assert_eq!(
                Header::parse(&with_field(100, sig, hostile)),
                Err(WireError::Field(100)),
                "signature {}",
                String::from_utf8_lossy(sig)
            );
        }
        // An unknown field of a well-formed type is ignored.
        let known = with_field(100, b"u", &[1, 0, 0, 0]);
        let ok = Header::parse(&known).unwrap();
        assert_eq!(ok.member, Some("M"));
        // A string field without its NUL, and with bad UTF-8.
        assert_eq!(
            Header::parse(&with_field(2, b"s", &[0, 0, 0, 0, 1, 0, 0, 0, b'x', b'x'])),
            Err(WireError::Field(2))
        );
        assert_eq!(
            Header::parse(&with_field(2, b"s", &[0, 0, 0, 0, 1, 0, 0, 0, 0xff, 0])),
            Err(WireError::Field(2))
        );
    }

    #[test]
    fn required_fields_and_padding() {
        // A method call without MEMBER.
        let mut m: Vec<u8> = vec![b'l', 1, 0, 1, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0];
        m.extend_from_slice(&[1, 1, b'o', 0, 2, 0, 0, 0, b'/', b'a', 0]);
        let fl = (m.len() - 16) as u32;
        m[12..16].copy_from_slice(&fl.to_le_bytes());
        pad(&mut m, 8);
        assert_eq!(Header::parse(&m), Err(WireError::MissingField("MEMBER")));
        // Nonzero padding after the fields.
        let mut p = with_field(100, b"y", &[7]);
        let last = p.len() - 1;
        p[last] = 1;
        assert_eq!(Header::parse(&p), Err(WireError::Value));
        // A body with no SIGNATURE field.
        let mut b = with_field(100, b"y", &[7]);
        b[4] = 8;
        b.extend_from_slice(&[0; 8]);
        assert_eq!(Header::parse(&b), Err(WireError::Value));
    }

    #[test]
    fn built_body_of_every_arg_kind() {
        let strs = ["a", "bc"];
        let args = [
            Arg::Str("s"),
            Arg::ObjectPath("/o"),
            Arg::Bool(true),
            Arg::U32(9),
            Arg::StrArray(&strs),
        ];
        let m = Builder {
            msg_type: SIGNAL,
            serial: 3,
            path: Some("/p"),
            interface: Some("i.I"),
            member: Some("S"),
            args: &args,
            ..Default::default()
        }
        .build();
        let h = Header::parse(&m).unwrap();
        assert_eq!(h.signature, "sobuas");
        let mut r = h.body_reader(&m);
        assert_eq!(r.string().unwrap(), "s");
        assert_eq!(r.string().unwrap(), "/o");
        assert!(r.bool().unwrap());
        assert_eq!(r.u32().unwrap(), 9);
        let stop = r.array(4).unwrap();
        assert_eq!([r.string().unwrap(), r.string().unwrap()], strs);
        assert_eq!(r.pos(), stop);
        assert!(r.at_end());
    }
}
