//! Test harness for the launcher: stages the binaries where the test user can
//! run them, runs `porthole` as root or as `porthole-test` with a hard
//! timeout, parses the probe's JSON lines, and checks that nothing is left
//! running. Tests that need root or the test user skip (with a printed
//! reason) when those are missing, and fail naming them under CI.

#![allow(dead_code)]

use std::collections::HashMap;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

pub mod bus;

pub const TEST_USER: &str = "porthole-test";
pub const APP_ID: &str = "org.porthole.Probe";
/// Owner of the setuid copy of the probe (P18): nobody.
pub const SUID_OWNER: u32 = 65534;

/// Who runs `porthole`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Who {
    Root,
    User,
}

impl Who {
    pub fn label(self) -> &'static str {
        match self {
            Who::Root => "root",
            Who::User => "user",
        }
    }
}

pub struct Stage {
    pub dir: PathBuf,
    pub porthole: PathBuf,
    pub probe: PathBuf,
    pub app_dir: PathBuf,
}

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

pub fn user_ids() -> Option<(u32, u32, PathBuf)> {
    let u = nix::unistd::User::from_name(TEST_USER).ok().flatten()?;
    Some((u.uid.as_raw(), u.gid.as_raw(), u.dir))
}

/// Why a test for `who` cannot run here, if it cannot.
pub fn skip_reason(who: Who) -> Option<String> {
    if !is_root() {
        return Some("needs root (to run as root, and to switch to the test user)".into());
    }
    if who == Who::User && user_ids().is_none() {
        return Some(format!(
            "test user {TEST_USER} does not exist (useradd -m {TEST_USER})"
        ));
    }
    if !Path::new("/usr/bin/setpriv").exists() {
        return Some("setpriv (util-linux) missing".into());
    }
    None
}

/// Reports a check that cannot run here: under CI (`CI=true`) a failure
/// naming what is missing, elsewhere `SKIPPED msg` on the real stderr, so a
/// skip is visible in every run and never looks like a silent pass.
pub fn report_skip(msg: &str) {
    porthole_tests::skipped(msg);
}

/// Defines two tests, `ROOT` and `USER`, that run `BODY(who)` as root and
/// as the unprivileged user, each unless `SKIP(LABEL, who)` says (and
/// reports) that it cannot run on this machine.
#[macro_export]
macro_rules! as_root_and_user {
    ($root:ident, $user:ident: $skip:ident($label:literal) => $body:ident) => {
        #[test]
        fn $root() {
            if !$skip($label, Who::Root) {
                $body(Who::Root);
            }
        }

        #[test]
        fn $user() {
            if !$skip($label, Who::User) {
                $body(Who::User);
            }
        }
    };
}

/// Prints the skip reason and returns true when the test must skip.
pub fn skip(test: &str, who: Who) -> bool {
    match skip_reason(who) {
        Some(r) => {
            report_skip(&format!("{test} [{}]: {r}", who.label()));
            true
        }
        None => false,
    }
}

/// Copies the binaries once per test process into a world-readable dir.
pub fn stage() -> &'static Stage {
    static STAGE: OnceLock<Stage> = OnceLock::new();
    STAGE.get_or_init(|| {
        // Stages of earlier test processes that have ended are removed here
        // (a test process cannot run code at exit).
        if let Ok(rd) = std::fs::read_dir(std::env::temp_dir()) {
            for e in rd.flatten() {
                let name = e.file_name().to_string_lossy().into_owned();
                if let Some(pid) = name
                    .strip_prefix("porthole-launcher-test-")
                    .and_then(|p| p.parse::<i32>().ok())
                    && !std::path::Path::new(&format!("/proc/{pid}")).exists()
                {
                    let _ = std::fs::remove_dir_all(e.path());
                }
            }
        }
        let dir =
            std::env::temp_dir().join(format!("porthole-launcher-test-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("app/bin")).unwrap();
        let porthole = dir.join("porthole");
        let probe = dir.join("app/bin/porthole-probe");
        // PORTHOLE_TEST_PORTHOLE: another build of porthole under test (the
        // static one of scripts/build-static, which scripts/test checks too).
        let under_test = std::env::var_os("PORTHOLE_TEST_PORTHOLE")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_porthole")));
        stage_executable(&under_test, &porthole, None);
        stage_executable(
            Path::new(env!("CARGO_BIN_EXE_porthole-probe")),
            &probe,
            None,
        );
        for p in [&dir, &dir.join("app"), &dir.join("app/bin")] {
            std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o755)).unwrap();
        }
        // P18: a copy of the probe setuid to nobody (65534), when we are
        // root: unlike a setuid-root one, it changes the euid of root too,
        // so the check can fail for both identities. chown clears the
        // setuid bit, so it comes first.
        if is_root() {
            stage_executable(&probe, &dir.join("app/bin/suid-probe"), Some(SUID_OWNER));
        }
        Stage {
            app_dir: dir.join("app"),
            dir,
            porthole,
            probe,
        }
    })
}

/// Copies the executable `src` to `dst` (mode 0755, or setuid 04755 to
/// `setuid_owner`) so that no process can ever see it half written or open
/// for writing.
///
/// Two races made runs flaky when this was a plain `fs::copy` into place:
/// a test running in parallel could exec the file while it was still being
/// copied, and a child forked by another test thread inherits the copy's
/// writable fd until its own exec (O_CLOEXEC only closes it then), and while
/// any process holds such an fd, exec of the file fails with ETXTBSY. So
/// the bytes are written by `cp` in a child process (the writable fd never
/// exists in this multi-threaded process) under a temporary name, and the
/// finished file is renamed into place.
pub fn stage_executable(src: &Path, dst: &Path, setuid_owner: Option<u32>) {
    let tmp = dst.with_extension("staging");
    let status = Command::new("/bin/cp")
        .arg("--")
        .arg(src)
        .arg(&tmp)
        .status()
        .expect("run cp");
    assert!(
        status.success(),
        "cp {} {}: {status}",
        src.display(),
        tmp.display()
    );
    let mode = match setuid_owner {
        // chown clears the setuid bit, so it comes first.
        Some(owner) => {
            nix::unistd::chown(&tmp, Some(owner.into()), None).unwrap();
            0o4755
        }
        None => 0o755,
    };
    std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(mode)).unwrap();
    std::fs::rename(&tmp, dst).unwrap();
}

/// A private XDG_RUNTIME_DIR for `who`, owned by them.
pub fn runtime_dir(who: Who, name: &str) -> PathBuf {
    let d = stage().dir.join(format!("rt-{}-{name}", who.label()));
    let _ = std::fs::create_dir_all(&d);
    std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o700)).unwrap();
    if who == Who::User {
        let (uid, gid, _) = user_ids().unwrap();
        nix::unistd::chown(&d, Some(uid.into()), Some(gid.into())).unwrap();
    }
    d
}

pub fn home(who: Who) -> PathBuf {
    match who {
        Who::Root => PathBuf::from("/root"),
        Who::User => user_ids().unwrap().2,
    }
}

/// A `Command` running `porthole ARGS` as `who`, with a clean environment
/// plus `extra_env` (used to plant hostile variables for P24).
/// A command that runs `program` as `who` (through setpriv for the user).
pub fn as_who(who: Who, program: impl AsRef<std::ffi::OsStr>) -> Command {
    match who {
        Who::Root => Command::new(program),
        Who::User => {
            let mut c = Command::new("/usr/bin/setpriv");
            c.args([
                &format!("--reuid={TEST_USER}"),
                &format!("--regid={TEST_USER}"),
                "--init-groups",
                "--",
            ]);
            c.arg(program);
            c
        }
    }
}

/// A child started in its own process group (`process_group(0)`), killed
/// with that group and reaped on drop.
pub struct Proc(pub std::process::Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let pid = self.0.id() as i32;
        // SAFETY: signalling the process group this test created.
        unsafe { libc::kill(-pid, libc::SIGKILL) };
        let _ = self.0.wait();
    }
}

pub fn porthole(who: Who, rt: &Path, args: &[&str], extra_env: &[(&str, &str)]) -> Command {
    let mut cmd = as_who(who, &stage().porthole);
    cmd.args(args);
    cmd.env_clear();
    cmd.env("PATH", "/usr/bin:/bin");
    cmd.env("HOME", home(who));
    cmd.env("XDG_RUNTIME_DIR", rt);
    cmd.env("LANG", "C.UTF-8");
    for (k, v) in extra_env {
        cmd.env(k, v);
    }
    cmd.current_dir("/");
    // Own process group, so a timeout can kill everything we started.
    cmd.process_group(0);
    cmd
}

pub struct Output {
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

/// Runs `cmd` to the end or kills its process group after `secs`.
pub fn run(mut cmd: Command, stdin: Stdio, secs: u64) -> Output {
    cmd.stdin(stdin)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let child = cmd.spawn().expect("spawn porthole");
    let pid = child.id() as i32;
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    match rx.recv_timeout(Duration::from_secs(secs)) {
        Ok(out) => {
            let out = out.expect("wait");
            Output {
                code: out.status.code(),
                stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
                stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
            }
        }
        Err(_) => {
            // SAFETY: killing the process group we created for this command.
            unsafe { libc::kill(-pid, libc::SIGKILL) };
            panic!("porthole did not finish within {secs} s (killed)");
        }
    }
}

/// The probe's JSON lines by id.
pub fn results(stdout: &str) -> HashMap<String, serde_json::Value> {
    stdout
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter_map(|v| Some((v.get("id")?.as_str()?.to_owned(), v)))
        .collect()
}

pub fn result_of<'a>(r: &'a HashMap<String, serde_json::Value>, id: &str) -> &'a str {
    r.get(id)
        .and_then(|v| v.get("result"))
        .and_then(|v| v.as_str())
        .unwrap_or_else(|| panic!("probe printed no result for {id}"))
}

/// Live processes whose command line contains `marker` (tests put a unique
/// marker argument on the probe's command line; the monitor, pid 1 and the
/// app all carry it).
pub fn leftovers(marker: &str) -> Vec<(i32, String)> {
    let me = std::process::id() as i32;
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        if pid == me {
            continue;
        }
        let Ok(cmdline) = std::fs::read(format!("/proc/{pid}/cmdline")) else {
            continue;
        };
        let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
        if cmdline.contains(marker) && !is_zombie(pid) {
            out.push((pid, cmdline));
        }
    }
    out
}

pub fn is_zombie(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| {
            s.rsplit(')')
                .next()
                .map(|r| r.trim_start().starts_with('Z'))
                .unwrap_or(true)
        })
        .unwrap_or(true)
}

/// Polls `f` until it returns Some or `secs` pass.
pub fn wait_for<T>(secs: u64, mut f: impl FnMut() -> Option<T>) -> Option<T> {
    let end = Instant::now() + Duration::from_secs(secs);
    while Instant::now() < end {
        if let Some(v) = f() {
            return Some(v);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    None
}

/// A sandbox that stays up for the `ps`, `enter` and `kill` tests:
/// `porthole run OPTIONS --app-dir STAGE APP_ID -- porthole-probe sleep 60
/// MARKER` as `who`, in the background, in its own process group.
pub struct Sleeper {
    pub child: std::process::Child,
}

impl Sleeper {
    pub fn start(who: Who, rt: &Path, options: &[&str], marker: &str) -> Self {
        let dir = stage().app_dir.to_str().unwrap().to_owned();
        let mut args = vec!["run"];
        args.extend_from_slice(options);
        args.extend_from_slice(&["--app-dir", &dir, APP_ID, "--"]);
        args.extend_from_slice(&["porthole-probe", "sleep", "60", marker]);
        let child = porthole(who, rt, &args, &[])
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        Sleeper { child }
    }

    /// Its record in `porthole ps --json` (the only instance under `rt`),
    /// once it shows, within 10 s.
    pub fn record(&self, who: Who, rt: &Path) -> Option<serde_json::Value> {
        wait_for(10, || {
            let out = run(porthole(who, rt, &["ps", "--json"], &[]), Stdio::null(), 10);
            let v: serde_json::Value = serde_json::from_str(&out.stdout).ok()?;
            v.as_array()?.first().cloned()
        })
    }

    /// Ends it as a user would (SIGTERM to its process group: the monitor
    /// forwards it and cleans up), within 10 s, else kills the group.
    pub fn terminate(mut self) {
        // SAFETY: kill(2) takes plain integers; the group is the one
        // `porthole()` made this command lead, not yet reaped.
        unsafe { libc::kill(-(self.child.id() as i32), libc::SIGTERM) };
        if wait_for(10, || self.child.try_wait().ok().flatten()).is_none() {
            self.stop();
        }
    }

    /// Kills its whole process group, whatever happened, and reaps it.
    pub fn stop(mut self) {
        // SAFETY: kill(2) takes plain integers; the group is the one
        // `porthole()` made this command lead.
        unsafe { libc::kill(-(self.child.id() as i32), libc::SIGKILL) };
        let _reaped = self.child.wait();
    }
}

/// Ensures no process started from the stage outlives the test.
pub fn assert_no_leftovers(marker: &str) {
    let left = wait_for(3, || leftovers(marker).is_empty().then_some(()));
    assert!(
        left.is_some(),
        "processes left behind: {:?}",
        leftovers(marker)
    );
}

/// A marker unique to one test and identity.
pub fn marker(test: &str, who: Who) -> String {
    format!(
        "--marker=porthole-test-{}-{test}-{}",
        std::process::id(),
        who.label()
    )
}

/// A host directory no sandbox may reach (the target of a planted fd).
pub fn fd_canary_dir() -> PathBuf {
    let d = stage().dir.join("fd-canary");
    let _ = std::fs::create_dir_all(&d);
    std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o755)).unwrap();
    let _ = std::fs::write(d.join("host-canary"), "canary\n");
    d
}

/// Makes `cmd` start with descriptor `fd` open on the canary directory and
/// without O_CLOEXEC, as a careless caller of `porthole` would leave it.
pub fn plant_fd(cmd: &mut Command, fd: i32) {
    let dir = std::fs::File::open(fd_canary_dir()).unwrap();
    // SAFETY: between fork and exec we only call dup2, which is
    // async-signal-safe; `dir` lives in the closure, so its fd stays open.
    unsafe {
        cmd.pre_exec(move || {
            use std::os::fd::AsRawFd;
            if libc::dup2(dir.as_raw_fd(), fd) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
}
