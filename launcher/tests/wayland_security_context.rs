//! `--socket=wayland` against a compositor that offers
//! `wp_security_context_v1` (porthole-test-compositor, built on
//! wayland-server; no compositor in Debian 12 offers it): the app's client
//! reaches the compositor through the listener the launcher registered, and
//! the compositor knows it as that app instance. And against one without the
//! global: the host socket is bound instead (weston 10 in peers.rs is the
//! real-world case).

mod common;

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use common::*;
use porthole_test_compositor::{Compositor, Event, Metadata};

const WAYLAND_INFO: &str = "/usr/bin/wayland-info";

/// The inside of the sandbox: a Wayland roundtrip through
/// `$WAYLAND_DISPLAY`, then the instance id from /.flatpak-info and the
/// inode of the socket it was given. `$1` is the test's marker, so that the
/// shell carries it on its command line.
const APP: &str = "wayland-info >/dev/null || exit 7
echo \"instance=$(sed -n 's/^instance-id=//p' /.flatpak-info)\"
echo \"inode=$(stat -c %i \"$XDG_RUNTIME_DIR/$WAYLAND_DISPLAY\")\"";

/// Starts the compositor on `$rt/NAME`, reachable by `who` as a compositor
/// of their own session would be.
fn start(who: Who, rt: &Path, name: &str, security_context: bool) -> (Compositor, PathBuf) {
    let display = rt.join(name);
    let c = Compositor::start(&display, security_context).expect("start the test compositor");
    if who == Who::User {
        let (uid, gid, _) = user_ids().unwrap();
        nix::unistd::chown(&display, Some(uid.into()), Some(gid.into())).unwrap();
    }
    (c, display)
}

/// Runs the app with `--socket=wayland`; returns what it printed.
fn run_app(who: Who, rt: &Path, name: &str, m: &str) -> (String, u64) {
    let out = run(
        porthole(
            who,
            rt,
            &[
                "run",
                "--socket=wayland",
                APP_ID,
                "--",
                "/bin/sh",
                "-c",
                APP,
                "sh",
                m,
            ],
            &[("WAYLAND_DISPLAY", name)],
        ),
        Stdio::null(),
        30,
    );
    assert_eq!(
        out.code,
        Some(0),
        "[{}] the app's Wayland client failed: {}{}",
        who.label(),
        out.stdout,
        out.stderr
    );
    let field = |k: &str| {
        out.stdout
            .lines()
            .find_map(|l| l.strip_prefix(k))
            .unwrap_or_else(|| panic!("no {k} in {:?} ({})", out.stdout, out.stderr))
            .to_owned()
    };
    let instance = field("instance=");
    let inode = field("inode=").parse().expect("an inode number");
    assert_no_leftovers(m);
    (instance, inode)
}

fn missing_client() -> bool {
    if Path::new(WAYLAND_INFO).exists() {
        return false;
    }
    report_skip(&format!(
        "wayland security context: {WAYLAND_INFO} not installed (wayland-utils)"
    ));
    true
}

/// No listener file outlives its instance.
fn assert_no_listener_left(rt: &Path) {
    let left: Vec<_> = std::fs::read_dir(rt.join("porthole/wayland"))
        .map(|d| d.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    assert!(left.is_empty(), "listener sockets left: {left:?}");
}

fn registered(who: Who) {
    if missing_client() {
        return;
    }
    let rt = runtime_dir(who, "wlsc");
    let (compositor, display) = start(who, &rt, "wayland-sc", true);
    let m = marker("wlsc", who);
    let (instance, inode) = run_app(who, &rt, "wayland-sc", &m);
    assert!(
        !instance.is_empty() && instance.chars().all(|c| c.is_ascii_digit()),
        "instance id {instance:?}"
    );
    let expected = Metadata {
        engine: Some("org.porthole".into()),
        app_id: Some(APP_ID.into()),
        instance_id: Some(instance.clone()),
    };
    let events = compositor.events();
    assert_eq!(
        events.first(),
        Some(&Event::Committed(expected.clone())),
        "[{}] the launcher registered the instance: {events:?}",
        who.label()
    );
    assert!(
        events.contains(&Event::Connected(expected.clone())),
        "[{}] the app's client came through the registered listener: {events:?}",
        who.label()
    );
    assert!(
        !events
            .iter()
            .any(|e| matches!(e, Event::Committed(m) | Event::Connected(m) if *m != expected)),
        "[{}] no other context or client: {events:?}",
        who.label()
    );
    assert_ne!(
        inode,
        std::fs::metadata(&display).unwrap().ino(),
        "[{}] the sandbox got the compositor's own socket",
        who.label()
    );
    // The launcher's exit closes close_fd: the compositor stops listening.
    assert!(
        compositor
            .wait_for(Duration::from_secs(5), |e| *e
                == Event::Closed(expected.clone()))
            .is_some(),
        "[{}] the compositor was not told the instance ended: {:?}",
        who.label(),
        compositor.events()
    );
    assert_no_listener_left(&rt);
}

as_root_and_user!(registered_as_root, registered_as_user: skip("wayland_security_context") => registered);

/// A compositor without the global: the app gets the host socket itself
/// and the compositor registers nothing.
fn fallback(who: Who) {
    if missing_client() {
        return;
    }
    let rt = runtime_dir(who, "wlsc-fallback");
    let (compositor, display) = start(who, &rt, "wayland-plain", false);
    let m = marker("wlsc-fallback", who);
    let (_, inode) = run_app(who, &rt, "wayland-plain", &m);
    assert_eq!(
        inode,
        std::fs::metadata(&display).unwrap().ino(),
        "[{}] the host socket is bound",
        who.label()
    );
    assert!(
        compositor.events().is_empty(),
        "[{}] {:?}",
        who.label(),
        compositor.events()
    );
    assert_no_listener_left(&rt);
}

as_root_and_user!(fallback_as_root, fallback_as_user: skip("wayland_security_context_fallback") => fallback);
