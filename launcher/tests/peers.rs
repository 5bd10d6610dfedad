//! Real peers (DESIGN.md "Real peers"): a headless weston and a PulseAudio
//! daemon with a null sink, started by PID with a private XDG_RUNTIME_DIR and
//! stopped on drop. With the permission, `wayland-info` / `pactl info` work
//! inside the sandbox; without it, the socket does not exist inside.

mod common;

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
                "/usr/bin/wayland-info",
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

/// A compositor that offers wp_security_context_v1 (weston 10 does not, so
/// a small fake one): the app's socket is our registered listener, not the
/// host's, and the compositor learns engine, app id and instance id.
#[test]
fn wayland_security_context_with_fake_compositor() {
    use std::io::{IoSliceMut, Read, Write};
    use std::os::fd::{AsRawFd, OwnedFd};
    use std::os::unix::fs::MetadataExt;
    use std::os::unix::net::UnixListener;
    let who = Who::Root;
    if skip("wayland_security_context", who) {
        return;
    }
    fn msg(object: u32, opcode: u32, args: &[u8]) -> Vec<u8> {
        let mut v = object.to_ne_bytes().to_vec();
        v.extend((((8 + args.len()) as u32) << 16 | opcode).to_ne_bytes());
        v.extend(args);
        v
    }
    fn wstr(s: &str) -> Vec<u8> {
        let mut v = ((s.len() + 1) as u32).to_ne_bytes().to_vec();
        v.extend(s.as_bytes());
        v.push(0);
        while v.len() & 3 != 0 {
            v.push(0);
        }
        v
    }
    let rt = runtime_dir(who, "wlsc");
    let display = rt.join("wayland-fake");
    let _ = std::fs::remove_file(&display);
    let server = UnixListener::bind(&display).unwrap();
    let fake = std::thread::spawn(move || {
        let (mut s, _) = server.accept().unwrap();
        let mut strings = Vec::new();
        let mut kept: Vec<OwnedFd> = Vec::new();
        loop {
            let mut header = [0u8; 8];
            let mut cbuf = nix::cmsg_space!([std::os::fd::RawFd; 4]);
            let n = {
                let mut iov = [IoSliceMut::new(&mut header)];
                let Ok(m) = nix::sys::socket::recvmsg::<()>(
                    s.as_raw_fd(),
                    &mut iov,
                    Some(&mut cbuf),
                    nix::sys::socket::MsgFlags::MSG_WAITALL,
                ) else {
                    break;
                };
                for c in m.cmsgs().unwrap() {
                    if let nix::sys::socket::ControlMessageOwned::ScmRights(fds) = c {
                        // SAFETY: the kernel just installed these fds for us.
                        kept.extend(fds.into_iter().map(|fd| unsafe {
                            <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd)
                        }));
                    }
                }
                m.bytes
            };
            if n == 0 {
                break;
            }
            let object = u32::from_ne_bytes(header[0..4].try_into().unwrap());
            let second = u32::from_ne_bytes(header[4..8].try_into().unwrap());
            let mut args = vec![0u8; (second >> 16) as usize - 8];
            s.read_exact(&mut args).unwrap();
            let opcode = second & 0xffff;
            match (object, opcode) {
                (1, 1) => {
                    let mut a = 7u32.to_ne_bytes().to_vec();
                    a.extend(wstr("wp_security_context_manager_v1"));
                    a.extend(1u32.to_ne_bytes());
                    s.write_all(&msg(2, 0, &a)).unwrap();
                }
                (1, 0) => s
                    .write_all(&msg(
                        u32::from_ne_bytes(args[0..4].try_into().unwrap()),
                        0,
                        &0u32.to_ne_bytes(),
                    ))
                    .unwrap(),
                (5, 1..=3) => {
                    let len = u32::from_ne_bytes(args[0..4].try_into().unwrap()) as usize;
                    strings.push(String::from_utf8_lossy(&args[4..4 + len - 1]).into_owned());
                }
                _ => {}
            }
        }
        (strings, kept)
    });
    let s = stage();
    let m = marker("wlsc", who);
    let display_s = display.to_str().unwrap().to_owned();
    let out = run(
        porthole(
            who,
            &rt,
            &[
                "run",
                "--socket=wayland",
                "--app-dir",
                s.app_dir.to_str().unwrap(),
                APP_ID,
                "--",
                "porthole-probe",
                "stat",
                "/run/user/0/wayland-0",
                &m,
            ],
            &[("WAYLAND_DISPLAY", &display_s)],
        ),
        Stdio::null(),
        30,
    );
    let (strings, kept) = fake.join().unwrap();
    let r = results(&out.stdout);
    assert_eq!(result_of(&r, "STAT"), "OK", "{}", out.stderr);
    let inside = r["STAT"]["ino"].as_u64().unwrap();
    let host_display = std::fs::metadata(&display).unwrap().ino();
    assert_ne!(
        inside, host_display,
        "the sandbox got the compositor's own socket"
    );
    assert_eq!(
        strings,
        vec![
            "org.porthole".to_string(),
            APP_ID.to_string(),
            strings[2].clone()
        ]
    );
    assert!(
        strings[2].parse::<u32>().is_ok(),
        "instance id {:?}",
        strings[2]
    );
    assert_eq!(kept.len(), 2, "listen_fd and close_fd");
    // The listener's file is gone with the instance.
    let leftover: Vec<_> = std::fs::read_dir(rt.join("porthole/wayland"))
        .map(|d| d.flatten().collect())
        .unwrap_or_default();
    assert!(leftover.is_empty(), "{leftover:?}");
    assert_no_leftovers(&m);
}
