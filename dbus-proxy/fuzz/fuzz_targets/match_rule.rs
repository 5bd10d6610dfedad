//! Arbitrary bytes as an AddMatch rule: dbus-daemon's grammar must never
//! panic, printing a parsed rule must give a text that parses back to it,
//! and the proxy's verdict must agree with the parse (see
//! `porthole_dbus_proxy::fuzz::run_match_rule`).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    porthole_dbus_proxy::fuzz::run_match_rule(data);
});
