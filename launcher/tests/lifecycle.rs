//! `porthole` as a command: bad input gives one line and a distinct exit
//! code; exit statuses and signals pass through; die-with-parent holds;
//! `ps`, `kill` and `enter` work on running instances; nothing is left
//! running. As root and as the unprivileged test user.

mod common;

use std::os::unix::process::CommandExt;

use std::io::{BufRead, BufReader};
use std::os::unix::fs::PermissionsExt;
use std::process::Stdio;

use common::*;

fn app_dir() -> String {
    stage().app_dir.to_str().unwrap().to_owned()
}

fn bad_input(who: Who) {
    let rt = runtime_dir(who, "bad-input");
    // An app dir the test user cannot read (root can, so only as user).
    let locked = stage().dir.join("locked-app");
    let _ = std::fs::create_dir_all(&locked);
    std::fs::set_permissions(&locked, std::fs::Permissions::from_mode(0o700)).unwrap();
    let locked = locked.to_str().unwrap().to_owned();
    let mut cases: Vec<(Vec<&str>, i32, &str)> = vec![
        (
            vec!["run", "org.example", "--", "/bin/true"],
            122,
            "invalid app id",
        ),
        (
            vec!["run", "org..App", "--", "/bin/true"],
            122,
            "invalid app id",
        ),
        // Without `--`: an installed app, and none is installed here.
        (vec!["run", "org.example.App"], 119, "is not installed"),
        (vec!["run", "org.example.App", "--"], 123, "missing COMMAND"),
        (
            vec!["run", "--frobnicate", "org.example.App", "--", "/bin/true"],
            121,
            "--frobnicate",
        ),
        (
            vec!["run", "--socket=nope", "org.example.App", "--", "/bin/true"],
            121,
            "unknown socket",
        ),
        (
            vec![
                "run",
                "--env=LD_PRELOAD=/x.so",
                "org.example.App",
                "--",
                "/bin/true",
            ],
            121,
            "never passed",
        ),
        (
            vec![
                "run",
                "--app-dir=/nonexistent/app",
                "org.example.App",
                "--",
                "/bin/true",
            ],
            124,
            "app dir",
        ),
        (
            vec!["run", "org.example.App", "--", "/nonexistent-command"],
            127,
            "command not found",
        ),
        (
            vec!["run", "org.example.App", "--", "/etc"],
            126,
            "Permission denied",
        ),
    ];
    if who == Who::User {
        cases.push((
            vec![
                "run",
                "--app-dir",
                &locked,
                "org.example.App",
                "--",
                "/bin/true",
            ],
            124,
            "Permission denied",
        ));
    }
    for (args, code, needle) in cases {
        let out = run(porthole(who, &rt, &args, &[]), Stdio::null(), 30);
        let lines: Vec<&str> = out.stderr.lines().collect();
        assert_eq!(
            out.code,
            Some(code),
            "[{}] {args:?}: stderr {:?}",
            who.label(),
            out.stderr
        );
        assert_eq!(
            lines.len(),
            1,
            "[{}] {args:?}: want one line, got {:?}",
            who.label(),
            out.stderr
        );
        assert!(
            lines[0].starts_with("porthole: ") && lines[0].contains(needle),
            "{args:?}: {:?}",
            lines[0]
        );
    }
}

as_root_and_user!(bad_input_as_root, bad_input_as_user: skip("bad_input") => bad_input);

/// Issue 9: the app's data lives under `$HOME/.var/app/APP_ID` when $HOME is
/// set (GLib's g_get_home_dir, as Flatpak reads it), under the passwd
/// entry's home when $HOME is empty; the app sees that home as HOME.
fn home_as_glib_reads_it(who: Who) {
    let rt = runtime_dir(who, "home");
    let elsewhere = stage().dir.join(format!("home-{}", who.label()));
    let _ = std::fs::create_dir_all(&elsewhere);
    std::fs::set_permissions(&elsewhere, std::fs::Permissions::from_mode(0o755)).unwrap();
    if who == Who::User {
        let (uid, gid, _) = user_ids().unwrap();
        nix::unistd::chown(&elsewhere, Some(uid.into()), Some(gid.into())).unwrap();
    }
    let app = "org.porthole.HomeCheck";
    for (label, home_env, want_home) in [
        ("HOME set", elsewhere.to_str().unwrap(), elsewhere.clone()),
        ("HOME empty", "", home(who)),
    ] {
        let data = want_home.join(".var/app").join(app).join("data");
        let check = data.join("porthole-home-check");
        let _ = std::fs::remove_file(&check);
        let out = run(
            porthole(
                who,
                &rt,
                &[
                    "run",
                    "--app-dir",
                    &app_dir(),
                    app,
                    "--",
                    "porthole-probe",
                    "home",
                ],
                &[("HOME", home_env)],
            ),
            Stdio::null(),
            60,
        );
        assert_eq!(out.code, Some(0), "{label}: {}", out.stderr);
        let r = results(&out.stdout);
        assert_eq!(
            result_of(&r, "HOME.write_data"),
            "OK",
            "{label}: {}",
            out.stdout
        );
        assert_eq!(
            r["HOME.write_data"]["HOME"].as_str(),
            Some(want_home.to_str().unwrap()),
            "{label}"
        );
        assert_eq!(
            r["HOME.write_data"]["XDG_DATA_HOME"].as_str(),
            Some(data.to_str().unwrap()),
            "{label}"
        );
        assert_eq!(
            std::fs::read_to_string(&check).ok().as_deref(),
            Some("written inside\n"),
            "{label}: the file the app wrote is not at {}",
            check.display()
        );
        let _ = std::fs::remove_file(&check);
    }
}

as_root_and_user!(home_as_glib_reads_it_as_root, home_as_glib_reads_it_as_user: skip("home") => home_as_glib_reads_it);

fn exit_status(who: Who) {
    let rt = runtime_dir(who, "exit");
    let dir = app_dir();
    for (code, probe) in [
        (0, vec!["exit", "0"]),
        (7, vec!["exit", "7"]),
        (255, vec!["exit", "255"]),
    ] {
        let m = marker(&format!("exit{code}"), who);
        let mut args = vec!["run", "--app-dir", &dir, APP_ID, "--", "porthole-probe"];
        args.extend(probe);
        args.push(&m);
        let out = run(porthole(who, &rt, &args, &[]), Stdio::null(), 30);
        assert_eq!(out.code, Some(code), "stderr {}", out.stderr);
        assert_no_leftovers(&m);
    }
    // Arguments starting with '-' belong to the app.
    let out = run(
        porthole(
            who,
            &rt,
            &["run", APP_ID, "--", "/bin/echo", "-n", "--help", "-v"],
            &[],
        ),
        Stdio::null(),
        30,
    );
    assert_eq!((out.code, out.stdout.as_str()), (Some(0), "--help -v"));
    // Without `--`, the words after APP_ID are an installed app's
    // arguments (as `flatpak run APP_ID ARGS`), never a command.
    let out = run(
        porthole(
            who,
            &rt,
            &["run", APP_ID, "/usr/bin/printf", "%s|", "--version", "-x"],
            &[],
        ),
        Stdio::null(),
        30,
    );
    assert_eq!(out.code, Some(119), "{}", out.stderr);
    assert!(out.stdout.is_empty(), "{}", out.stdout);
    // A caller that left SIGCHLD ignored (inherited across exec, so the
    // kernel would reap porthole's children itself) still gets the app's
    // status.
    let mut cmd = porthole(
        who,
        &rt,
        &["run", APP_ID, "--", "/bin/sh", "-c", "exit 9"],
        &[],
    );
    // SAFETY: signal(2) in the forked child before exec; no handler.
    unsafe {
        cmd.pre_exec(|| {
            libc::signal(libc::SIGCHLD, libc::SIG_IGN);
            Ok(())
        });
    }
    let out = run(cmd, Stdio::null(), 30);
    assert_eq!(
        out.code,
        Some(9),
        "SIGCHLD ignored by the caller: {}",
        out.stderr
    );
    // The app starts with SIGPIPE at its default, as under bwrap, although
    // the launcher itself ignores it.
    let out = run(
        porthole(
            who,
            &rt,
            &[
                "run",
                APP_ID,
                "--",
                "/bin/sh",
                "-c",
                "grep SigIgn /proc/self/status",
            ],
            &[],
        ),
        Stdio::null(),
        30,
    );
    let ignored = out
        .stdout
        .trim()
        .rsplit('\t')
        .next()
        .and_then(|m| u64::from_str_radix(m, 16).ok());
    assert_eq!(
        ignored.map(|m| m & (1 << (libc::SIGPIPE - 1))),
        Some(0),
        "stdout {} stderr {}",
        out.stdout,
        out.stderr
    );
}

as_root_and_user!(exit_status_as_root, exit_status_as_user: skip("exit_status") => exit_status);

/// SIGTERM to `porthole run` reaches the app (which exits 42 on it).
fn sigterm(who: Who) {
    let rt = runtime_dir(who, "sigterm");
    let m = marker("sigterm", who);
    let dir = app_dir();
    let mut child = porthole(
        who,
        &rt,
        &[
            "run",
            "--app-dir",
            &dir,
            APP_ID,
            "--",
            "porthole-probe",
            "wait-term",
            &m,
        ],
        &[],
    )
    .stdout(Stdio::piped())
    .stderr(Stdio::inherit())
    .spawn()
    .unwrap();
    let pid = child.id() as i32;
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let ready = lines.next();
    assert!(
        matches!(ready, Some(Ok(ref l)) if l == "ready"),
        "{ready:?}"
    );
    // As the user, setpriv execs porthole, so `pid` is porthole itself.
    // SAFETY: signalling the process we spawned.
    unsafe { libc::kill(pid, libc::SIGTERM) };
    let status = wait_for(10, || child.try_wait().ok().flatten());
    if status.is_none() {
        // SAFETY: cleaning up our own process group after a failure.
        unsafe { libc::kill(-pid, libc::SIGKILL) };
    }
    assert_eq!(
        status.and_then(|s| s.code()),
        Some(42),
        "[{}] the app did not see SIGTERM",
        who.label()
    );
    assert_no_leftovers(&m);
}

as_root_and_user!(sigterm_reaches_app_as_root, sigterm_reaches_app_as_user: skip("sigterm") => sigterm);

/// When the parent of `porthole run` dies, the whole sandbox dies.
fn die_with_parent(who: Who) {
    let rt = runtime_dir(who, "dwp");
    let m = marker("dwp", who);
    let dir = app_dir();
    let inner = porthole(
        who,
        &rt,
        &[
            "run",
            "--app-dir",
            &dir,
            APP_ID,
            "--",
            "porthole-probe",
            "sleep",
            "60",
            &m,
        ],
        &[],
    );
    // A parent shell between us and porthole, killed with SIGKILL.
    let mut line = format!("{:?}", inner.get_program());
    for a in inner.get_args() {
        line.push(' ');
        line.push_str(&format!("'{}'", a.to_string_lossy()));
    }
    let mut parent = std::process::Command::new("/bin/sh");
    parent.args(["-c", &format!("{line} & wait")]);
    parent.env_clear();
    for (k, v) in inner.get_envs() {
        if let Some(v) = v {
            parent.env(k, v);
        }
    }
    parent.stdout(Stdio::null());
    let mut parent = parent.spawn().unwrap();
    // Ready when the monitor, pid 1 and the app run: three processes with
    // the marker besides the parent shell, whose command line has it too.
    let shell = parent.id() as i32;
    let up = wait_for(10, || {
        let n = leftovers(&m).iter().filter(|(p, _)| *p != shell).count();
        (n >= 3).then_some(())
    });
    assert!(up.is_some(), "sandbox did not start: {:?}", leftovers(&m));
    parent.kill().unwrap();
    let _ = parent.wait();
    assert_no_leftovers(&m);
}

as_root_and_user!(die_with_parent_as_root, die_with_parent_as_user: skip("die_with_parent") => die_with_parent);

/// `ps` (table and JSON), `enter` (same namespaces, filter, no caps),
/// `kill` (ends everything and the record disappears).
fn ps_enter_kill(who: Who) {
    let rt = runtime_dir(who, "pek");
    let m = marker("pek", who);
    let mut sleeper = Sleeper::start(who, &rt, &[], &m);
    let rec = sleeper.record(who, &rt);
    let check = (|| -> Result<(), String> {
        let rec = rec.ok_or("no instance in ps --json")?;
        let id = rec["instance"].as_str().ok_or("no instance id")?.to_owned();
        if rec["app_id"] != APP_ID {
            return Err(format!("app id {}", rec["app_id"]));
        }
        let info = rt.join("porthole/instances").join(&id).join("info");
        let info =
            std::fs::read_to_string(&info).map_err(|e| format!("{}: {e}", info.display()))?;
        if !info.contains(&format!("name={APP_ID}")) || !info.contains(&format!("instance-id={id}"))
        {
            return Err(format!("info file: {info}"));
        }
        let table = run(porthole(who, &rt, &["ps"], &[]), Stdio::null(), 10);
        if !table
            .stdout
            .lines()
            .any(|l| l.starts_with(&id) && l.contains(APP_ID))
        {
            return Err(format!("ps table: {}", table.stdout));
        }
        // enter: inside the same pid namespace (sees the app), same lock-down.
        let out = run(
            porthole(
                who,
                &rt,
                &[
                    "enter",
                    &id,
                    "--",
                    "/bin/cat",
                    "/proc/self/status",
                    "/proc/1/comm",
                    "/proc/2/cmdline",
                ],
                &[],
            ),
            Stdio::null(),
            20,
        );
        if out.code != Some(0) {
            return Err(format!("enter failed: {:?} {}", out.code, out.stderr));
        }
        for want in [
            "CapEff:\t0000000000000000",
            "CapBnd:\t0000000000000000",
            "NoNewPrivs:\t1",
            "Seccomp:\t2",
            "porthole\n",
            "porthole-probe",
        ] {
            if !out.stdout.contains(want) {
                return Err(format!("enter output lacks {want:?}: {}", out.stdout));
            }
        }
        let out = run(
            porthole(
                who,
                &rt,
                &["enter", &id, "--", "/bin/sh", "-c", "exit 3"],
                &[],
            ),
            Stdio::null(),
            20,
        );
        if out.code != Some(3) {
            return Err(format!("enter exit status {:?}", out.code));
        }
        // A host directory fd left open by the caller of enter stays out.
        let mut cmd = porthole(
            who,
            &rt,
            &["enter", &id, "--", "/app/bin/porthole-probe", "fds"],
            &[],
        );
        plant_fd(&mut cmd, 5);
        let out = run(cmd, Stdio::null(), 20);
        let r = results(&out.stdout);
        if out.code != Some(0)
            || r.get("FD.self_5").and_then(|v| v["result"].as_str()) != Some("ENOENT")
            || r.get("FD.self_list").map(|v| &v["fds"]) != Some(&serde_json::json!([0, 1, 2]))
        {
            return Err(format!(
                "enter with a planted fd 5: {:?} {} {}",
                out.code, out.stdout, out.stderr
            ));
        }
        let out = run(porthole(who, &rt, &["kill", &id], &[]), Stdio::null(), 20);
        if out.code != Some(0) {
            return Err(format!("kill: {:?} {}", out.code, out.stderr));
        }
        let status = wait_for(10, || sleeper.child.try_wait().ok().flatten())
            .ok_or("porthole run survived kill")?;
        if status.code() != Some(128 + 9) {
            return Err(format!("run exit status after kill: {status:?}"));
        }
        if rt.join("porthole/instances").join(&id).exists() {
            return Err("instance dir left behind".into());
        }
        let out = run(porthole(who, &rt, &["kill", &id], &[]), Stdio::null(), 10);
        if out.code != Some(120) {
            return Err(format!("kill of a gone instance: {:?}", out.code));
        }
        Ok(())
    })();
    sleeper.stop();
    assert_no_leftovers(&m);
    check.unwrap_or_else(|e| panic!("[{}] {e}", who.label()));
}

as_root_and_user!(ps_enter_kill_as_root, ps_enter_kill_as_user: skip("ps_enter_kill") => ps_enter_kill);

/// `enter` loads the instance's own filter: in an `--allow=devel` instance
/// an entered debugger may trace its child (issue 9), pid 1 still not.
fn enter_keeps_features(who: Who) {
    let rt = runtime_dir(who, "enter-devel");
    let m = marker("enter-devel", who);
    let sleeper = Sleeper::start(who, &rt, &["--allow=devel"], &m);
    let check = (|| -> Result<(), String> {
        let rec = sleeper.record(who, &rt).ok_or("no instance in ps --json")?;
        let id = rec["instance"].as_str().ok_or("no instance id")?.to_owned();
        let out = run(
            porthole(
                who,
                &rt,
                &["enter", &id, "--", "/app/bin/porthole-probe", "abi"],
                &[],
            ),
            Stdio::null(),
            20,
        );
        let r = results(&out.stdout);
        for (check, want) in [
            ("DEVEL.ptrace_child", "OK"),
            ("DEVEL.ptrace_init", "EPERM"),
            ("ABI.i386_getpid", "EPERM"),
        ] {
            let got = result_of(&r, check);
            if got != want && got != "SKIPPED_NO_IA32" {
                return Err(format!(
                    "enter: {check}: got {got}, want {want} ({:?} {})",
                    out.code, out.stderr
                ));
            }
        }
        Ok(())
    })();
    sleeper.stop();
    assert_no_leftovers(&m);
    check.unwrap_or_else(|e| panic!("[{}] {e}", who.label()));
}

as_root_and_user!(enter_keeps_features_as_root, enter_keeps_features_as_user: skip("enter_features") => enter_keeps_features);

/// The sandbox's file-system layout as DESIGN.md describes it.
fn layout(who: Who) {
    let rt = runtime_dir(who, "layout");
    let uid = match who {
        Who::Root => 0,
        Who::User => user_ids().unwrap().0,
    };
    let script = format!(
        "set -e; test ! -e /sys; test -L /bin; test -L /lib; test -f /etc/ld.so.cache; \
         test -f /etc/passwd; test ! -e /etc/shadow; test ! -e /etc/resolv.conf; \
         test -c /dev/null; test -c /dev/urandom; test -d /dev/pts; touch /dev/shm/x; echo > /dev/null; \
         test ! -e /dev/sda; test -f /proc/self/status; \
         test \"$(stat -c %a /run/user/{uid})\" = 700; test -z \"$(ls -A /run/user/{uid})\"; \
         test -d \"$XDG_CONFIG_HOME\"; touch \"$XDG_CONFIG_HOME/x\"; touch /tmp/x /var/tmp/x; \
         test \"$(ls -A \"$HOME\")\" = .var; grep -q porthole /etc/passwd || getent passwd $(id -u) >/dev/null; \
         echo layout-ok"
    );
    let out = run(
        porthole(
            who,
            &rt,
            &["run", APP_ID, "--", "/bin/sh", "-c", &script],
            &[],
        ),
        Stdio::null(),
        30,
    );
    assert_eq!(
        out.stdout.trim(),
        "layout-ok",
        "[{}] stderr: {}",
        who.label(),
        out.stderr
    );
    // With network: resolv.conf and hosts appear.
    let out = run(
        porthole(
            who,
            &rt,
            &[
                "run",
                "--share=network",
                APP_ID,
                "--",
                "/bin/sh",
                "-c",
                "test -f /etc/hosts && echo net-ok",
            ],
            &[],
        ),
        Stdio::null(),
        30,
    );
    assert_eq!(out.stdout.trim(), "net-ok", "stderr: {}", out.stderr);
}

as_root_and_user!(layout_as_root, layout_as_user: skip("layout") => layout);

/// The debootstrapped runtime tree used by `--runtime` tests (CI creates it
/// with `debootstrap --variant=minbase bookworm DIR`).
fn runtime_tree() -> Option<std::path::PathBuf> {
    let dir = std::env::var_os("PORTHOLE_TEST_RUNTIME")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| "/var/tmp/porthole-runtime-bookworm".into());
    dir.join("usr/bin").is_dir().then_some(dir)
}

/// `--runtime=DIR`: /usr (and ld.so.cache) come from a debootstrapped tree,
/// not from the host.
fn runtime(who: Who) {
    let tree = runtime_tree().unwrap();
    let marker_file = tree.join("usr/share/porthole-runtime-marker");
    if !marker_file.exists() {
        std::fs::write(&marker_file, "runtime\n").unwrap();
    }
    let rt = runtime_dir(who, "runtime");
    let tree_s = tree.to_str().unwrap().to_owned();
    let script = "test -f /usr/share/porthole-runtime-marker && /bin/ls /usr/bin | wc -l && cmp -s /etc/ld.so.cache /dev/stdin && echo same-cache";
    let cache = std::fs::File::open(tree.join("etc/ld.so.cache")).unwrap();
    let out = run(
        porthole(
            who,
            &rt,
            &[
                "run",
                &format!("--runtime={tree_s}"),
                APP_ID,
                "--",
                "/bin/sh",
                "-c",
                script,
            ],
            &[],
        ),
        Stdio::from(cache),
        30,
    );
    assert_eq!(out.code, Some(0), "[{}] stderr {}", who.label(), out.stderr);
    let mut lines = out.stdout.lines();
    let inside: usize = lines.next().unwrap().trim().parse().unwrap();
    let host = std::fs::read_dir("/usr/bin").unwrap().count();
    let tree_count = std::fs::read_dir(tree.join("usr/bin")).unwrap().count();
    assert_eq!(
        inside,
        tree_count,
        "[{}] /usr/bin is not the runtime's (host has {host})",
        who.label()
    );
    assert_eq!(lines.next(), Some("same-cache"));
    // A runtime that does not exist: one line, exit 124.
    let out = run(
        porthole(
            who,
            &rt,
            &[
                "run",
                "--runtime=/nonexistent/runtime",
                APP_ID,
                "--",
                "/bin/true",
            ],
            &[],
        ),
        Stdio::null(),
        30,
    );
    assert_eq!(out.code, Some(124));
    assert_eq!(out.stderr.lines().count(), 1, "{}", out.stderr);
}

#[test]
fn runtime_tree_as_root() {
    if skip("runtime", Who::Root) {
        return;
    }
    if runtime_tree().is_none() {
        report_skip(
            "runtime: no debootstrapped tree (set PORTHOLE_TEST_RUNTIME or create /var/tmp/porthole-runtime-bookworm)",
        );
        return;
    }
    runtime(Who::Root);
}

#[test]
fn runtime_tree_as_user() {
    if skip("runtime", Who::User) {
        return;
    }
    if runtime_tree().is_none() {
        report_skip(
            "runtime: no debootstrapped tree (set PORTHOLE_TEST_RUNTIME or create /var/tmp/porthole-runtime-bookworm)",
        );
        return;
    }
    runtime(Who::User);
}

/// A fresh directory below the stage for `name` and `who`, readable by all.
fn scratch(name: &str, who: Who) -> std::path::PathBuf {
    let d = stage().dir.join(format!("{name}-{}", who.label()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o755)).unwrap();
    d
}

fn dry_run(who: Who, args: &[&str]) -> Output {
    let rt = runtime_dir(who, "dry");
    let mut all = vec!["run", "--dry-run"];
    all.extend_from_slice(args);
    all.extend_from_slice(&[APP_ID, "--", "/bin/true"]);
    run(porthole(who, &rt, &all, &[]), Stdio::null(), 20)
}

/// Review finding 4: a symlink inside a --filesystem path must not turn the
/// grant into a bind of its target (`ln -s /root/.ssh proj` gave `bind
/// /root/.ssh`). Refused with exit 124; real paths still work.
fn filesystem_symlinks(who: Who) {
    let canary = fd_canary_dir();
    let d = scratch("fs-links", who);
    std::os::unix::fs::symlink(&canary, d.join("proj")).unwrap();
    std::fs::create_dir(d.join("real")).unwrap();
    let c = canary.to_str().unwrap();
    for grant in ["proj", "proj/", "proj/host-canary", "./proj"] {
        let arg = format!("--filesystem={}/{grant}", d.display());
        let out = dry_run(who, &[&arg]);
        assert_eq!(
            out.code,
            Some(124),
            "[{}] {arg}: stdout {} stderr {}",
            who.label(),
            out.stdout,
            out.stderr
        );
        assert!(
            out.stderr.contains("symbolic link") && !out.stdout.contains(c),
            "[{}] {arg}: stdout {} stderr {}",
            who.label(),
            out.stdout,
            out.stderr
        );
    }
    let real = d.join("real");
    let arg = format!("--filesystem={}/./real/", d.display());
    let out = dry_run(who, &[&arg]);
    let want = format!("bind     {} on {} [rw", real.display(), real.display());
    assert!(
        out.code == Some(0) && out.stdout.contains(&want),
        "[{}] {arg}: {:?} stdout {} stderr {}",
        who.label(),
        out.code,
        out.stdout,
        out.stderr
    );
}

as_root_and_user!(filesystem_symlinks_as_root, filesystem_symlinks_as_user: skip("filesystem_symlinks") => filesystem_symlinks);

/// Review finding 5: a runtime's /etc files are looked up inside the
/// runtime. Absolute symlinks to host files (`etc/ld.so.cache ->
/// /etc/shadow`, `etc/ssl/certs -> /root/.ssh`) must not copy or bind the
/// host's files; an absolute link within the runtime still works, resolved
/// as if the runtime were /.
fn runtime_symlinks(who: Who) {
    let canary = fd_canary_dir();
    let r = scratch("rt-links", who);
    for d in ["usr/bin", "usr/share/fonts", "etc/ssl"] {
        std::fs::create_dir_all(r.join(d)).unwrap();
    }
    let link = |target: &std::path::Path, at: &str| {
        std::os::unix::fs::symlink(target, r.join(at)).unwrap();
    };
    link(&canary.join("host-canary"), "etc/ld.so.cache");
    link(&canary, "etc/ssl/certs");
    link(&canary.join("host-canary"), "etc/localtime");
    link(std::path::Path::new("/usr/share/fonts"), "etc/fonts");
    let arg = format!("--runtime={}", r.display());
    let out = dry_run(who, &[&arg]);
    assert_eq!(
        out.code,
        Some(0),
        "[{}] stdout {} stderr {}",
        who.label(),
        out.stdout,
        out.stderr
    );
    let c = canary.to_str().unwrap();
    for bad in [c, "/etc/ld.so.cache", "on /etc/ssl/certs", "/etc/localtime"] {
        assert!(
            !out.stdout.contains(bad),
            "[{}] dry run shows {bad:?}:\n{}",
            who.label(),
            out.stdout
        );
    }
    let fonts = format!("bind     {}/usr/share/fonts on /etc/fonts", r.display());
    assert!(
        out.stdout.contains(&fonts),
        "[{}] in-runtime link not followed: {}",
        who.label(),
        out.stdout
    );
}

as_root_and_user!(runtime_symlinks_as_root, runtime_symlinks_as_user: skip("runtime_symlinks") => runtime_symlinks);

/// A runtime directory others may write to (here /tmp itself) is not
/// trusted with instance records and sockets: porthole says so and uses
/// its own fallback; the app still runs.
fn shared_runtime_dir(who: Who) {
    let out = run(
        porthole(
            who,
            std::path::Path::new("/tmp"),
            &["run", APP_ID, "--", "/bin/true"],
            &[],
        ),
        Stdio::null(),
        30,
    );
    assert_eq!(out.code, Some(0), "[{}] {}", who.label(), out.stderr);
    assert!(
        out.stderr
            .lines()
            .any(|l| l.starts_with("porthole: warning: XDG_RUNTIME_DIR=/tmp is not private")),
        "[{}] {}",
        who.label(),
        out.stderr
    );
}

as_root_and_user!(a_shared_runtime_dir_is_not_trusted_as_root, a_shared_runtime_dir_is_not_trusted_as_user: skip("shared_runtime_dir") => shared_runtime_dir);

/// A warning found while the launch goes on reaches the user once, from the
/// command, with its wording unchanged: a --socket grant for a socket the
/// host does not have.
fn missing_socket_note(who: Who) {
    let rt = runtime_dir(who, "no-pulse");
    let out = run(
        porthole(
            who,
            &rt,
            &["run", "--socket=pulseaudio", APP_ID, "--", "/bin/true"],
            &[],
        ),
        Stdio::null(),
        30,
    );
    assert_eq!(out.code, Some(0), "[{}] {}", who.label(), out.stderr);
    let notes: Vec<&str> = out
        .stderr
        .lines()
        .filter(|l| l.starts_with("porthole: note:"))
        .collect();
    assert_eq!(
        notes,
        [
            "porthole: note: --socket=pulseaudio granted but the host has no such socket; not provided"
        ],
        "[{}] {}",
        who.label(),
        out.stderr
    );
}

as_root_and_user!(a_missing_socket_is_noted_once_as_root, a_missing_socket_is_noted_once_as_user: skip("missing_socket_note") => missing_socket_note);
