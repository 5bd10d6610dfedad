//! The proxy's rules seen from inside `porthole run`: a libdbus client
//! (python3-dbus, from the host's read-only /usr) in the sandbox talks to
//! services on the host bus through the instance's proxy, started by the
//! launcher with Flatpak's default policy plus `--see-name` and
//! `--talk-name`. Each rule type as the app observes it: see (visible, not
//! callable), talk (callable), hidden (invisible, unknown), own (its own
//! subtree only), call and broadcast (the portal rules), and fds both ways;
//! the same app through xdg-dbus-proxy, started the same way, must observe
//! exactly the same.

use std::io::{BufRead, BufReader, Read};
use std::process::Stdio;
use std::sync::mpsc;
use std::time::Duration;

use porthole_tests::{Bus, bin, bin_dir, serve_example};

const APP_ID: &str = "org.example.SandboxedClient";
const SEEN: &str = "org.example.Seen";
const TALK: &str = "org.example.Talk";
const HIDDEN: &str = "org.example.Hidden";
const PORTAL: &str = "org.freedesktop.portal.Desktop";
const PORTAL_PATH: &str = "/org/freedesktop/portal/desktop";

async fn serve(bus: &Bus, name: &str) -> zbus::Connection {
    serve_example(bus, name, &["/obj", PORTAL_PATH]).await
}

/// The app: prints one JSON object of outcomes, then READY once its signal
/// match is in place, then the JSON list of signal tags it received.
const SCRIPT: &str = r#"
import dbus, dbus.mainloop.glib, json, os, sys, tempfile
from gi.repository import GLib
dbus.mainloop.glib.DBusGMainLoop(set_as_default=True)
app, seen, talk, hidden, portal, ppath = sys.argv[1:7]
b = dbus.SessionBus()
d = dbus.Interface(b.get_object('org.freedesktop.DBus', '/org/freedesktop/DBus'),
                   'org.freedesktop.DBus')
def outcome(f):
    try:
        return str(f())
    except dbus.exceptions.DBusException as e:
        return e.get_dbus_name()
r = {}
names = [str(n) for n in d.ListNames()]
for n in (seen, talk, hidden, portal):
    r['listed ' + n] = n in names
    r['has-owner ' + n] = bool(d.NameHasOwner(n))
    r['owner ' + n] = outcome(lambda: 'unique' if d.GetNameOwner(n).startswith(':') else '?')
    r['call ' + n] = outcome(lambda: b.get_object(n, '/obj').Allowed(dbus_interface='org.example.Iface'))
r['call-portal ' + portal] = outcome(
    lambda: b.get_object(portal, ppath).Allowed(dbus_interface='org.example.Iface'))
r['own ' + app + '.Sub'] = outcome(lambda: int(d.RequestName(app + '.Sub', 4)))
r['own org.example.NotMine'] = outcome(lambda: int(d.RequestName('org.example.NotMine', 4)))
r['own ' + talk] = outcome(lambda: int(d.RequestName(talk, 4)))
f = tempfile.TemporaryFile(); f.write(b'from-app'); f.flush(); f.seek(0)
t = b.get_object(talk, '/obj')
r['fd to service'] = outcome(lambda: t.ReadFd(dbus.types.UnixFd(f), dbus_interface='org.example.Iface'))
def read_back():
    fd = t.MakeFd(dbus_interface='org.example.Iface').take()
    with os.fdopen(fd) as g:
        return g.read()
r['fd from service'] = outcome(read_back)
print(json.dumps(r), flush=True)
got = []
loop = GLib.MainLoop()
def on_sig(tag):
    got.append(str(tag))
    if tag == 'end':
        loop.quit()
b.add_signal_receiver(on_sig, signal_name='Sig', dbus_interface='org.example.Iface')
d.GetId()  # a round trip: the match rule is in place behind it
print('READY', flush=True)
GLib.timeout_add(15000, loop.quit)
loop.run()
print(json.dumps(got), flush=True)
"#;

fn skip() -> Option<&'static str> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Some("needs root (porthole run as root here)");
    }
    if !std::path::Path::new("/usr/lib/python3/dist-packages/dbus").exists()
        || !std::path::Path::new("/usr/lib/python3/dist-packages/gi").exists()
    {
        return Some("python3-dbus or python3-gi missing");
    }
    None
}

/// Runs the app through `proxy`; returns its outcomes, the broadcasts it
/// received, and porthole's stderr.
async fn run_app(
    bus: &Bus,
    proxy: &std::path::Path,
    conn: &dyn Fn(&str) -> zbus::Connection,
) -> (serde_json::Value, Vec<String>, String) {
    let mut cmd = bus.command(bin("porthole"));
    cmd.args([
        "run",
        &format!("--see-name={SEEN}"),
        &format!("--talk-name={TALK}"),
    ])
    .env("PORTHOLE_DBUS_PROXY", proxy)
    .args([APP_ID, "--", "/usr/bin/python3", "-c", SCRIPT])
    .args([APP_ID, SEEN, TALK, HIDDEN, PORTAL, PORTAL_PATH])
    .stdin(Stdio::null())
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("porthole run");
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut stderr = child.stderr.take().unwrap();
    let stderr_text = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stderr.read_to_string(&mut s);
        s
    });
    let next = |what: &str| {
        rx.recv_timeout(Duration::from_secs(30))
            .unwrap_or_else(|_| panic!("no {what} from the sandboxed app"))
    };

    let outcomes: serde_json::Value = serde_json::from_str(&next("outcomes")).unwrap();
    let ready = next("READY");
    assert_eq!(ready, "READY");
    // Broadcasts from each kind of peer, in this order; the app stops at
    // "end".
    for (name, path, tag) in [
        (HIDDEN, "/obj", "hidden"),
        (SEEN, "/obj", "seen"),
        (PORTAL, "/obj", "portal-outside-its-path"),
        (PORTAL, PORTAL_PATH, "portal"),
        (TALK, "/obj", "talk"),
        (TALK, "/obj", "end"),
    ] {
        conn(name)
            .emit_signal(None::<&str>, path, "org.example.Iface", "Sig", &(tag,))
            .await
            .unwrap();
    }
    let received: Vec<String> = serde_json::from_str(&next("signals")).unwrap();
    let status = child.wait().unwrap();
    let err = stderr_text.join().unwrap();
    assert!(status.success(), "{status}: {err}");

    (outcomes, received, err)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_rule_type_as_the_sandboxed_app_sees_it() {
    if let Some(why) = skip() {
        porthole_tests::skipped(&format!(
            "each_rule_type_as_the_sandboxed_app_sees_it: {why}"
        ));
        return;
    }
    let bus = Bus::start();
    let mut services = Vec::new();
    for n in [SEEN, TALK, HIDDEN, PORTAL] {
        services.push(serve(&bus, n).await);
    }
    let conn = |name: &str| {
        let i = [SEEN, TALK, HIDDEN, PORTAL]
            .iter()
            .position(|n| *n == name)
            .unwrap();
        services[i].clone()
    };

    let mut runs = vec![("ours", bin_dir().join("porthole-dbus-proxy"))];
    if std::path::Path::new("/usr/bin/xdg-dbus-proxy").exists() {
        runs.push(("xdg-dbus-proxy", "/usr/bin/xdg-dbus-proxy".into()));
    }
    let mut seen_by = Vec::new();
    for (label, proxy) in &runs {
        let (outcomes, received, err) = run_app(&bus, proxy, &conn).await;
        seen_by.push((*label, outcomes, received, err));
    }
    let (_, outcomes, received, err) = &seen_by[0];
    const DENIED: &str = "org.freedesktop.DBus.Error.AccessDenied";
    const UNKNOWN: &str = "org.freedesktop.DBus.Error.ServiceUnknown";
    const NO_OWNER: &str = "org.freedesktop.DBus.Error.NameHasNoOwner";
    let expected = serde_json::json!({
        // see: listed and resolvable, but not callable.
        format!("listed {SEEN}"): true,
        format!("has-owner {SEEN}"): true,
        format!("owner {SEEN}"): "unique",
        format!("call {SEEN}"): DENIED,
        // talk: callable.
        format!("listed {TALK}"): true,
        format!("has-owner {TALK}"): true,
        format!("owner {TALK}"): "unique",
        format!("call {TALK}"): "allowed",
        // not granted: as if it did not exist.
        format!("listed {HIDDEN}"): false,
        format!("has-owner {HIDDEN}"): false,
        format!("owner {HIDDEN}"): NO_OWNER,
        format!("call {HIDDEN}"): UNKNOWN,
        // org.freedesktop.portal.*: talk, with a call rule for any method.
        format!("listed {PORTAL}"): true,
        format!("has-owner {PORTAL}"): true,
        format!("owner {PORTAL}"): "unique",
        format!("call {PORTAL}"): "allowed",
        format!("call-portal {PORTAL}"): "allowed",
        // own: the app's own id and its subtree only; asking for another
        // name is refused as for xdg-dbus-proxy: AccessDenied for a name it
        // may see, ServiceUnknown for one it may not.
        format!("own {APP_ID}.Sub"): "1",
        format!("own {TALK}"): DENIED,
        "own org.example.NotMine": UNKNOWN,
        // fds both ways.
        "fd to service": "from-app",
        "fd from service": "from-service",
    });
    assert_eq!(*outcomes, expected, "stderr: {err}");
    // Broadcasts: from talk-level peers on any path, nothing from seen or
    // hidden ones. The portal names are talk-level in Flatpak's default
    // policy, so its broadcast rule (@/org/freedesktop/portal/*) adds
    // nothing for them: xdg-dbus-proxy passes the signal outside that path
    // too (checked below).
    assert_eq!(
        *received,
        ["portal-outside-its-path", "portal", "talk", "end"],
        "stderr: {err}"
    );
    // xdg-dbus-proxy, started the same way, gives the app the same view.
    for (label, o, r, e) in &seen_by[1..] {
        assert_eq!((o, r), (outcomes, received), "{label} differs; stderr: {e}");
    }
}
