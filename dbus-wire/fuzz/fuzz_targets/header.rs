//! Arbitrary bytes as one message: framing, header parsing (whole and
//! prefix) and walking the body must never panic, and the two parses must
//! agree (see `porthole_dbus_wire::fuzz::header`).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    porthole_dbus_wire::fuzz::header(data);
});
