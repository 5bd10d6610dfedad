//! The instance's systemd scope, against a real systemd user manager.
//!
//! This host does not boot with systemd, so the test starts
//! `systemd --user` itself: in a private mount namespace whose /run carries
//! the `/run/systemd/system` marker that systemd checks for, in a unified
//! (v2) cgroup delegated to the manager's user, with the test's private
//! XDG_RUNTIME_DIR. The manager is real; only its surroundings are made for
//! it. `porthole run` then finds `$XDG_RUNTIME_DIR/systemd/private` and
//! must put the sandbox in a transient `app-porthole-APPID-INSTANCE.scope`.

mod common;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use common::*;

const SYSTEMD: &str = "/lib/systemd/systemd";

/// The unified hierarchy's mount: /sys/fs/cgroup on unified hosts,
/// /sys/fs/cgroup/unified on hybrid ones such as this.
fn v2_mount() -> Option<PathBuf> {
    ["/sys/fs/cgroup/unified", "/sys/fs/cgroup"]
        .into_iter()
        .map(PathBuf::from)
        .find(|p| {
            p.join("cgroup.procs").exists()
                && !p.join("pids").exists()
                && !p.join("unified").exists()
        })
}

/// Removes a cgroup tree bottom-up (rmdir works only on empty leaves).
fn remove_cgroup_tree(dir: &Path) {
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd.flatten() {
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                remove_cgroup_tree(&e.path());
            }
        }
    }
    let _ = std::fs::remove_dir(dir);
}

/// A systemd user manager for `who` with `rt` as its runtime dir.
struct Manager {
    proc: Option<Proc>,
    cgroup: PathBuf,
}

impl Drop for Manager {
    fn drop(&mut self) {
        drop(self.proc.take());
        // Services the manager started on demand (the session bus and
        // pulseaudio through socket activation) outlive it: end everything
        // in its delegated cgroup, which holds only what this test started.
        let _ = std::fs::write(self.cgroup.join("cgroup.kill"), "1");
        // The cgroups empty out once the processes are gone; on a hybrid
        // host a manager of root's also mirrors its tree in the v1
        // name=systemd hierarchy.
        let v1 = self
            .cgroup
            .file_name()
            .map(|n| Path::new("/sys/fs/cgroup/systemd").join(n));
        for _ in 0..200 {
            remove_cgroup_tree(&self.cgroup);
            if let Some(v1) = &v1 {
                remove_cgroup_tree(v1);
            }
            if !self.cgroup.exists() && !v1.as_ref().is_some_and(|d| d.exists()) {
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

fn start_manager(who: Who, rt: &Path) -> Result<Manager, String> {
    let v2 = v2_mount().ok_or("no unified cgroup hierarchy")?;
    let cgroup = v2.join(format!(
        "porthole-systemd-test-{}-{}",
        std::process::id(),
        who.label()
    ));
    std::fs::create_dir_all(&cgroup).map_err(|e| format!("mkdir {}: {e}", cgroup.display()))?;
    let (uid, gid) = match who {
        Who::Root => (0, 0),
        Who::User => {
            let (u, g, _) = user_ids().unwrap();
            (u, g)
        }
    };
    // Delegation: the manager's user owns the directory and its files.
    for entry in std::iter::once(cgroup.clone()).chain(
        std::fs::read_dir(&cgroup)
            .map_err(|e| e.to_string())?
            .flatten()
            .map(|e| e.path()),
    ) {
        nix::unistd::chown(&entry, Some(uid.into()), Some(gid.into()))
            .map_err(|e| format!("chown {}: {e}", entry.display()))?;
    }
    let setpriv = match who {
        Who::Root => String::new(),
        Who::User => {
            format!("/usr/bin/setpriv --reuid={TEST_USER} --regid={TEST_USER} --init-groups --")
        }
    };
    let script = format!(
        "set -e; mount --make-rprivate /; mount -t tmpfs -o mode=755 porthole-test-run /run; \
         mkdir -p /run/systemd/system; echo $$ > {procs}; \
         exec {setpriv} /usr/bin/env -i HOME={home} XDG_RUNTIME_DIR={rt} PATH=/usr/bin:/bin \
         SYSTEMD_LOG_TARGET=console {SYSTEMD} --user",
        procs = cgroup.join("cgroup.procs").display(),
        home = home(who).display(),
        rt = rt.display(),
    );
    let mut cmd = Command::new("/usr/bin/unshare");
    cmd.args(["-m", "/bin/sh", "-c", &script])
        .env_clear()
        .env("PATH", "/usr/bin:/bin")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
    let mut child = cmd
        .spawn()
        .map_err(|e| format!("start systemd --user: {e}"))?;
    let stderr = child.stderr.take().unwrap();
    let log = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
    let log2 = log.clone();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            log2.lock().unwrap().push_str(&(line + "\n"));
        }
    });
    let manager = Manager {
        proc: Some(Proc(child)),
        cgroup,
    };
    let private = rt.join("systemd/private");
    let up = wait_for(20, || {
        std::os::unix::net::UnixStream::connect(&private)
            .ok()
            .map(|_| ())
    });
    if up.is_none() {
        return Err(format!(
            "systemd --user did not listen on {}: {}",
            private.display(),
            log.lock().unwrap()
        ));
    }
    Ok(manager)
}

/// `systemctl --user ARGS` against the manager at `rt`, as `who`.
fn systemctl(who: Who, rt: &Path, args: &[&str]) -> String {
    let out = as_who(who, "/usr/bin/systemctl")
        .arg("--user")
        .args(args)
        .env_clear()
        .env("PATH", "/usr/bin:/bin")
        .env("XDG_RUNTIME_DIR", rt)
        .stdin(Stdio::null())
        .output()
        .expect("run systemctl");
    if !out.status.success() {
        eprintln!(
            "systemctl --user {args:?}: {}: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn scopes(who: Who, rt: &Path) -> Vec<String> {
    systemctl(
        who,
        rt,
        &[
            "list-units",
            "--type=scope",
            "--all",
            "--plain",
            "--no-legend",
            "app-porthole-*",
        ],
    )
    .lines()
    .filter_map(|l| l.split_whitespace().next().map(str::to_owned))
    .collect()
}

/// Makes `cmd` move itself into the cgroup `dir` before it execs.
fn start_in_cgroup(cmd: &mut Command, dir: &Path) {
    let procs = std::ffi::CString::new(
        dir.join("cgroup.procs")
            .into_os_string()
            .into_encoded_bytes(),
    )
    .unwrap();
    // SAFETY: the hook only calls open/write/close (async-signal-safe) on
    // a string made before fork; writing "0" moves the writer itself.
    unsafe {
        std::os::unix::process::CommandExt::pre_exec(cmd, move || {
            let fd = libc::open(procs.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC);
            if fd < 0 || libc::write(fd, b"0".as_ptr().cast(), 1) != 1 {
                return Err(std::io::Error::last_os_error());
            }
            libc::close(fd);
            Ok(())
        });
    }
}

fn scope(who: Who) {
    let l = who.label();
    let rt = runtime_dir(who, "systemd");
    // A host that cannot run a user manager at all (no unified hierarchy
    // to delegate, systemd refusing the surroundings) skips, saying why;
    // everything after the manager listens is asserted.
    let manager = match start_manager(who, &rt) {
        Ok(m) => m,
        Err(e) => {
            report_skip(&format!("systemd_scope [{l}]: {e}"));
            return;
        }
    };
    let mut cmd = porthole(
        who,
        &rt,
        &[
            "run",
            APP_ID,
            "--",
            "/bin/sh",
            "-c",
            "echo started; read x || true",
        ],
        &[("RUST_LOG", "porthole_launcher=debug")],
    );
    // As on a desktop, porthole starts from a cgroup inside the manager's
    // tree (a terminal's scope there): systemd may move a process only
    // where its user may write the common ancestor's cgroup.procs.
    let terminal = manager.cgroup.join("terminal");
    std::fs::create_dir_all(&terminal).unwrap();
    let (uid, gid) = match who {
        Who::Root => (0, 0),
        Who::User => {
            let (u, g, _) = user_ids().unwrap();
            (u, g)
        }
    };
    for p in [terminal.clone(), terminal.join("cgroup.procs")] {
        nix::unistd::chown(&p, Some(uid.into()), Some(gid.into())).unwrap();
    }
    start_in_cgroup(&mut cmd, &terminal);
    cmd.stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut app = Proc(cmd.spawn().unwrap());
    let mut out = BufReader::new(app.0.stdout.take().unwrap());
    let mut line = String::new();
    out.read_line(&mut line).unwrap();
    assert_eq!(line.trim(), "started", "[{l}] the app did not start");

    // While the app runs: one scope, named for the app, active, holding
    // the sandbox (its processes see our /.flatpak-info as their root's).
    let units = scopes(who, &rt);
    if units.len() != 1 {
        drop(app.0.stdin.take());
        let mut stderr = String::new();
        let _ = std::io::Read::read_to_string(&mut app.0.stderr.take().unwrap(), &mut stderr);
        panic!("[{l}] scopes {units:?}; porthole said: {stderr}");
    }
    let unit = &units[0];
    assert!(
        unit.starts_with(&format!("app-porthole-{APP_ID}-")) && unit.ends_with(".scope"),
        "[{l}] {unit}"
    );
    let show = systemctl(
        who,
        &rt,
        &["show", "-p", "ActiveState", "-p", "ControlGroup", unit],
    );
    assert!(show.contains("ActiveState=active"), "[{l}] {show}");
    let cg = show
        .lines()
        .find_map(|l| l.strip_prefix("ControlGroup="))
        .unwrap_or_default()
        .to_owned();
    let procs = std::fs::read_to_string(
        v2_mount()
            .unwrap()
            .join(cg.trim_start_matches('/'))
            .join("cgroup.procs"),
    )
    .unwrap_or_default();
    let sandboxed = procs.split_whitespace().any(|pid| {
        std::fs::read_to_string(format!("/proc/{pid}/root/.flatpak-info"))
            .is_ok_and(|info| info.contains(&format!("name={APP_ID}")))
    });
    assert!(sandboxed, "[{l}] scope {cg} holds {procs:?}");

    // `porthole enter` joins the scope too: inside the instance's cgroup
    // namespace (rooted at the scope) its command sees itself at the root.
    let ps = run(
        porthole(who, &rt, &["ps", "--json"], &[]),
        Stdio::null(),
        10,
    );
    let v: serde_json::Value = serde_json::from_str(&ps.stdout).unwrap_or_default();
    let id = v[0]["instance"].as_str().unwrap_or_default().to_owned();
    let mut enter = porthole(
        who,
        &rt,
        &["enter", &id, "--", "/bin/cat", "/proc/self/cgroup"],
        &[],
    );
    start_in_cgroup(&mut enter, &terminal);
    let entered = run(enter, Stdio::null(), 10);
    assert!(
        entered.stdout.lines().any(|l| l == "0::/"),
        "[{l}] enter {id}: {:?} {} {}",
        entered.code,
        entered.stdout,
        entered.stderr
    );

    // The app ends: porthole exits 0, said nothing, and the scope is gone.
    drop(app.0.stdin.take());
    let status = wait_for(20, || app.0.try_wait().ok().flatten()).expect("porthole exits");
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut app.0.stderr.take().unwrap(), &mut stderr).unwrap();
    assert!(status.success(), "[{l}] {status}: {stderr}");
    assert!(
        !stderr.contains("scope") || stderr.contains("in its systemd scope"),
        "[{l}] {stderr}"
    );
    let gone = wait_for(5, || scopes(who, &rt).is_empty().then_some(()));
    assert!(gone.is_some(), "[{l}] scope left: {:?}", scopes(who, &rt));
    drop(manager);
}

fn skip_systemd(test: &str, who: Who) -> bool {
    if skip(test, who) {
        return true;
    }
    for p in [SYSTEMD, "/usr/bin/systemctl", "/usr/bin/unshare"] {
        if !Path::new(p).exists() {
            report_skip(&format!("{test} [{}]: {p} missing", who.label()));
            return true;
        }
    }
    if v2_mount().is_none() {
        report_skip(&format!(
            "{test} [{}]: no unified cgroup hierarchy",
            who.label()
        ));
        return true;
    }
    false
}

as_root_and_user!(the_sandbox_runs_in_a_systemd_scope_as_root, the_sandbox_runs_in_a_systemd_scope_as_user: skip_systemd("systemd_scope") => scope);

/// A socket at `rt`'s manager place that accepts and then trickles a byte
/// a second, never finishing an answer (a wedged manager).
fn wedged_manager(rt: &Path) {
    std::fs::create_dir_all(rt.join("systemd")).unwrap();
    let sock = rt.join("systemd/private");
    let _ = std::fs::remove_file(&sock);
    let listener = std::os::unix::net::UnixListener::bind(&sock).unwrap();
    std::thread::spawn(move || {
        for conn in listener.incoming().flatten() {
            std::thread::spawn(move || {
                let mut conn = conn;
                for _ in 0..60 {
                    if std::io::Write::write_all(&mut conn, b"O").is_err() {
                        break;
                    }
                    std::thread::sleep(Duration::from_secs(1));
                }
            });
        }
    });
}

/// A wedged manager: the launch goes on after the launcher's deadline
/// (5 s) without a scope, and the app runs.
#[test]
fn a_wedged_manager_does_not_hold_the_launch() {
    if skip("wedged_manager", Who::Root) {
        return;
    }
    let rt = runtime_dir(Who::Root, "systemd-wedged");
    wedged_manager(&rt);
    let started = std::time::Instant::now();
    let out = run(
        porthole(
            Who::Root,
            &rt,
            &["run", APP_ID, "--", "/bin/sh", "-c", "echo ran"],
            &[("RUST_LOG", "porthole_launcher=info")],
        ),
        Stdio::null(),
        30,
    );
    let took = started.elapsed();
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    assert_eq!(out.stdout.trim(), "ran");
    assert!(
        took < Duration::from_secs(10),
        "took {took:?}: {}",
        out.stderr
    );
    assert!(
        out.stderr.contains("no systemd scope"),
        "stderr: {}",
        out.stderr
    );
}

/// Issue 9: with no scope after all (a wedged manager), the instance still
/// gets a cgroup of its own, the next place in the launcher's order: seen
/// from the host, its pid 1 is in every directory its record names, each
/// named for the instance, and they are gone after it ends.
#[test]
fn without_a_scope_the_instance_still_gets_its_cgroup() {
    if skip("wedged_manager_cgroup", Who::Root) {
        return;
    }
    let rt = runtime_dir(Who::Root, "systemd-wedged-cg");
    wedged_manager(&rt);
    let m = marker("wedged-cg", Who::Root);
    let sleeper = Sleeper::start(Who::Root, &rt, &[], &m);
    let check = (|| -> Result<Vec<String>, String> {
        // The record appears after the scope's deadline.
        let rec = wait_for(15, || sleeper.record(Who::Root, &rt)).ok_or("no instance")?;
        let id = rec["instance"].as_str().ok_or("no id")?.to_owned();
        let pid = rec["pid"].as_i64().ok_or("no pid")?;
        let dirs: Vec<String> = rec["cgroups"]
            .as_array()
            .ok_or("no cgroups")?
            .iter()
            .filter_map(|c| c.as_str().map(str::to_owned))
            .collect();
        if dirs.is_empty() {
            return Err("no cgroup of its own".into());
        }
        for d in &dirs {
            if !d.ends_with(&format!("/porthole-{id}")) {
                return Err(format!("{d} is not the instance's"));
            }
            let procs = std::fs::read_to_string(format!("{d}/cgroup.procs"))
                .map_err(|e| format!("{d}: {e}"))?;
            if !procs.lines().any(|l| l == pid.to_string()) {
                return Err(format!("pid 1 ({pid}) is not in {d}: {procs}"));
            }
        }
        Ok(dirs)
    })();
    sleeper.terminate();
    assert_no_leftovers(&m);
    let dirs = check.unwrap();
    for d in dirs {
        let gone = wait_for(3, || (!Path::new(&d).exists()).then_some(()));
        assert!(gone.is_some(), "cgroup {d} left behind");
    }
}
