//! --pids-max and --memory-max really hold, in whichever hierarchy has the
//! controller (on the development host: v1 pids and memory, v2 without
//! controllers). As root, and as the test user when an administrator has
//! delegated `MOUNT/porthole/UID` (see the CI setup); otherwise skipped with
//! the reason.

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
/// instance's cgroup, and refuses to run it when it cannot (it used to
/// ignore the failure and run the command outside the limits).
fn enter_joins_cgroup(who: Who) {
    let rt = runtime_dir(who, "enter-cg");
    let m = marker("enter-cg", who);
    let sleeper = Sleeper::start(who, &rt, &["--pids-max=20"], &m);
    let check = (|| -> Result<(), String> {
        let rec = sleeper.record(who, &rt).ok_or("no instance in ps --json")?;
        let id = rec["instance"].as_str().ok_or("no id")?.to_owned();
        let cgroups: Vec<String> = rec["cgroups"]
            .as_array()
            .ok_or("no cgroups in the record")?
            .iter()
            .filter_map(|c| c.as_str().map(str::to_owned))
            .collect();
        let pids = cgroups
            .iter()
            .find(|c| c.contains("/pids/"))
            .ok_or(format!("no pids cgroup: {cgroups:?}"))?
            .clone();
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
        let line = out
            .stdout
            .lines()
            .find(|l| l.contains(":pids:"))
            .unwrap_or("")
            .to_owned();
        if out.code != Some(0) || line != format!("{}:pids:/", line.split(':').next().unwrap_or(""))
        {
            return Err(format!(
                "enter did not join the pids cgroup: {:?} {} {}",
                out.code, out.stdout, out.stderr
            ));
        }
        if who == Who::User {
            // The user can no longer write the instance's cgroup.procs.
            let procs = std::path::Path::new(&pids).join("cgroup.procs");
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
        Ok(())
    })();
    sleeper.stop();
    assert_no_leftovers(&m);
    check.unwrap_or_else(|e| panic!("[{}] {e}", who.label()));
}

#[test]
fn enter_joins_cgroup_as_root() {
    match limits_skip(Who::Root, "pids") {
        Some(r) => report_skip(&format!("enter_joins_cgroup [root]: {r}")),
        None => enter_joins_cgroup(Who::Root),
    }
}

#[test]
fn enter_joins_cgroup_as_user() {
    match limits_skip(Who::User, "pids") {
        Some(r) => report_skip(&format!("enter_joins_cgroup [user]: {r}")),
        None => enter_joins_cgroup(Who::User),
    }
}
