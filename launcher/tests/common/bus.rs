//! A private session bus owned by the identity under test, and the
//! harness's stand-in service on it (the probe's `dbus-serve`): shared by
//! the D-Bus tests and the Flatpak comparison tests.

use std::io::{BufRead, BufReader};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::sync::mpsc::{Receiver, channel};
use std::time::Duration;

use super::*;

/// `program` as `who`, with a clean environment, in its own process group.
pub fn clean_as_who(who: Who, program: &Path) -> Command {
    let mut c = as_who(who, program);
    c.env_clear();
    c.env("PATH", "/usr/bin:/bin");
    c.current_dir("/");
    c.process_group(0);
    c
}

/// A private session bus owned by `who`.
pub struct Bus {
    _daemon: Proc,
    pub address: String,
}

impl Bus {
    pub fn start(who: Who, name: &str) -> Bus {
        let dir = stage().dir.join(format!("bus-{}-{name}", who.label()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700)).unwrap();
        let sock = dir.join("bus");
        let conf = dir.join("bus.conf");
        std::fs::write(
            &conf,
            format!(
                r#"<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <type>session</type>
  <listen>unix:path={}</listen>
  <auth>EXTERNAL</auth>
  <policy context="default">
    <allow send_destination="*" eavesdrop="true"/>
    <allow eavesdrop="true"/>
    <allow own="*"/>
  </policy>
</busconfig>
"#,
                sock.display()
            ),
        )
        .unwrap();
        if who == Who::User {
            let (uid, gid, _) = user_ids().unwrap();
            for p in [&dir, &conf] {
                nix::unistd::chown(p, Some(uid.into()), Some(gid.into())).unwrap();
            }
        }
        let mut cmd = clean_as_who(who, Path::new("/usr/bin/dbus-daemon"));
        cmd.arg(format!("--config-file={}", conf.display()))
            .arg("--nofork")
            .arg("--print-address")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null());
        let mut child = cmd.spawn().expect("spawn dbus-daemon");
        // The address is printed once the daemon listens; the socket file
        // alone appears at bind(), before listen(), when a connect is
        // still refused.
        let rx = lines_of(&mut child);
        let daemon = Proc(child);
        rx.recv_timeout(Duration::from_secs(10))
            .expect("dbus-daemon did not listen");
        Bus {
            _daemon: daemon,
            address: format!("unix:path={}", sock.display()),
        }
    }
}

/// Lines of a child's stdout, through a channel (reads never block a test
/// past its timeout).
pub fn lines_of(child: &mut Child) -> Receiver<String> {
    let out = child.stdout.take().unwrap();
    let (tx, rx) = channel();
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

/// Reads lines until one has `id`; all lines read so far are kept.
pub fn until(rx: &Receiver<String>, seen: &mut Vec<String>, id: &str, secs: u64) -> bool {
    let end = std::time::Instant::now() + Duration::from_secs(secs);
    let needle = format!("\"id\":\"{id}\"");
    loop {
        if seen.iter().any(|l| l.contains(&needle)) {
            return true;
        }
        let left = end.saturating_duration_since(std::time::Instant::now());
        match rx.recv_timeout(left) {
            Ok(l) => seen.push(l),
            Err(_) => return false,
        }
    }
}

/// The harness's stand-in service: the probe, on the host, owning `names`.
pub fn serve(who: Who, bus: &Bus, names: &[&str]) -> (Proc, Receiver<String>) {
    let mut cmd = clean_as_who(who, &stage().probe);
    cmd.arg("dbus-serve")
        .args(names)
        .env("DBUS_SESSION_BUS_ADDRESS", &bus.address)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    let mut child = cmd.spawn().unwrap();
    let rx = lines_of(&mut child);
    let mut seen = Vec::new();
    assert!(
        until(&rx, &mut seen, "SERVE.ready", 10),
        "service not ready: {seen:?}"
    );
    assert!(
        seen.iter().any(|l| l.contains("\"result\":\"OK\"")),
        "{seen:?}"
    );
    (Proc(child), rx)
}

/// Asks the host bus whether `name` has an owner.
pub fn has_owner(who: Who, bus: &Bus, name: &str) -> String {
    let mut cmd = clean_as_who(who, &stage().probe);
    cmd.args(["dbus-has-owner", name])
        .env("DBUS_SESSION_BUS_ADDRESS", &bus.address);
    let out = run(cmd, Stdio::null(), 10);
    result_of(&results(&out.stdout), "OWNER").to_owned()
}

/// The proxy under test, staged where the test user can run it.
pub fn proxy() -> Option<PathBuf> {
    let p = std::env::var_os("PORTHOLE_TEST_DBUS_PROXY")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/bin/xdg-dbus-proxy"));
    if !p.exists() {
        return None;
    }
    if p.starts_with("/usr") {
        return Some(p);
    }
    static STAGED: OnceLock<PathBuf> = OnceLock::new();
    Some(
        STAGED
            .get_or_init(|| {
                let staged = stage().dir.join("dbus-proxy");
                stage_executable(&p, &staged, None);
                staged
            })
            .clone(),
    )
}
