//! Fuzzing entry points, shared by the cargo-fuzz targets (`dbus-wire/fuzz`)
//! and deterministic smoke tests run with the unit tests, so they compile
//! and run where cargo-fuzz is absent. Each takes arbitrary bytes, checks
//! that nothing panics, and checks the invariants a caller relies on.

use crate::address::{self, Address, UnixTarget};
use crate::header::{Header, body_offset, message_len};

/// Arbitrary bytes as one message: framing, header parsing (whole and
/// prefix), and walking the body by its signature.
pub fn header(data: &[u8]) {
    let Ok(total) = message_len(data) else {
        return;
    };
    let at = body_offset(data).expect("message_len accepted the prefix");
    assert!(at <= total, "body offset past the end of the message");
    if let Ok(h) = Header::parse_prefix(data) {
        assert!(h.serial != 0);
        assert_eq!(h.body_offset, at);
    }
    let msg = &data[..total.min(data.len())];
    let Ok(h) = Header::parse(msg) else {
        return;
    };
    assert_eq!(msg.len(), total);
    assert_eq!(
        Header::parse_prefix(msg).as_ref(),
        Ok(&h),
        "the prefix parse sees the same header"
    );
    let _ = h.arg0_str(msg);
    let _ = h.args_sss(msg);
    if let Some(v) = h.body_strv(msg) {
        // Rewriting with the same names gives back the same bytes.
        assert_eq!(crate::rewrite_strv_body(msg, &h, &v), msg);
    }
    let mut r = h.body_reader(msg);
    let _ = r.skip(h.signature);
}

/// Arbitrary bytes as an address list: parsing never panics, and every
/// value survives escaping and parsing again.
pub fn address(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let _ = address::first_unix_target(text);
    let Ok(list) = address::parse_list(text) else {
        return;
    };
    for a in &list {
        if let Ok(UnixTarget::Path(p)) = a.unix_target() {
            let again = address::unix_path(&p);
            let (_, t) = address::first_unix_target(&again).expect("our own address parses");
            assert_eq!(t, UnixTarget::Path(p));
        }
        let escaped: Vec<u8> = a
            .get("guid")
            .map(address::escape)
            .unwrap_or_default()
            .into();
        if !escaped.is_empty() {
            let b = Address::parse(&format!("x:guid={}", String::from_utf8_lossy(&escaped)))
                .expect("an escaped value parses");
            assert_eq!(b.get("guid"), a.get("guid"));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::marshal::Arg;
    use crate::{Builder, METHOD_CALL, METHOD_RETURN};

    fn rng(mut seed: u64) -> impl FnMut() -> u64 {
        move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        }
    }

    /// A deterministic stand-in for the fuzzer: valid messages of both
    /// kinds, then the same bytes mutated, truncated and byte-swapped.
    #[test]
    fn header_smoke() {
        let mut rnd = rng(0x2545_f491_4f6c_dd1d);
        let names = ["a.b", ":1.2", "org.freedesktop.DBus"];
        for i in 0..4000u32 {
            let args = [
                Arg::Str("org.example"),
                Arg::StrArray(&names[..(i as usize % 4).min(3)]),
                Arg::U32(i),
            ];
            let mut m = Builder {
                msg_type: if i % 2 == 0 {
                    METHOD_CALL
                } else {
                    METHOD_RETURN
                },
                serial: i + 1,
                path: Some("/o/p"),
                member: Some("M"),
                reply_serial: Some(1),
                destination: Some("org.x"),
                args: &args[..(i as usize % 4)],
                ..Default::default()
            }
            .build();
            header(&m);
            for _ in 0..(rnd() % 5) {
                let at = rnd() as usize % m.len();
                m[at] = rnd() as u8;
            }
            header(&m);
            let cut = rnd() as usize % (m.len() + 1);
            header(&m[..cut]);
            m[0] = b'B';
            header(&m);
        }
    }

    #[test]
    fn address_smoke() {
        let mut rnd = rng(0x9e37_79b9_7f4a_7c15);
        let alphabet = b"unix:path=/abstract,guid;%0aF=tcp:xz ";
        for _ in 0..20000 {
            let len = rnd() as usize % 40;
            let s: Vec<u8> = (0..len)
                .map(|_| alphabet[rnd() as usize % alphabet.len()])
                .collect();
            address(&s);
        }
        address(b"unix:path=/run/user/0/bus,guid=0a1b");
        address(b"unix:path=%ff%00");
    }
}
