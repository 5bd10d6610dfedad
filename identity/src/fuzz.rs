//! The fuzzing entry point for the key-file parser, shared by the
//! cargo-fuzz target (`identity/fuzz`) and a deterministic smoke test run
//! with the unit tests. The bytes of `/.flatpak-info` come from a root the
//! caller shapes, so the parser must take anything without panicking, and
//! what it accepts must survive being written out and read back: the
//! launcher writes the file with [`KeyFile::to_text`] that services read with
//! [`KeyFile::parse`].

use crate::keyfile::KeyFile;

/// Parses `data`; if it is accepted, writes it out, parses that, and
/// checks that every group, key and value reads the same.
pub fn keyfile(data: &[u8]) {
    let Ok(kf) = KeyFile::parse_bytes(data) else {
        return;
    };
    let text = kf.to_text();
    let again = KeyFile::parse(&text)
        .unwrap_or_else(|e| panic!("our own output does not parse: {e}\n{text:?}"));
    assert_eq!(kf.groups(), again.groups(), "{text:?}");
    for group in kf.groups() {
        assert_eq!(kf.keys(group), again.keys(group), "{text:?}");
        for key in kf.keys(group) {
            assert_eq!(kf.get(group, key), again.get(group, key), "{text:?}");
            assert_eq!(
                kf.get_list(group, key),
                again.get_list(group, key),
                "{text:?}"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    /// A few thousand mutations of a realistic file: a smoke test that the
    /// fuzz target's checks hold, not a substitute for running it.
    #[test]
    fn mutated_files() {
        let seed = b"# info\n[Application]\nname=org.example.App\nname[sr@latin]=x\n\n\
            [Instance]\ninstance-id=12\\s34\napp-path = /app \r\n[Context]\n\
            sockets=wayland;a\\;b;\n[Session Bus Policy]\norg.freedesktop.portal.*=talk\n";
        let alphabet = b"[]=;#\\ \t\r\n\x0c\x0bsnta@_.-\xc3\xa9\xff\x00Encoding";
        let mut state = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = move || {
            state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut z = state;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            (z ^ (z >> 31)) as usize
        };
        for _ in 0..4000 {
            let mut data = seed.to_vec();
            for _ in 0..1 + next() % 6 {
                let at = next() % (data.len() + 1);
                match next() % 3 {
                    0 => data.insert(at, alphabet[next() % alphabet.len()]),
                    1 if at < data.len() => {
                        data.remove(at);
                    }
                    _ if at < data.len() => data[at] = alphabet[next() % alphabet.len()],
                    _ => {}
                }
            }
            super::keyfile(&data);
        }
    }
}
