//! Real peers (DESIGN.md "Real peers"): a headless weston and a PulseAudio
//! daemon with a null sink, started by PID with a private XDG_RUNTIME_DIR and
//! stopped on drop. With the permission, `wayland-info` / `pactl info` work
//! inside the sandbox; without it, the socket does not exist inside. Weston
//! 10 lacks wp_security_context_v1, so here the launcher falls back to
//! binding its socket; the protocol's positive path runs against our test
//! compositor in wayland_security_context.rs.

mod common;

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};

use common::*;

/// A peer daemon, killed and reaped on drop.
struct Peer(Child);

impl Drop for Peer {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn missing(bins: &[&str]) -> Option<String> {
    bins.iter()
        .find(|b| !Path::new(&format!("/usr/bin/{b}")).exists())
        .map(|b| format!("/usr/bin/{b} not installed"))
}

/// Waits until a connect to the socket at `path` succeeds: the file exists
/// from bind(), but connects are refused until the server's listen().
fn wait_socket(path: &Path) -> bool {
    wait_for(10, || {
        std::os::unix::net::UnixStream::connect(path)
            .ok()
            .map(|_| ())
    })
    .is_some()
}

fn wayland(who: Who) {
    let rt = runtime_dir(who, "wayland");
    let mut cmd = as_who(who, "/usr/bin/weston");
    cmd.args([
        "--backend=headless-backend.so",
        "--socket=wayland-7",
        "--idle-time=0",
    ])
    .env_clear()
    .env("XDG_RUNTIME_DIR", &rt)
    .env("HOME", home(who))
    .stdout(Stdio::null())
    .stderr(Stdio::null());
    let _weston = Peer(cmd.spawn().expect("start weston"));
    assert!(
        wait_socket(&rt.join("wayland-7")),
        "weston did not create its socket"
    );
    let env = [("WAYLAND_DISPLAY", "wayland-7")];
    let out = run(
        porthole(
            who,
            &rt,
            &[
                "run",
                "--socket=wayland",
                APP_ID,
                "--",
                "/bin/sh",
                "-c",
                "wayland-info && stat -c inode=%i \"$XDG_RUNTIME_DIR/$WAYLAND_DISPLAY\"",
            ],
            &env,
        ),
        Stdio::null(),
        30,
    );
    assert_eq!(
        out.code,
        Some(0),
        "[{}] wayland-info inside: {}",
        who.label(),
        out.stderr
    );
    assert!(out.stdout.contains("wl_compositor"), "{}", out.stdout);
    // Weston 10 offers no wp_security_context_v1: the launcher falls back to
    // binding weston's own socket, and leaves no listener of its own.
    let host_inode = std::fs::metadata(rt.join("wayland-7")).unwrap().ino();
    assert!(
        out.stdout.contains(&format!("\ninode={host_inode}\n")),
        "[{}] the sandbox's socket is not weston's (inode {host_inode}): {}",
        who.label(),
        out.stdout
    );
    let listeners: Vec<_> = std::fs::read_dir(rt.join("porthole/wayland"))
        .map(|d| d.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    assert!(listeners.is_empty(), "{listeners:?}");
    // Without the permission: no socket, no variable, the client fails.
    let script = "test ! -e \"$XDG_RUNTIME_DIR/wayland-0\" && test ! -e \"$XDG_RUNTIME_DIR/wayland-7\" && test -z \"$WAYLAND_DISPLAY\" && ! wayland-info >/dev/null 2>&1 && echo absent";
    let out = run(
        porthole(
            who,
            &rt,
            &["run", APP_ID, "--", "/bin/sh", "-c", script],
            &env,
        ),
        Stdio::null(),
        30,
    );
    assert_eq!(
        out.stdout.trim(),
        "absent",
        "[{}] {}",
        who.label(),
        out.stderr
    );
}

#[test]
fn wayland_as_root() {
    if skip("wayland", Who::Root) {
        return;
    }
    if let Some(r) = missing(&["weston", "wayland-info"]) {
        report_skip(&format!("wayland: {r}"));
        return;
    }
    wayland(Who::Root);
}

#[test]
fn wayland_as_user() {
    if skip("wayland", Who::User) {
        return;
    }
    if let Some(r) = missing(&["weston", "wayland-info"]) {
        report_skip(&format!("wayland: {r}"));
        return;
    }
    wayland(Who::User);
}

fn pulse(who: Who) {
    let rt = runtime_dir(who, "pulse");
    let sock: PathBuf = rt.join("pa.sock");
    let mut cmd = as_who(who, "/usr/bin/pulseaudio");
    cmd.args([
        "-n",
        "--daemonize=no",
        "--exit-idle-time=-1",
        "--use-pid-file=no",
        &format!(
            "--load=module-native-protocol-unix socket={} auth-anonymous=1",
            sock.display()
        ),
        "--load=module-null-sink",
    ])
    .env_clear()
    .env("XDG_RUNTIME_DIR", &rt)
    .env("HOME", &rt)
    .stdout(Stdio::null())
    .stderr(Stdio::null());
    let _pa = Peer(cmd.spawn().expect("start pulseaudio"));
    assert!(wait_socket(&sock), "pulseaudio did not create its socket");
    let server = format!("unix:{}", sock.display());
    let env = [("PULSE_SERVER", server.as_str())];
    let out = run(
        porthole(
            who,
            &rt,
            &[
                "run",
                "--socket=pulseaudio",
                APP_ID,
                "--",
                "/usr/bin/pactl",
                "info",
            ],
            &env,
        ),
        Stdio::null(),
        30,
    );
    assert_eq!(
        out.code,
        Some(0),
        "[{}] pactl inside: {}",
        who.label(),
        out.stderr
    );
    assert!(
        out.stdout.contains("Server Name: pulseaudio"),
        "{}",
        out.stdout
    );
    let script = "test ! -e \"$XDG_RUNTIME_DIR/pulse/native\" && test -z \"$PULSE_SERVER\" && ! pactl info >/dev/null 2>&1 && echo absent";
    let out = run(
        porthole(
            who,
            &rt,
            &["run", APP_ID, "--", "/bin/sh", "-c", script],
            &env,
        ),
        Stdio::null(),
        30,
    );
    assert_eq!(
        out.stdout.trim(),
        "absent",
        "[{}] {}",
        who.label(),
        out.stderr
    );
}

#[test]
fn pulseaudio_as_root() {
    if skip("pulseaudio", Who::Root) {
        return;
    }
    if let Some(r) = missing(&["pulseaudio", "pactl"]) {
        report_skip(&format!("pulseaudio: {r}"));
        return;
    }
    pulse(Who::Root);
}

#[test]
fn pulseaudio_as_user() {
    if skip("pulseaudio", Who::User) {
        return;
    }
    if let Some(r) = missing(&["pulseaudio", "pactl"]) {
        report_skip(&format!("pulseaudio: {r}"));
        return;
    }
    pulse(Who::User);
}
