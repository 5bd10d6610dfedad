//! D-Bus through the instance's filtering proxy (escape battery P19-P22,
//! issue 4's launcher part): each test starts its own private dbus-daemon
//! owned by the identity under test, a stand-in service on it (the probe's
//! `dbus-serve`, owning org.freedesktop.secrets, a portal name and a granted
//! name), and `porthole run` with the probe attacking from inside.
//!
//! The proxy is `$PORTHOLE_TEST_DBUS_PROXY` when set (e.g. our
//! porthole-dbus-proxy), else Debian's /usr/bin/xdg-dbus-proxy; tests skip
//! with a printed reason when neither it nor dbus-daemon is installed.

mod common;

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::OnceLock;
use std::time::Duration;

use common::bus::*;
use common::*;

const GRANTED: &str = "org.example.Granted";
const PORTAL: &str = "org.freedesktop.portal.Desktop";
const SECRETS: &str = "org.freedesktop.secrets";

fn skip_dbus(test: &str, who: Who) -> bool {
    if skip(test, who) {
        return true;
    }
    if !Path::new("/usr/bin/dbus-daemon").exists() {
        report_skip(&format!("{test} [{}]: dbus-daemon missing", who.label()));
        return true;
    }
    if proxy().is_none() {
        report_skip(&format!(
            "{test} [{}]: no D-Bus proxy (apt-get install xdg-dbus-proxy)",
            who.label()
        ));
        return true;
    }
    false
}

/// Children of `pid` that are not `porthole` itself (the sandbox's pid 1 is
/// a clone of it): the proxy.
fn proxy_children(pid: i32) -> Vec<i32> {
    let children =
        std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children")).unwrap_or_default();
    children
        .split_whitespace()
        .filter_map(|c| c.parse::<i32>().ok())
        .filter(|c| {
            std::fs::read_to_string(format!("/proc/{c}/comm"))
                .map(|n| n.trim() != "porthole")
                .unwrap_or(false)
        })
        .collect()
}

fn gone(pid: i32) -> bool {
    !Path::new(&format!("/proc/{pid}")).exists() || is_zombie(pid)
}

fn porthole_env(bus: &Bus) -> Vec<(&'static str, String)> {
    vec![
        ("DBUS_SESSION_BUS_ADDRESS", bus.address.clone()),
        (
            "PORTHOLE_DBUS_PROXY",
            proxy().unwrap().display().to_string(),
        ),
    ]
}

/// P19-P22, the portal name, `--talk-name`, and the proxy's end with its
/// instance.
fn battery(who: Who) {
    let name = "battery";
    let bus = Bus::start(who, name);
    let (service, service_rx) = serve(who, &bus, &[SECRETS, PORTAL, GRANTED]);
    let rt = runtime_dir(who, &format!("dbus-{name}"));
    let m = marker(&format!("dbus-{name}"), who);
    let env = porthole_env(&bus);
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let app_dir = stage().app_dir.display().to_string();
    let mut cmd = porthole(
        who,
        &rt,
        &[
            "run",
            &format!("--app-dir={app_dir}"),
            &format!("--talk-name={GRANTED}"),
            APP_ID,
            "--",
            "/app/bin/porthole-probe",
            "dbus-battery",
            APP_ID,
            PORTAL,
            GRANTED,
            "org.example.NotGranted",
            &m,
        ],
        &env,
    );
    cmd.stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = Proc(cmd.spawn().unwrap());
    let monitor = child.0.id() as i32;
    let rx = lines_of(&mut child.0);
    let mut seen = Vec::new();
    let held = until(&rx, &mut seen, "DBUS.hold", 30);
    // While the app holds its connection: what does the host bus see?
    let not_mine = has_owner(who, &bus, "org.example.NotMine");
    let extra = has_owner(who, &bus, &format!("{APP_ID}.Extra"));
    let proxies = proxy_children(monitor);
    drop(child.0.stdin.take());
    let status = wait_for(20, || child.0.try_wait().ok().flatten());
    let mut stderr = String::new();
    if let Some(mut e) = child.0.stderr.take() {
        let _ = std::io::Read::read_to_string(&mut e, &mut stderr);
    }
    let l = who.label();
    assert!(
        held,
        "[{l}] probe did not finish: {seen:?}; stderr {stderr}"
    );
    let r = results(&seen.join("\n"));
    assert_eq!(result_of(&r, "DBUS.connect"), "OK", "[{l}] {stderr}");
    // P19: a name outside the policy is unknown, and nothing reaches it.
    assert_eq!(
        result_of(&r, "P19.secrets"),
        "org.freedesktop.DBus.Error.ServiceUnknown",
        "[{l}] P19"
    );
    // P20, P21: no monitoring, no eavesdropping.
    assert_eq!(
        result_of(&r, "P20.become_monitor"),
        "org.freedesktop.DBus.Error.AccessDenied",
        "[{l}] P20"
    );
    assert_eq!(
        result_of(&r, "P21.eavesdrop"),
        "org.freedesktop.DBus.Error.AccessDenied",
        "[{l}] P21"
    );
    // P22: someone else's name refused and not owned on the host bus; a
    // name below the app id granted (reply 1, primary owner) and owned.
    let p22 = result_of(&r, "P22.not_mine");
    assert!(
        p22 == "org.freedesktop.DBus.Error.ServiceUnknown"
            || p22 == "org.freedesktop.DBus.Error.AccessDenied",
        "[{l}] P22 not mine: {p22}"
    );
    assert_eq!(
        not_mine, "false",
        "[{l}] P22: org.example.NotMine owned on the host bus"
    );
    assert_eq!(result_of(&r, "P22.own_subname"), "OK:1", "[{l}] P22 own");
    assert_eq!(
        extra, "true",
        "[{l}] P22: {APP_ID}.Extra not owned on the host bus"
    );
    // The portal and the granted name are reachable; others are not.
    assert_eq!(
        result_of(&r, &format!("REACH.{PORTAL}")),
        "OK",
        "[{l}] portal"
    );
    assert_eq!(
        result_of(&r, &format!("REACH.{GRANTED}")),
        "OK",
        "[{l}] --talk-name"
    );
    assert_eq!(
        result_of(&r, "REACH.org.example.NotGranted"),
        "org.freedesktop.DBus.Error.ServiceUnknown",
        "[{l}] not granted"
    );
    // The service got exactly the two allowed calls, nothing for secrets.
    drop(service);
    let mut calls = Vec::new();
    while let Ok(line) = service_rx.recv_timeout(Duration::from_secs(5)) {
        calls.push(line);
    }
    let dests: Vec<String> = results_list(&calls, "SERVE.call", "destination");
    assert_eq!(
        dests,
        vec![PORTAL.to_string(), GRANTED.to_string()],
        "[{l}] {calls:?}"
    );
    // One proxy ran beside the sandbox, and it ended with the instance.
    assert_eq!(
        status.and_then(|s| s.code()),
        Some(0),
        "[{l}] stderr {stderr}"
    );
    assert_eq!(proxies.len(), 1, "[{l}] proxy processes: {proxies:?}");
    assert!(
        wait_for(5, || gone(proxies[0]).then_some(())).is_some(),
        "[{l}] proxy {} outlived its instance",
        proxies[0]
    );
    assert_no_leftovers(&m);
}

fn results_list(lines: &[String], id: &str, field: &str) -> Vec<String> {
    lines
        .iter()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v.get("id").and_then(|i| i.as_str()) == Some(id))
        .filter_map(|v| v.get(field)?.as_str().map(str::to_owned))
        .collect()
}

as_root_and_user!(p19_p22_dbus_battery_as_root, p19_p22_dbus_battery_as_user: skip_dbus("p19_p22_dbus_battery") => battery);

/// SIGKILL of `porthole run`: the proxy goes with the monitor (its
/// parent-death signal, and the sync pipe's hang-up).
fn proxy_dies_with_monitor(who: Who) {
    let name = "sigkill";
    let bus = Bus::start(who, name);
    let rt = runtime_dir(who, &format!("dbus-{name}"));
    let m = marker(&format!("dbus-{name}"), who);
    let env = porthole_env(&bus);
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let app_dir = stage().app_dir.display().to_string();
    let mut cmd = porthole(
        who,
        &rt,
        &[
            "run",
            &format!("--app-dir={app_dir}"),
            APP_ID,
            "--",
            "/app/bin/porthole-probe",
            "sleep",
            "60",
            &m,
        ],
        &env,
    );
    cmd.stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let mut child = Proc(cmd.spawn().unwrap());
    let monitor = child.0.id() as i32;
    // The instance is up once its record exists; the proxy by then too.
    let instances = rt.join("porthole/instances");
    let up = wait_for(20, || {
        let rec = std::fs::read_dir(&instances)
            .ok()?
            .flatten()
            .any(|e| e.path().join("instance.json").exists());
        rec.then_some(())
    });
    let proxies = proxy_children(monitor);
    // The proxy has a session of its own: a terminal's SIGINT or SIGTSTP
    // for porthole's session must not reach the app's bus.
    let session = |pid: i32| {
        std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .ok()
            .and_then(|s| {
                let after = s.rsplit_once(')')?.1;
                after.split_whitespace().nth(3)?.parse::<i32>().ok()
            })
    };
    let sessions: Vec<_> = proxies.iter().map(|&p| session(p)).collect();
    let own = session(monitor);
    // SAFETY: SIGKILL to the porthole process this test started.
    unsafe { libc::kill(monitor, libc::SIGKILL) };
    let _ = child.0.wait();
    let l = who.label();
    assert!(up.is_some(), "[{l}] instance never came up");
    assert_eq!(proxies.len(), 1, "[{l}] proxy processes: {proxies:?}");
    assert!(own.is_some(), "[{l}] no session id for porthole");
    assert!(
        sessions[0].is_some() && sessions[0] != own,
        "[{l}] the proxy shares porthole's session: {sessions:?} vs {own:?}"
    );
    assert!(
        wait_for(5, || gone(proxies[0]).then_some(())).is_some(),
        "[{l}] proxy {} survived SIGKILL of porthole",
        proxies[0]
    );
    assert_no_leftovers(&m);
    drop(child);
}

as_root_and_user!(proxy_dies_with_sigkilled_porthole_as_root, proxy_dies_with_sigkilled_porthole_as_user: skip_dbus("proxy_dies_with_sigkilled_porthole") => proxy_dies_with_monitor);

/// No proxy program, or no host bus: one warning line, and the app runs
/// without a bus (no socket, no address).
fn no_bus(who: Who) {
    let rt = runtime_dir(who, "dbus-none");
    let uid = match who {
        Who::Root => 0,
        Who::User => user_ids().unwrap().0,
    };
    let bus = Bus::start(who, "none");
    let l = who.label();
    // Runs `script` in the sandbox with `env`; it must succeed, and porthole
    // must have said exactly one warning, which is returned.
    let the_warning = |script: &str, env: &[(&str, &str)]| -> String {
        let cmd = porthole(
            who,
            &rt,
            &["run", APP_ID, "--", "/bin/sh", "-c", script],
            env,
        );
        let out = run(cmd, Stdio::null(), 20);
        assert_eq!(out.code, Some(0), "[{l}] stderr {}", out.stderr);
        let warnings: Vec<&str> = out
            .stderr
            .lines()
            .filter(|x| x.starts_with("porthole: warning:"))
            .collect();
        assert_eq!(warnings.len(), 1, "[{l}] {}", out.stderr);
        warnings[0].to_owned()
    };
    let no_bus_inside =
        format!("test ! -e /run/user/{uid}/bus && test -z \"$DBUS_SESSION_BUS_ADDRESS\"");
    // A bus, but no proxy program.
    let w = the_warning(
        &no_bus_inside,
        &[
            ("DBUS_SESSION_BUS_ADDRESS", &bus.address),
            ("PORTHOLE_DBUS_PROXY", "/nonexistent/proxy"),
        ],
    );
    assert!(w.contains("PORTHOLE_DBUS_PROXY"), "[{l}] {w}");
    // An executable file that is no program (text without a #! line): the
    // exec fails in the forked child, and the reason is named. (The plan set
    // the address before the exec failed; the socket is absent.)
    let bogus = stage().dir.join(format!("not-a-program-{l}"));
    stage_executable(Path::new("/etc/os-release"), &bogus, None);
    let w = the_warning(
        &format!("test ! -e /run/user/{uid}/bus"),
        &[
            ("DBUS_SESSION_BUS_ADDRESS", &bus.address),
            ("PORTHOLE_DBUS_PROXY", &bogus.display().to_string()),
        ],
    );
    assert!(
        w.contains("cannot execute the D-Bus proxy: Exec format error"),
        "[{l}] {w}"
    );
    // A proxy, but no bus on the host.
    let w = the_warning(
        &no_bus_inside,
        &[(
            "PORTHOLE_DBUS_PROXY",
            &proxy().unwrap().display().to_string(),
        )],
    );
    assert!(w.contains("no session bus"), "[{l}] {w}");
}

as_root_and_user!(no_proxy_or_no_bus_runs_without_bus_as_root, no_proxy_or_no_bus_runs_without_bus_as_user: skip_dbus("no_proxy_or_no_bus") => no_bus);

/// Our porthole-dbus-proxy, built beside `porthole` by `cargo build
/// --workspace --bins`, staged where the test user can run it.
fn our_proxy() -> Option<PathBuf> {
    let built = Path::new(env!("CARGO_BIN_EXE_porthole")).with_file_name("porthole-dbus-proxy");
    if !built.exists() {
        return None;
    }
    static STAGED: OnceLock<PathBuf> = OnceLock::new();
    Some(
        STAGED
            .get_or_init(|| {
                let staged = stage().dir.join("porthole-dbus-proxy");
                stage_executable(&built, &staged, None);
                staged
            })
            .clone(),
    )
}

/// Real client libraries from inside the sandbox, through the instance's
/// proxy, to a portal name on the host bus: GLib (`gdbus`), libdbus
/// (`dbus-send`) and sd-bus (`busctl`). Through our proxy all three work;
/// through Debian's xdg-dbus-proxy 0.1.4 sd-bus is cut off ("Invalid message
/// header read"), which this pins as the reason we replace it.
fn client_libraries(who: Who) {
    let ours = our_proxy().expect("checked by the caller");
    let bus = Bus::start(who, "clients");
    let (_service, service_rx) = serve(who, &bus, &[PORTAL]);
    let rt = runtime_dir(who, "dbus-clients");
    let ping = format!(
        "gdbus call --session --dest {PORTAL} --object-path / --method org.freedesktop.DBus.Peer.Ping >/dev/null 2>&1; echo gdbus=$?; \
         dbus-send --session --print-reply --dest={PORTAL} / org.freedesktop.DBus.Peer.Ping >/dev/null 2>&1; echo dbus-send=$?; \
         busctl --user call {PORTAL} / org.freedesktop.DBus.Peer Ping >/dev/null 2>&1; echo busctl=$?"
    );
    let l = who.label();
    for (proxy, expected) in [
        (ours.display().to_string(), "gdbus=0 dbus-send=0 busctl=0"),
        (
            "/usr/bin/xdg-dbus-proxy".to_owned(),
            "gdbus=0 dbus-send=0 busctl=1",
        ),
    ] {
        if !Path::new(&proxy).exists() {
            report_skip(&format!("client_libraries [{l}]: {proxy} missing"));
            continue;
        }
        let env = [
            ("DBUS_SESSION_BUS_ADDRESS", bus.address.as_str()),
            ("PORTHOLE_DBUS_PROXY", proxy.as_str()),
        ];
        let out = run(
            porthole(
                who,
                &rt,
                &["run", APP_ID, "--", "/bin/sh", "-c", &ping],
                &env,
            ),
            Stdio::null(),
            60,
        );
        let got = out.stdout.split_whitespace().collect::<Vec<_>>().join(" ");
        assert_eq!(
            got, expected,
            "[{l}] through {proxy}; stderr {}",
            out.stderr
        );
    }
    // The service saw the pings that were let through: 3 + 2 (gdbus also
    // introspects first).
    let mut seen = Vec::new();
    while let Ok(line) = service_rx.recv_timeout(Duration::from_millis(500)) {
        seen.push(line);
    }
    let calls = seen
        .iter()
        .filter(|l| l.contains("SERVE.call") && l.contains("\"member\":\"Ping\""))
        .count();
    assert_eq!(calls, 5, "[{l}] {seen:?}");
}

fn skip_clients(who: Who) -> bool {
    if skip_dbus("client_libraries", who) {
        return true;
    }
    if our_proxy().is_none() {
        report_skip(&format!(
            "client_libraries [{}]: porthole-dbus-proxy not built (cargo build --workspace --bins)",
            who.label()
        ));
        return true;
    }
    for tool in ["/usr/bin/gdbus", "/usr/bin/dbus-send", "/usr/bin/busctl"] {
        if !Path::new(tool).exists() {
            report_skip(&format!(
                "client_libraries [{}]: {tool} missing",
                who.label()
            ));
            return true;
        }
    }
    false
}

#[test]
fn gdbus_libdbus_and_sd_bus_clients_work_inside_as_root() {
    if !skip_clients(Who::Root) {
        client_libraries(Who::Root);
    }
}

#[test]
fn gdbus_libdbus_and_sd_bus_clients_work_inside_as_user() {
    if !skip_clients(Who::User) {
        client_libraries(Who::User);
    }
}

/// The system bus: proxied only when a system name is granted, and then
/// filtered like the session bus. A second private dbus-daemon stands in
/// for the host's system bus (`DBUS_SYSTEM_BUS_ADDRESS`); inside, `gdbus
/// --system` finds it at /run/dbus/system_bus_socket. Checked through our
/// proxy and through xdg-dbus-proxy, which must agree.
fn system_bus(who: Who) {
    const SYS_GRANTED: &str = "org.example.SystemGranted";
    const SYS_HIDDEN: &str = "org.example.SystemHidden";
    let session = Bus::start(who, "sys-session");
    let system = Bus::start(who, "sys-system");
    let (_service, service_rx) = serve(who, &system, &[SYS_GRANTED, SYS_HIDDEN]);
    let rt = runtime_dir(who, "dbus-system");
    let script = format!(
        "test -S /run/dbus/system_bus_socket; echo socket=$?; \
         gdbus call --system --dest {SYS_GRANTED} --object-path / --method org.freedesktop.DBus.Peer.Ping >/dev/null 2>&1; echo granted=$?; \
         e=$(gdbus call --system --dest {SYS_HIDDEN} --object-path / --method org.freedesktop.DBus.Peer.Ping 2>&1 | grep -o 'org.freedesktop.DBus.Error.[A-Za-z]*' | head -n1); echo hidden=$e; \
         o=$(gdbus call --system --dest org.freedesktop.DBus --object-path /org/freedesktop/DBus --method org.freedesktop.DBus.NameHasOwner {SYS_HIDDEN}); echo visible=$o"
    );
    let l = who.label();
    let ours = our_proxy()
        .expect("checked by the caller")
        .display()
        .to_string();
    let mut proxies = vec![ours];
    if Path::new("/usr/bin/xdg-dbus-proxy").exists() {
        proxies.push("/usr/bin/xdg-dbus-proxy".to_owned());
    }
    for proxy in &proxies {
        let env = [
            ("DBUS_SESSION_BUS_ADDRESS", session.address.as_str()),
            ("DBUS_SYSTEM_BUS_ADDRESS", system.address.as_str()),
            ("PORTHOLE_DBUS_PROXY", proxy.as_str()),
        ];
        // Granted one system name: that one answers, the other is unknown
        // and invisible.
        let out = run(
            porthole(
                who,
                &rt,
                &[
                    "run",
                    &format!("--system-talk-name={SYS_GRANTED}"),
                    APP_ID,
                    "--",
                    "/bin/sh",
                    "-c",
                    &script,
                ],
                &env,
            ),
            Stdio::null(),
            60,
        );
        let got = out.stdout.split_whitespace().collect::<Vec<_>>().join(" ");
        assert_eq!(
            got,
            "socket=0 granted=0 hidden=org.freedesktop.DBus.Error.ServiceUnknown visible=(false,)",
            "[{l}] through {proxy}; stderr {}",
            out.stderr
        );
        // No system name granted: no system bus inside at all.
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
                    "test -e /run/dbus/system_bus_socket; echo socket=$?",
                ],
                &env,
            ),
            Stdio::null(),
            60,
        );
        assert_eq!(
            out.stdout.trim(),
            "socket=1",
            "[{l}] through {proxy}; stderr {}",
            out.stderr
        );
    }
    // Only calls to the granted name reached the service: one Ping per
    // proxy (gdbus introspects before it calls).
    let mut seen = Vec::new();
    while let Ok(line) = service_rx.recv_timeout(Duration::from_millis(500)) {
        seen.push(line);
    }
    let calls: Vec<&String> = seen.iter().filter(|l| l.contains("SERVE.call")).collect();
    assert!(
        calls
            .iter()
            .all(|c| c.contains(&format!("\"destination\":\"{SYS_GRANTED}\""))),
        "[{l}] {calls:?}"
    );
    let pings = calls
        .iter()
        .filter(|c| c.contains("\"member\":\"Ping\""))
        .count();
    assert_eq!(pings, proxies.len(), "[{l}] {seen:?}");
}

#[test]
fn the_system_bus_is_proxied_only_when_granted_as_root() {
    if !skip_clients(Who::Root) {
        system_bus(Who::Root);
    }
}

#[test]
fn the_system_bus_is_proxied_only_when_granted_as_user() {
    if !skip_clients(Who::User) {
        system_bus(Who::User);
    }
}
