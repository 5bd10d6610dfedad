//! The D-Bus marshalling format, as far as our programs need it: a reader
//! that borrows from the received bytes (used by the header parser on
//! every message, so it is kept small and allocation-free) and a
//! little-endian encoder for the bodies we build (the proxy's made-up
//! replies, the launcher's `StartTransientUnit` call, the probe's calls).
//!
//! Alignment is measured from the start of the message; a body starts
//! 8-aligned, so an encoder that starts at a body measures it right too.

use crate::header::WireError;

/// The protocol's limit on an array (the header-field array included), 64 MiB.
pub const MAX_ARRAY_LEN: u32 = 64 * 1024 * 1024;
/// Nesting limit for the containers we skip.
const MAX_DEPTH: u32 = 64;

/// The byte order of a message, from its first byte.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endian {
    Little,
    Big,
}

impl Endian {
    /// `l` or `B`, the message's first byte.
    #[inline]
    pub fn from_marker(b: u8) -> Result<Self, WireError> {
        match b {
            b'l' => Ok(Endian::Little),
            b'B' => Ok(Endian::Big),
            other => Err(WireError::Endianness(other)),
        }
    }

    /// The u32 in the first four bytes of `b` (which must hold them).
    #[inline]
    pub fn u32(self, b: &[u8]) -> u32 {
        let a = [b[0], b[1], b[2], b[3]];
        match self {
            Endian::Little => u32::from_le_bytes(a),
            Endian::Big => u32::from_be_bytes(a),
        }
    }

    #[inline]
    pub fn put_u32(self, v: u32) -> [u8; 4] {
        match self {
            Endian::Little => v.to_le_bytes(),
            Endian::Big => v.to_be_bytes(),
        }
    }
}

/// `n` rounded up to a multiple of `a` (a power of two).
#[inline]
pub(crate) fn align(n: usize, a: usize) -> usize {
    (n + a - 1) & !(a - 1)
}

/// A cursor over marshalled data, borrowing strings from it. Offsets are
/// relative to the message start, which is where alignment is measured
/// from. Every error is [`WireError::Value`].
#[derive(Debug, Clone)]
pub struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
    end: usize,
    e: Endian,
}

impl<'a> Reader<'a> {
    /// Reads `buf[pos..end]` (`buf` is the whole message, or its start).
    pub fn new(buf: &'a [u8], pos: usize, end: usize, e: Endian) -> Self {
        let end = end.min(buf.len());
        Reader {
            buf,
            pos: pos.min(end),
            end,
            e,
        }
    }

    /// The offset of the next value.
    pub fn pos(&self) -> usize {
        self.pos
    }

    /// Whether everything up to the end has been read.
    pub fn at_end(&self) -> bool {
        self.pos >= self.end
    }

    /// Skips the zero padding up to a multiple of `a`.
    pub fn align(&mut self, a: usize) -> Result<(), WireError> {
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

    pub fn u8(&mut self) -> Result<u8, WireError> {
        Ok(self.take(1)?[0])
    }

    pub fn u32(&mut self) -> Result<u32, WireError> {
        self.align(4)?;
        let b = self.take(4)?;
        Ok(self.e.u32(b))
    }

    pub fn u64(&mut self) -> Result<u64, WireError> {
        self.align(8)?;
        let b: [u8; 8] = self.take(8)?.try_into().map_err(|_| WireError::Value)?;
        Ok(match self.e {
            Endian::Little => u64::from_le_bytes(b),
            Endian::Big => u64::from_be_bytes(b),
        })
    }

    /// A boolean: a u32 that must be 0 or 1.
    pub fn bool(&mut self) -> Result<bool, WireError> {
        match self.u32()? {
            0 => Ok(false),
            1 => Ok(true),
            _ => Err(WireError::Value),
        }
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

    /// A string (`s`) or object path (`o`).
    pub fn string(&mut self) -> Result<&'a str, WireError> {
        let len = self.u32()? as usize;
        self.str_of_len(len)
    }

    /// A signature (`g`), also the type of a variant's value.
    pub fn signature(&mut self) -> Result<&'a str, WireError> {
        let len = self.u8()? as usize;
        self.str_of_len(len)
    }

    /// Starts an array whose elements align to `elem_align`; returns the
    /// offset where it ends (read elements while [`Self::pos`] is below it).
    pub fn array(&mut self, elem_align: usize) -> Result<usize, WireError> {
        let len = self.u32()?;
        if len > MAX_ARRAY_LEN {
            return Err(WireError::Value);
        }
        self.align(elem_align)?;
        let stop = self.pos.checked_add(len as usize).ok_or(WireError::Value)?;
        if stop > self.end {
            return Err(WireError::Value);
        }
        Ok(stop)
    }

    /// Skips one value of each complete type in `sig`.
    pub fn skip(&mut self, sig: &str) -> Result<(), WireError> {
        let mut rest = sig.as_bytes();
        while !rest.is_empty() {
            rest = self.skip_value(rest, 0)?;
        }
        Ok(())
    }

    /// Skips one value of the single complete type at the start of `sig`;
    /// returns the rest of the signature.
    pub(crate) fn skip_value<'s>(
        &mut self,
        sig: &'s [u8],
        depth: u32,
    ) -> Result<&'s [u8], WireError> {
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
                let stop = self.array(type_alignment(rest)?)?;
                let elem_end = complete_type_end(rest, depth + 1)?;
                let elem = &rest[..elem_end];
                while self.pos < stop {
                    let saved_end = self.end;
                    let before = self.pos;
                    self.end = stop;
                    let r = self.skip_value(elem, depth + 1);
                    self.end = saved_end;
                    r?;
                    // Every valid element type takes at least one byte; one
                    // that took none would spin here forever (a hostile
                    // `a()` in an unknown header field hung the proxy).
                    if self.pos == before {
                        return Err(WireError::Value);
                    }
                }
                return Ok(&rest[elem_end..]);
            }
            b'(' | b'{' => {
                self.align(8)?;
                let close = if c == b'(' { b')' } else { b'}' };
                // `()` and `{}` are not valid types (the D-Bus
                // specification: a struct has at least one field).
                if rest.first() == Some(&close) {
                    return Err(WireError::Value);
                }
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

/// The alignment of the type at the start of `sig`.
pub fn type_alignment(sig: &[u8]) -> Result<usize, WireError> {
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
            let (mut i, mut fields) = (1, 0);
            while i < sig.len() && sig[i] != close {
                i += complete_type_end(&sig[i..], depth + 1)?;
                fields += 1;
            }
            // A struct has at least one field, a dict entry exactly two.
            let valid = if close == b')' {
                fields >= 1
            } else {
                fields == 2
            };
            if i >= sig.len() || !valid {
                return Err(WireError::Value);
            }
            Ok(i + 1)
        }
        _ => Ok(1),
    }
}

/// A body argument of the simple kinds our messages carry.
#[derive(Debug, Clone, Copy)]
pub enum Arg<'a> {
    Str(&'a str),
    ObjectPath(&'a str),
    Bool(bool),
    U32(u32),
    StrArray(&'a [&'a str]),
}

impl Arg<'_> {
    /// The argument's type signature.
    pub fn signature(&self) -> &'static str {
        match self {
            Arg::Str(_) => "s",
            Arg::ObjectPath(_) => "o",
            Arg::Bool(_) => "b",
            Arg::U32(_) => "u",
            Arg::StrArray(_) => "as",
        }
    }
}

/// A little-endian body being written. The caller writes values in the
/// order of the signature it declares for the body; containers are
/// written through [`Encoder::array`], [`Encoder::struct_start`] and
/// [`Encoder::variant`].
#[derive(Debug, Default)]
pub struct Encoder {
    buf: Vec<u8>,
}

impl Encoder {
    pub fn new() -> Self {
        Encoder::default()
    }

    /// The bytes written so far.
    pub fn bytes(&self) -> &[u8] {
        &self.buf
    }

    pub fn into_bytes(self) -> Vec<u8> {
        self.buf
    }

    /// Zero padding up to a multiple of `a`.
    pub fn pad(&mut self, a: usize) {
        let n = align(self.buf.len(), a);
        self.buf.resize(n, 0);
    }

    pub fn u8(&mut self, v: u8) {
        self.buf.push(v);
    }

    /// A `q` (uint16).
    pub fn u16(&mut self, v: u16) {
        self.pad(2);
        self.buf.extend_from_slice(&v.to_le_bytes());
    }

    pub fn u32(&mut self, v: u32) {
        self.pad(4);
        self.buf.extend_from_slice(&v.to_le_bytes());
    }

    pub fn u64(&mut self, v: u64) {
        self.pad(8);
        self.buf.extend_from_slice(&v.to_le_bytes());
    }

    pub fn bool(&mut self, v: bool) {
        self.u32(v as u32);
    }

    /// A string (`s`) or object path (`o`).
    pub fn string(&mut self, s: &str) {
        self.u32(s.len() as u32);
        self.buf.extend_from_slice(s.as_bytes());
        self.buf.push(0);
    }

    /// A signature (`g`); at most 255 bytes by the protocol.
    pub fn signature(&mut self, s: &str) {
        self.buf.push(s.len() as u8);
        self.buf.extend_from_slice(s.as_bytes());
        self.buf.push(0);
    }

    /// A variant holding a value of type `sig`: write the value next.
    pub fn variant(&mut self, sig: &str) {
        self.signature(sig);
    }

    /// A struct or dict entry: 8-aligned; write its fields next.
    pub fn struct_start(&mut self) {
        self.pad(8);
    }

    /// An array whose elements align to `elem_align`, written by `elems`;
    /// its length (which leaves out the padding before the first element)
    /// is filled in afterwards.
    pub fn array(&mut self, elem_align: usize, elems: impl FnOnce(&mut Self)) {
        self.pad(4);
        let at = self.buf.len();
        self.buf.extend_from_slice(&[0; 4]);
        self.pad(elem_align);
        let start = self.buf.len();
        elems(self);
        let len = (self.buf.len() - start) as u32;
        self.buf[at..at + 4].copy_from_slice(&len.to_le_bytes());
    }

    pub fn arg(&mut self, a: &Arg<'_>) {
        match a {
            Arg::Str(s) | Arg::ObjectPath(s) => self.string(s),
            Arg::Bool(b) => self.bool(*b),
            Arg::U32(v) => self.u32(*v),
            Arg::StrArray(items) => self.array(4, |e| {
                for s in items.iter() {
                    e.string(s);
                }
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encoder_layout() {
        let mut e = Encoder::new();
        e.u8(7);
        e.string("ab");
        e.array(8, |e| {
            e.struct_start();
            e.string("k");
            e.variant("t");
            e.u64(5);
        });
        e.array(8, |_| {});
        let b = e.into_bytes();
        #[rustfmt::skip]
        let want: Vec<u8> = vec![
            7, 0, 0, 0, 2, 0, 0, 0, b'a', b'b', 0, 0,
            // array length (24), then padding to 8 before the struct
            24, 0, 0, 0,
            1, 0, 0, 0, b'k', 0, 1, b't', 0, 0, 0, 0, 0, 0, 0, 0,
            5, 0, 0, 0, 0, 0, 0, 0,
            // empty array: length 0, padding to 8 still written
            0, 0, 0, 0, 0, 0, 0, 0,
        ];
        assert_eq!(b, want);
        let mut r = Reader::new(&b, 0, b.len(), Endian::Little);
        assert_eq!(r.u8().unwrap(), 7);
        assert_eq!(r.string().unwrap(), "ab");
        let stop = r.array(8).unwrap();
        r.align(8).unwrap();
        assert_eq!(r.string().unwrap(), "k");
        assert_eq!(r.signature().unwrap(), "t");
        assert_eq!(r.u64().unwrap(), 5);
        assert_eq!(r.pos(), stop);
        assert_eq!(r.array(8).unwrap(), b.len());
        assert!(r.at_end());
    }

    #[test]
    fn reader_rejects_malformed_values() {
        // Nonzero padding before a u32.
        let b = [1u8, 1, 0, 0, 5, 0, 0, 0];
        let mut r = Reader::new(&b, 1, b.len(), Endian::Little);
        assert_eq!(r.u32(), Err(WireError::Value));
        // A string without its NUL, one with an inner NUL, one not UTF-8.
        for b in [
            &[2u8, 0, 0, 0, b'a', b'b', b'c'][..],
            &[2, 0, 0, 0, b'a', 0, 0],
            &[2, 0, 0, 0, 0xff, 0xfe, 0],
            &[9, 0, 0, 0, b'a', 0],
        ] {
            let mut r = Reader::new(b, 0, b.len(), Endian::Little);
            assert_eq!(r.string(), Err(WireError::Value), "{b:?}");
        }
        // A boolean of 2.
        let b = [2u8, 0, 0, 0];
        assert_eq!(
            Reader::new(&b, 0, 4, Endian::Little).bool(),
            Err(WireError::Value)
        );
        // An array longer than the data.
        let b = [0u8, 0, 1, 0];
        assert_eq!(
            Reader::new(&b, 0, 4, Endian::Big).array(4),
            Err(WireError::Value)
        );
        // Unknown type codes and unbalanced containers.
        let b = [0u8; 16];
        for sig in ["z", "(u", "a", "a{s"] {
            let mut r = Reader::new(&b, 0, b.len(), Endian::Little);
            assert_eq!(r.skip(sig), Err(WireError::Value), "{sig}");
        }
    }

    #[test]
    fn big_endian_reads() {
        let b = [0u8, 0, 0, 3, b'x', b'y', b'z', 0];
        let mut r = Reader::new(&b, 0, b.len(), Endian::Big);
        assert_eq!(r.string().unwrap(), "xyz");
        let b = [0u8, 0, 0, 0, 0, 0, 1, 2];
        assert_eq!(Reader::new(&b, 0, 8, Endian::Big).u64().unwrap(), 0x0102);
    }

    #[test]
    fn deep_nesting_is_refused_not_a_stack_overflow() {
        let sig = "a".repeat(200) + "y";
        let b = [0u8; 8];
        let mut r = Reader::new(&b, 0, b.len(), Endian::Little);
        assert_eq!(r.skip(&sig), Err(WireError::Value));
        let sig = "v";
        // A variant whose signature is a variant whose ... (64+ deep).
        let mut nested = Vec::new();
        for _ in 0..100 {
            nested.extend_from_slice(&[1, b'v', 0]);
        }
        let mut r = Reader::new(&nested, 0, nested.len(), Endian::Little);
        assert_eq!(r.skip(sig), Err(WireError::Value));
    }
}
