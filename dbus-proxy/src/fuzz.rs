//! The fuzzing entry point, shared by the cargo-fuzz target
//! (`dbus-proxy/fuzz`) and a deterministic smoke test run with the unit
//! tests. Arbitrary bytes go through the framing and both filter
//! directions; it checks that nothing panics and that nothing the policy
//! forbids is ever forwarded to the bus. [`run_match_rule`] does the same
//! for the match rule parser alone.

use std::sync::Arc;

use crate::filter::ClientFilter;
use crate::match_rule::{self, Verdict};
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

/// Arbitrary bytes as a match rule: no panic; a rule that parses prints to
/// a text that parses back to the same rule; the proxy's verdict agrees
/// with the parse.
pub fn run_match_rule(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let unlimited = match_rule::parse_unlimited(text);
    if let Ok(rule) = &unlimited {
        let printed = rule.to_string();
        assert_eq!(
            match_rule::parse_unlimited(&printed).as_ref(),
            Ok(rule),
            "{text:?} printed as {printed:?}"
        );
    }
    let limited = match_rule::parse(text);
    match match_rule::check(text) {
        Verdict::Forward => assert!(limited.is_ok_and(|r| !r.eavesdrop)),
        Verdict::Eavesdrop => assert!(unlimited.is_ok_and(|r| r.eavesdrop)),
        Verdict::Invalid(e) => {
            assert!(limited.is_err());
            assert!(!unlimited.is_ok_and(|r| r.eavesdrop), "{e}");
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
                assert_eq!(
                    match_rule::check(rule),
                    Verdict::Forward,
                    "an eavesdropping or invalid match rule forwarded: {rule:?}"
                );
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
                let arg = [
                    "org.example.Own.Y",
                    "type='signal',eavesdrop='true'",
                    "type='signal',eavesdrop ='true'",
                    "eavesdrop=tr'u'e",
                    "type='signal'",
                    "eavesdrop=false",
                ][rnd() as usize % 6];
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

    /// Rule-like texts from pieces of the grammar's sharp edges, then
    /// through [`run_match_rule`].
    #[test]
    fn match_rule_smoke() {
        let mut seed = 0x853c_49e6_748f_ea9bu64;
        let mut rnd = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        let pieces = [
            "eavesdrop",
            "type",
            "sender",
            "interface",
            "member",
            "path",
            "path_namespace",
            "destination",
            "arg0",
            "arg0namespace",
            "arg1path",
            "arg+1",
            "arg0x3",
            "arg-0",
            "arg64",
            "=",
            "'",
            "\\",
            ",",
            " ",
            "\t",
            "\n",
            "true",
            "false",
            "signal",
            "method_call",
            "org.a.B",
            ":1.2",
            "/a/b",
            "/",
            "a",
            "é",
            "''",
            "\\'",
            "",
        ];
        for _ in 0..20000 {
            let mut text = String::new();
            for _ in 0..rnd() % 24 {
                text.push_str(pieces[rnd() as usize % pieces.len()]);
            }
            run_match_rule(text.as_bytes());
        }
        run_match_rule(format!("eavesdrop=true,arg0='{}'", "z".repeat(2000)).as_bytes());
        run_match_rule(&[0xff, b'=', b'\'']);
    }
}
