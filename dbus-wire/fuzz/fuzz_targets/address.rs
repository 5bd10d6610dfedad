//! Arbitrary bytes as a D-Bus address list: parsing must never panic, and
//! every value must survive escaping and parsing again (see
//! `porthole_dbus_wire::fuzz::address`).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    porthole_dbus_wire::fuzz::address(data);
});
