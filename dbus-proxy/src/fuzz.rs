//! The fuzzing entry point, shared by the cargo-fuzz target
//! (`dbus-proxy/fuzz`) and a deterministic smoke test run with the unit
//! tests. Arbitrary bytes go through the framing and both filter
//! directions; it checks that nothing panics and that nothing the policy
//! forbids is ever forwarded to the bus.

use std::sync::Arc;

use crate::filter::ClientFilter;
use crate::policy::{Kind, Level, Policy};
use crate::socket::RecvBuf;
use porthole_dbus_wire::{self as wire, Header};

fn policy() -> Arc<Policy> {
    let mut p = Policy::default();
    p.add_level("org.example.Talk", Level::Talk).unwrap();
    p.add_level("org.example.Seen", Level::See).unwrap();
    p.add_level("org.example.Own.*", Level::Own).unwrap();
    p.add_rule("org.example.Call", Kind::Call, "org.example.I.M@/o/*")
        .unwrap();
    p.add_rule("org.example.B", Kind::Broadcast, "*").unwrap();
    Arc::new(p)
}

/// Feeds `data` as the client's byte stream (after authentication),
/// cut into reads of varying sizes, and the same messages as if they came
/// from the bus.
pub fn run(data: &[u8]) {
    let Some((&cut, stream)) = data.split_first() else {
        return;
    };
    let policy = policy();
    let mut f = ClientFilter::new(Arc::clone(&policy), true, false, 0);
    let mut rb = RecvBuf::new(Vec::new());
    let step = (cut as usize % 61) + 1;
    let mut pos = 0;
    'outer: while pos < stream.len() {
        let Ok(limit) = rb.prepare() else { break };
        let n = limit.min(step).min(stream.len() - pos);
        rb.vec_mut().extend_from_slice(&stream[pos..pos + n]);
        pos += n;
        loop {
            let msg = match rb.next_message() {
                Ok(Some(m)) => m,
                Ok(None) => break,
                Err(_) => break 'outer,
            };
            let Ok(d) = f.from_client(&msg) else {
                // A malformed message closes the client: stop here.
                break 'outer;
            };
            if d.forward {
                check_allowed(&policy, &msg);
            }
            for m in &d.to_bus {
                Header::parse(m).expect("our own messages parse");
            }
            if let Ok(b) = f.from_bus(&msg)
                && let crate::filter::Verdict::Replace(m) = b.verdict
            {
                Header::parse(&m).expect("rewritten messages parse");
            }
        }
    }
}

/// What passed must be allowed: calls to well-known names need talk (or a
/// matching call rule), bus methods outside the allow-list never pass.
fn check_allowed(policy: &Policy, msg: &[u8]) {
    let h = Header::parse(msg).expect("forwarded messages parse");
    if h.msg_type != wire::METHOD_CALL && h.msg_type != wire::SIGNAL {
        return;
    }
    match h.destination {
        Some("org.freedesktop.DBus") => {
            assert!(
                !matches!(
                    h.member,
                    Some("BecomeMonitor" | "UpdateActivationEnvironment")
                ),
                "forbidden bus method forwarded"
            );
            if h.member == Some("AddMatch")
                && h.interface == Some("org.freedesktop.DBus")
                && let Some(rule) = h.arg0_str(msg)
            {
                assert!(!rule.contains("eavesdrop="), "eavesdrop match forwarded");
            }
            if matches!(h.member, Some("RequestName" | "ReleaseName"))
                && h.interface == Some("org.freedesktop.DBus")
                && let Some(name) = h.arg0_str(msg)
                && !name.starts_with(':')
            {
                assert_eq!(policy.lookup(name, &mut Vec::new()), Level::Own);
            }
        }
        Some(d) if !d.starts_with(':') => {
            let mut matched = Vec::new();
            let level = policy.lookup(d, &mut matched);
            assert!(level >= Level::Talk, "call to {d} at level {level:?}");
            assert!(
                level == Level::Own
                    || matched
                        .iter()
                        .any(|r| r.matches(Kind::Call, h.path, h.interface, h.member)),
                "call to {d} outside its rules"
            );
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use porthole_dbus_wire::{Arg, Builder};

    /// A deterministic stand-in for the fuzzer: valid messages, then the
    /// same bytes mutated, run through [`run`].
    #[test]
    fn smoke() {
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        let mut rnd = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        let dests = [
            "org.freedesktop.DBus",
            "org.example.Talk",
            "org.example.Seen",
            "org.example.Call",
            "org.example.Own.X",
            "org.example.Hidden",
            ":1.7",
        ];
        let members = [
            "Hello",
            "AddMatch",
            "RequestName",
            "BecomeMonitor",
            "M",
            "ListNames",
            "GetNameOwner",
        ];
        for _ in 0..3000 {
            let mut stream = vec![(rnd() & 0xff) as u8];
            for serial in 1..6 {
                let d = dests[rnd() as usize % dests.len()];
                let m = members[rnd() as usize % members.len()];
                let arg = if rnd() % 2 == 0 {
                    "org.example.Own.Y"
                } else {
                    "type='signal',eavesdrop='true'"
                };
                let msg = Builder {
                    msg_type: (rnd() % 4 + 1) as u8,
                    serial,
                    path: Some("/o/p"),
                    interface: Some(if rnd() % 2 == 0 {
                        "org.freedesktop.DBus"
                    } else {
                        "org.example.I"
                    }),
                    member: Some(m),
                    destination: Some(d),
                    reply_serial: (rnd() % 3 == 0).then_some(serial),
                    error_name: Some("e.E"),
                    args: &[Arg::Str(arg)],
                    ..Default::default()
                }
                .build();
                stream.extend_from_slice(&msg);
            }
            run(&stream);
            // Mutate a few bytes.
            for _ in 0..(rnd() % 4) {
                let i = 1 + rnd() as usize % (stream.len() - 1);
                stream[i] = rnd() as u8;
            }
            run(&stream);
        }
    }
}
