//! Arbitrary bytes as a `/.flatpak-info`: the parser never panics, and a
//! file it accepts reads the same after a write and a second parse (see
//! `porthole_identity::fuzz::keyfile`).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    porthole_identity::fuzz::keyfile(data);
});
