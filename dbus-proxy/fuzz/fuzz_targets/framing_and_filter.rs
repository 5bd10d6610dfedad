//! Arbitrary bytes as a client's message stream: framing, header parsing
//! and both filter directions must never panic, and nothing the policy
//! forbids may be forwarded (see `porthole_dbus_proxy::fuzz::run`).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    porthole_dbus_proxy::fuzz::run(data);
});
