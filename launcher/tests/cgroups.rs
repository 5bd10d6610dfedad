//! --pids-max and --memory-max really hold, in whichever hierarchy has the
//! controller (on the development host: v1 pids and memory, v2 without
//! controllers); an instance without limits still gets a cgroup of its own
//! (issue 9), shown by `porthole ps`, joined by `porthole enter`, removed
//! at its end. As root, and as the test user when an administrator has
//! delegated `MOUNT/porthole/UID` (see the CI setup); otherwise skipped with
//! the reason (a failure under CI).

mod common;

use std::os::unix::ffi::OsStringExt;
use std::os::unix::fs::PermissionsExt;
use std::process::Stdio;

use common::*;

fn mount_of(controller: &str) -> Option<String> {
    let mounts = std::fs::read_to_string("/proc/self/mounts").ok()?;
    mounts.lines().find_map(|l| {
        let f: Vec<&str> = l.split_whitespace().collect();
        let v1 = f.get(2) == Some(&"cgroup") && f.get(3)?.split(',').any(|o| o == controller);
        v1.then(|| f[1].to_owned())
    })
}

/// Why limits cannot be tested for `who`, if they cannot.
fn limits_skip(who: Who, controller: &str) -> Option<String> {
    if let Some(r) = skip_reason(who) {
        return Some(r);
    }
    let v2_has = std::fs::read_to_string("/sys/fs/cgroup/cgroup.controllers")
        .map(|s| s.split_whitespace().any(|c| c == controller))
        .unwrap_or(false);
    let mount = mount_of(controller);
    if mount.is_none() && !v2_has {
        return Some(format!("no cgroup hierarchy offers {controller}"));
    }
    if who == Who::User {
        let uid = user_ids().unwrap().0;
        let delegated = format!("{}/porthole/{uid}", mount.unwrap_or_default());
        if !std::path::Path::new(&delegated).is_dir() {
            return Some(format!("no delegated cgroup {delegated} for the test user"));
        }
    }
    None
}

fn pids_max(who: Who) {
    let rt = runtime_dir(who, "pids");
    let m = marker("pids", who);
    let dir = stage().app_dir.to_str().unwrap().to_owned();
    let out = run(
        porthole(
            who,
            &rt,
            &[
                "run",
                "--pids-max=10",
                "--app-dir",
                &dir,
                APP_ID,
                "--",
                "porthole-probe",
                "spawn",
                "50",
                &m,
            ],
            &[],
        ),
        Stdio::null(),
        30,
    );
    assert!(!out.stderr.contains("cannot be enforced"), "{}", out.stderr);
    let r = results(&out.stdout);
    let started = r["CG.spawn"]["started"].as_i64().unwrap();
    // pid 1 and the probe count too: at most 8 more fit under 10.
    assert_eq!(
        result_of(&r, "CG.spawn"),
        "EAGAIN",
        "[{}] {}",
        who.label(),
        out.stdout
    );
    assert!(
        started <= 8,
        "[{}] started {started} children under pids.max=10",
        who.label()
    );
    assert_no_leftovers(&m);
}

#[test]
fn pids_max_holds_as_root() {
    match limits_skip(Who::Root, "pids") {
        Some(r) => report_skip(&format!("pids_max [root]: {r}")),
        None => pids_max(Who::Root),
    }
}

#[test]
fn pids_max_holds_as_user() {
    match limits_skip(Who::User, "pids") {
        Some(r) => report_skip(&format!("pids_max [user]: {r}")),
        None => pids_max(Who::User),
    }
}

fn memory_max(who: Who) {
    let rt = runtime_dir(who, "mem");
    let m = marker("mem", who);
    let dir = stage().app_dir.to_str().unwrap().to_owned();
    let out = run(
        porthole(
            who,
            &rt,
            &[
                "run",
                "--memory-max=64M",
                "--app-dir",
                &dir,
                APP_ID,
                "--",
                "porthole-probe",
                "alloc",
                "512",
                &m,
            ],
            &[],
        ),
        Stdio::null(),
        60,
    );
    assert!(!out.stderr.contains("cannot be enforced"), "{}", out.stderr);
    // The OOM killer ends the app inside its cgroup: SIGKILL, 128+9.
    assert_eq!(
        out.code,
        Some(137),
        "[{}] stdout {} stderr {}",
        who.label(),
        out.stdout,
        out.stderr
    );
    assert!(
        !out.stdout.contains("\"CG.alloc\""),
        "allocated 512 MiB under a 64 MiB limit"
    );
    assert_no_leftovers(&m);
}

#[test]
fn memory_max_holds_as_root() {
    match limits_skip(Who::Root, "memory") {
        Some(r) => report_skip(&format!("memory_max [root]: {r}")),
        None => memory_max(Who::Root),
    }
}

#[test]
fn memory_max_holds_as_user() {
    match limits_skip(Who::User, "memory") {
        Some(r) => report_skip(&format!("memory_max [user]: {r}")),
        None => memory_max(Who::User),
    }
}

/// From the host, the app sits in porthole-INSTANCE; the directory goes
/// away with the instance. Inside, the cgroup namespace shows "/".
#[test]
fn instance_cgroup_seen_from_host_as_root() {
    if let Some(r) = limits_skip(Who::Root, "pids") {
        report_skip(&format!("instance_cgroup [root]: {r}"));
        return;
    }
    let who = Who::Root;
    let rt = runtime_dir(who, "cgview");
    let m = marker("cgview", who);
    let dir = stage().app_dir.to_str().unwrap().to_owned();
    let mut child = porthole(
        who,
        &rt,
        &[
            "run",
            "--pids-max=50",
            "--app-dir",
            &dir,
            APP_ID,
            "--",
            "porthole-probe",
            "sleep",
            "30",
            &m,
        ],
        &[],
    )
    .stdout(Stdio::null())
    .spawn()
    .unwrap();
    let rec = wait_for(10, || {
        let out = run(
            porthole(who, &rt, &["ps", "--json"], &[]),
            Stdio::null(),
            10,
        );
        let v: serde_json::Value = serde_json::from_str(&out.stdout).ok()?;
        v.as_array()?.first().cloned()
    });
    let check = (|| -> Result<Vec<String>, String> {
        let rec = rec.ok_or("no instance")?;
        let id = rec["instance"].as_str().unwrap().to_owned();
        let pid = rec["pid"].as_i64().unwrap();
        let cg =
            std::fs::read_to_string(format!("/proc/{pid}/cgroup")).map_err(|e| e.to_string())?;
        let line = cg
            .lines()
            .find(|l| l.contains(":pids:"))
            .ok_or("no pids line")?;
        if !line.ends_with(&format!("/porthole-{id}")) {
            return Err(format!("host view: {line}"));
        }
        let dirs: Vec<String> = rec["cgroups"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap().to_owned())
            .collect();
        if dirs.is_empty() {
            return Err("no cgroups recorded".into());
        }
        Ok(dirs)
    })();
    // SAFETY: ending our own process group.
    unsafe { libc::kill(-(child.id() as i32), libc::SIGTERM) };
    let _ = child.wait();
    assert_no_leftovers(&m);
    let dirs = check.unwrap();
    for d in dirs {
        let gone = wait_for(3, || (!std::path::Path::new(&d).exists()).then_some(()));
        assert!(gone.is_some(), "cgroup {d} left behind");
    }
}

/// Review finding 7: when the clone into the namespaces fails, the
/// instance's cgroup is removed. The launcher runs in a pids cgroup of the
/// test's own with pids.max=1, so its instance cgroup is created below it
/// and the clone then fails with EAGAIN.
fn clone_failure_cleanup(who: Who) {
    let Some(mount) = mount_of("pids") else {
        report_skip(&format!(
            "clone_failure [{}]: no v1 pids hierarchy to confine the launcher in",
            who.label()
        ));
        return;
    };
    let base = match who {
        Who::Root => std::path::PathBuf::from(&mount),
        Who::User => std::path::Path::new(&mount)
            .join("porthole")
            .join(user_ids().unwrap().0.to_string()),
    };
    let parent = base.join(format!(
        "clonefail-test-{}-{}",
        std::process::id(),
        who.label()
    ));
    std::fs::create_dir(&parent).unwrap();
    std::fs::write(parent.join("pids.max"), "1").unwrap();
    if who == Who::User {
        let (uid, gid, _) = user_ids().unwrap();
        nix::unistd::chown(&parent, Some(uid.into()), Some(gid.into())).unwrap();
    }
    let rt = runtime_dir(who, "clonefail");
    let m = marker("clonefail", who);
    let dir = stage().app_dir.to_str().unwrap().to_owned();
    let mut cmd = porthole(
        who,
        &rt,
        &[
            "run",
            "--pids-max=50",
            "--app-dir",
            &dir,
            APP_ID,
            "--",
            "porthole-probe",
            "exit",
            "0",
            &m,
        ],
        &[],
    );
    let procs =
        std::ffi::CString::new(parent.join("cgroup.procs").into_os_string().into_vec()).unwrap();
    // SAFETY: between fork and exec only open/write/close, which are
    // async-signal-safe; `procs` lives in the closure.
    unsafe {
        use std::os::unix::process::CommandExt;
        cmd.pre_exec(move || {
            let fd = libc::open(procs.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC);
            if fd < 0 || libc::write(fd, b"0".as_ptr().cast(), 1) != 1 {
                return Err(std::io::Error::last_os_error());
            }
            libc::close(fd);
            Ok(())
        });
    }
    let out = run(cmd, Stdio::null(), 30);
    let left: Vec<String> = std::fs::read_dir(&parent)
        .unwrap()
        .flatten()
        .filter(|e| e.path().is_dir())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    for d in &left {
        let _ = std::fs::remove_dir(parent.join(d));
    }
    let _ = std::fs::remove_dir(&parent);
    assert_eq!(
        out.code,
        Some(125),
        "[{}] stderr {}",
        who.label(),
        out.stderr
    );
    assert!(
        out.stderr.contains("Resource temporarily unavailable"),
        "[{}] not a failed clone: {}",
        who.label(),
        out.stderr
    );
    assert!(
        left.is_empty(),
        "[{}] cgroups left behind after a failed clone: {left:?}",
        who.label()
    );
    assert_no_leftovers(&m);
}

#[test]
fn clone_failure_removes_cgroup_as_root() {
    if skip("clone_failure", Who::Root) {
        return;
    }
    clone_failure_cleanup(Who::Root);
}

#[test]
fn clone_failure_removes_cgroup_as_user() {
    if let Some(r) = limits_skip(Who::User, "pids") {
        report_skip(&format!("clone_failure [user]: {r}"));
        return;
    }
    clone_failure_cleanup(Who::User);
}

/// Review finding 10: `porthole enter` puts its command into the
/// instance's cgroup(s), and refuses to run it when it cannot (it used to
/// ignore the failure and run the command outside the limits). With
/// `options` (a limit, or none: the instance's cgroup is then the one every
/// instance gets). Inside, the cgroup namespace's root is the instance's
/// cgroup in each hierarchy it has one in, so a joined command reads "/"
/// there and a command left in the caller's cgroup reads a path above it.
fn enter_joins_cgroup(who: Who, options: &[&str]) {
    // Own runtime dir and marker per variant: they run in parallel.
    let name = if options.is_empty() {
        "enter-cg-nolimits"
    } else {
        "enter-cg"
    };
    let rt = runtime_dir(who, name);
    let m = marker(name, who);
    let sleeper = Sleeper::start(who, &rt, options, &m);
    let check = (|| -> Result<Vec<String>, String> {
        let rec = sleeper.record(who, &rt).ok_or("no instance in ps --json")?;
        let id = rec["instance"].as_str().ok_or("no id")?.to_owned();
        let cgroups = recorded_cgroups(&rec)?;
        if cgroups.is_empty() {
            return Err("no cgroup recorded".into());
        }
        let enter = || {
            run(
                porthole(
                    who,
                    &rt,
                    &["enter", &id, "--", "/bin/cat", "/proc/self/cgroup"],
                    &[],
                ),
                Stdio::null(),
                20,
            )
        };
        let out = enter();
        if out.code != Some(0) {
            return Err(format!(
                "enter failed: {:?} {} {}",
                out.code, out.stdout, out.stderr
            ));
        }
        for dir in &cgroups {
            let inside = cgroup_line(&out.stdout, dir)
                .ok_or(format!("no line for {dir} in {}", out.stdout))?;
            if inside != "/" {
                return Err(format!(
                    "enter did not join {dir}: it reads {inside:?} inside ({})",
                    out.stdout
                ));
            }
        }
        if who == Who::User {
            // The user can no longer write the instance's cgroup.procs.
            let procs = std::path::Path::new(&cgroups[0]).join("cgroup.procs");
            std::fs::set_permissions(&procs, std::fs::Permissions::from_mode(0o444))
                .map_err(|e| e.to_string())?;
            let out = enter();
            let _ = std::fs::set_permissions(&procs, std::fs::Permissions::from_mode(0o644));
            if out.code != Some(125) || !out.stderr.contains("join the instance's cgroup") {
                return Err(format!(
                    "enter ran outside the cgroup: {:?} {} {}",
                    out.code, out.stdout, out.stderr
                ));
            }
        }
        Ok(cgroups)
    })();
    // Ended as a user would, so the monitor removes the directories (a
    // killed monitor leaves them to a later launch's sweep).
    sleeper.terminate();
    assert_no_leftovers(&m);
    let dirs = check.unwrap_or_else(|e| panic!("[{}] {e}", who.label()));
    for d in dirs {
        let gone = wait_for(3, || (!std::path::Path::new(&d).exists()).then_some(()));
        assert!(gone.is_some(), "[{}] cgroup {d} left behind", who.label());
    }
}

#[test]
fn enter_joins_cgroup_as_root() {
    match limits_skip(Who::Root, "pids") {
        Some(r) => report_skip(&format!("enter_joins_cgroup [root]: {r}")),
        None => enter_joins_cgroup(Who::Root, &["--pids-max=20"]),
    }
}

#[test]
fn enter_joins_cgroup_as_user() {
    match limits_skip(Who::User, "pids") {
        Some(r) => report_skip(&format!("enter_joins_cgroup [user]: {r}")),
        None => enter_joins_cgroup(Who::User, &["--pids-max=20"]),
    }
}

#[test]
fn enter_joins_cgroup_without_limits_as_root() {
    match grouping_skip(Who::Root) {
        Some(r) => report_skip(&format!("enter_joins_cgroup_without_limits [root]: {r}")),
        None => enter_joins_cgroup(Who::Root, &[]),
    }
}

#[test]
fn enter_joins_cgroup_without_limits_as_user() {
    match grouping_skip(Who::User) {
        Some(r) => report_skip(&format!("enter_joins_cgroup_without_limits [user]: {r}")),
        None => enter_joins_cgroup(Who::User, &[]),
    }
}

/// A cgroup file system mounted on the host: (mount point, v2, the mount's
/// options, which name a v1 hierarchy's controllers).
fn cgroup_mounts() -> Vec<(String, bool, Vec<String>)> {
    let mounts = std::fs::read_to_string("/proc/self/mounts").unwrap_or_default();
    mounts
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            let v2 = match *f.get(2)? {
                "cgroup2" => true,
                "cgroup" => false,
                _ => return None,
            };
            let opts = f.get(3)?.split(',').map(str::to_owned).collect();
            Some((f[1].to_owned(), v2, opts))
        })
        .collect()
}

/// The path that `proc_cgroup` (/proc/PID/cgroup text) gives for the
/// hierarchy `dir` is in.
fn cgroup_line(proc_cgroup: &str, dir: &str) -> Option<String> {
    let (_, v2, opts) = cgroup_mounts()
        .into_iter()
        .filter(|(m, _, _)| dir.starts_with(&format!("{m}/")))
        .max_by_key(|(m, _, _)| m.len())?;
    proc_cgroup.lines().find_map(|l| {
        let mut parts = l.splitn(3, ':');
        let (_, ctrls, path) = (parts.next()?, parts.next()?, parts.next()?);
        let ours = if v2 {
            ctrls.is_empty()
        } else {
            !ctrls.is_empty() && ctrls.split(',').all(|c| opts.iter().any(|o| o == c))
        };
        ours.then(|| path.to_owned())
    })
}

/// The path of `dir` inside its hierarchy, as /proc/PID/cgroup shows it.
fn path_in_hierarchy(dir: &str) -> Option<String> {
    let mount = cgroup_mounts()
        .into_iter()
        .map(|(m, _, _)| m)
        .filter(|m| dir.starts_with(&format!("{m}/")))
        .max_by_key(String::len)?;
    Some(dir[mount.len()..].to_owned())
}

fn recorded_cgroups(rec: &serde_json::Value) -> Result<Vec<String>, String> {
    Ok(rec["cgroups"]
        .as_array()
        .ok_or("no cgroups in the record")?
        .iter()
        .filter_map(|c| c.as_str().map(str::to_owned))
        .collect())
}

/// The delegated `MOUNT/porthole/UID` directories of the v1 hierarchies
/// an instance without limits is put in (pids, memory), where they exist.
fn delegated_v1(uid: u32) -> Vec<String> {
    ["pids", "memory"]
        .iter()
        .filter_map(|c| mount_of(c))
        .map(|m| format!("{m}/porthole/{uid}"))
        .filter(|d| std::path::Path::new(d).is_dir())
        .collect()
}

/// A v2 place the test user may create cgroups in: the delegated
/// `MOUNT/porthole/UID`, or the v2 cgroup the launcher starts in (ours) when
/// it is theirs.
fn user_v2_place(uid: u32) -> bool {
    use std::os::unix::fs::MetadataExt;
    let Some((mount, _, _)) = cgroup_mounts().into_iter().find(|(_, v2, _)| *v2) else {
        return false;
    };
    let own = std::fs::read_to_string("/proc/self/cgroup").unwrap_or_default();
    let own_dir = own
        .lines()
        .find_map(|l| l.strip_prefix("0::"))
        .map(|p| format!("{mount}{}", p.trim_end_matches('/')));
    std::path::Path::new(&format!("{mount}/porthole/{uid}")).is_dir()
        || own_dir.is_some_and(|d| std::fs::metadata(d).is_ok_and(|m| m.uid() == uid))
}

/// Why an instance without limits cannot be checked for its own cgroup as
/// `who`, if it cannot: root may create cgroups anywhere; the test user
/// needs a delegated place (scripts/install-deps makes the v1 ones). Under
/// CI a missing delegation fails the test (report_skip).
fn grouping_skip(who: Who) -> Option<String> {
    if let Some(r) = skip_reason(who) {
        return Some(r);
    }
    if cgroup_mounts().is_empty() {
        return Some("no cgroup file system mounted".into());
    }
    if who == Who::User {
        let uid = user_ids().unwrap().0;
        if !user_v2_place(uid) && delegated_v1(uid).is_empty() {
            return Some(format!(
                "no delegated cgroup for the test user (MOUNT/porthole/{uid} in the v2, pids or memory hierarchy; scripts/install-deps makes them)"
            ));
        }
    }
    None
}

/// Issue 9: an instance started without `--pids-max`/`--memory-max` still
/// gets a cgroup of its own. Seen from the host, its pid 1 and its app are
/// in `porthole-INSTANCE` in each hierarchy the record names, not in the
/// caller's cgroup (where the monitor stays); `porthole ps` shows the
/// directories; they are gone once the instance has ended. As the test user
/// with no v2 place, the directories are the delegated v1 ones.
fn cgroup_without_limits(who: Who) {
    let rt = runtime_dir(who, "nolimits");
    let m = marker("nolimits", who);
    let sleeper = Sleeper::start(who, &rt, &[], &m);
    let check = (|| -> Result<Vec<String>, String> {
        let rec = sleeper.record(who, &rt).ok_or("no instance in ps --json")?;
        let id = rec["instance"].as_str().ok_or("no id")?.to_owned();
        let pid = rec["pid"].as_i64().ok_or("no pid")?;
        let monitor = rec["monitor_pid"].as_i64().ok_or("no monitor pid")?;
        let dirs = recorded_cgroups(&rec)?;
        if dirs.is_empty() {
            return Err("the instance has no cgroup of its own".into());
        }
        if who == Who::User {
            let uid = user_ids().unwrap().0;
            if !user_v2_place(uid) {
                for d in delegated_v1(uid) {
                    if !dirs.iter().any(|c| *c == format!("{d}/porthole-{id}")) {
                        return Err(format!("no cgroup under the delegated {d}: {dirs:?}"));
                    }
                }
            }
        }
        // The app: pid 1's child (the probe), as the host sees it.
        let app = wait_for(5, || {
            let c = std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children")).ok()?;
            c.split_whitespace().next()?.parse::<i64>().ok()
        })
        .ok_or("pid 1 has no child")?;
        let monitor_cg = std::fs::read_to_string(format!("/proc/{monitor}/cgroup"))
            .map_err(|e| e.to_string())?;
        for d in &dirs {
            if !d.ends_with(&format!("/porthole-{id}")) {
                return Err(format!("{d} is not the instance's porthole-{id}"));
            }
            let want = path_in_hierarchy(d).ok_or(format!("{d} is on no cgroup mount"))?;
            let callers = cgroup_line(&monitor_cg, d).ok_or("no caller's line")?;
            if callers == want {
                return Err(format!("the monitor (the caller's side) is in {d} too"));
            }
            for (what, p) in [("pid 1", pid), ("the app", app)] {
                let text = std::fs::read_to_string(format!("/proc/{p}/cgroup"))
                    .map_err(|e| e.to_string())?;
                let got = cgroup_line(&text, d).ok_or(format!("no line for {d}"))?;
                if got != want {
                    return Err(format!("{what} is in {got}, not in {want} ({d})"));
                }
            }
        }
        let table = run(porthole(who, &rt, &["ps"], &[]), Stdio::null(), 10);
        let line = table
            .stdout
            .lines()
            .find(|l| l.starts_with(&id))
            .ok_or(format!("ps table: {}", table.stdout))?;
        for d in &dirs {
            if !line.contains(d.as_str()) {
                return Err(format!("ps shows no {d}: {line}"));
            }
        }
        if !table.stdout.lines().next().unwrap_or("").contains("CGROUP") {
            return Err(format!("ps has no CGROUP column: {}", table.stdout));
        }
        Ok(dirs)
    })();
    sleeper.terminate();
    assert_no_leftovers(&m);
    let dirs = check.unwrap_or_else(|e| panic!("[{}] {e}", who.label()));
    for d in dirs {
        let gone = wait_for(3, || (!std::path::Path::new(&d).exists()).then_some(()));
        assert!(gone.is_some(), "[{}] cgroup {d} left behind", who.label());
    }
}

#[test]
fn cgroup_without_limits_as_root() {
    match grouping_skip(Who::Root) {
        Some(r) => report_skip(&format!("cgroup_without_limits [root]: {r}")),
        None => cgroup_without_limits(Who::Root),
    }
}

#[test]
fn cgroup_without_limits_as_user() {
    match grouping_skip(Who::User) {
        Some(r) => report_skip(&format!("cgroup_without_limits [user]: {r}")),
        None => cgroup_without_limits(Who::User),
    }
}
