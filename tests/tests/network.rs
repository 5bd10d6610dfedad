//! Network access the user approves (issue 12), end to end: our permission
//! store, portal frontend and scripted dialog backend on the harness's
//! private bus, the real launcher, and unmodified clients inside the
//! sandbox (curl, and /usr/bin/python3 speaking SOCKS5 by hand for the
//! malformed cases). Run as root and as the unprivileged `porthole-test`.
//!
//! Each test re-runs itself in a network namespace of its own (only `lo`):
//! its servers listen on that namespace's 127.0.0.1, and nothing here ever
//! reaches an outside address. The sandbox gets yet another namespace, so
//! "the host's 127.0.0.1" below is the test's.

use std::io::{Read, Write};
use std::net::TcpListener;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use porthole_tests::{Bus, Service, bin, run_with_timeout};

const APP: &str = "org.example.Net";
const OTHER_APP: &str = "org.example.Other";
const PROMPT: &str = "org.freedesktop.impl.portal.desktop.porthole";
const DESKTOP: &str = "org.freedesktop.portal.Desktop";
const STORE: &str = "org.freedesktop.impl.portal.PermissionStore";
const TEST_USER: &str = "porthole-test";
/// Set in the copy of the test that runs inside its own network namespace.
const INNER: &str = "PORTHOLE_NETWORK_TEST_INNER";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Who {
    Root,
    User,
}

/// What this test needs and may lack.
fn missing(who: Who) -> Option<String> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Some("needs root (its own network namespace, and to switch users)".into());
    }
    for (path, package) in [
        ("/usr/bin/curl", "curl"),
        ("/usr/bin/python3", "python3"),
        ("/usr/bin/setpriv", "util-linux"),
    ] {
        if !Path::new(path).exists() {
            return Some(format!("{path} missing (package {package})"));
        }
    }
    if who == Who::User && user_ids().is_none() {
        return Some(format!("test user {TEST_USER} does not exist"));
    }
    None
}

fn user_ids() -> Option<(u32, u32, PathBuf)> {
    let pw = std::fs::read_to_string("/etc/passwd").ok()?;
    pw.lines().find_map(|l| {
        let f: Vec<&str> = l.split(':').collect();
        (f.first() == Some(&TEST_USER)).then(|| {
            (
                f[2].parse().unwrap_or(0),
                f[3].parse().unwrap_or(0),
                PathBuf::from(f[5]),
            )
        })
    })
}

/// `lo` up in the current network namespace (async-signal-safe: used
/// between fork and exec).
fn loopback_up() -> std::io::Result<()> {
    // SAFETY: socket(2) with constant arguments.
    let s = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if s < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: ifreq is plain old data; all-zero is a valid value.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (dst, src) in req.ifr_name.iter_mut().zip(b"lo\0") {
        *dst = *src as libc::c_char;
    }
    // SAFETY: SIOCGIFFLAGS/SIOCSIFFLAGS read and write the exclusively
    // borrowed `req`; `s` is the socket opened above, closed after.
    let rc = unsafe {
        if libc::ioctl(s, libc::SIOCGIFFLAGS, &mut req) < 0 {
            -1
        } else {
            req.ifr_ifru.ifru_flags |= libc::IFF_UP as libc::c_short;
            libc::ioctl(s, libc::SIOCSIFFLAGS, &req)
        }
    };
    let err = std::io::Error::last_os_error();
    // SAFETY: closing the socket opened above.
    unsafe { libc::close(s) };
    if rc < 0 { Err(err) } else { Ok(()) }
}

/// Runs `body` in a network namespace of the test's own: the test binary
/// runs itself again (just this test) under unshare(CLONE_NEWNET).
fn in_own_netns(test: &str, who: Who, body: impl FnOnce(Who)) {
    in_own_netns_with_hosts(test, who, None, body)
}

/// [`in_own_netns`], and with `hosts` a mount namespace of its own too, in
/// which that text is `/etc/hosts`: names the test controls, resolved by
/// the services as any name is.
fn in_own_netns_with_hosts(test: &str, who: Who, hosts: Option<&str>, body: impl FnOnce(Who)) {
    if std::env::var_os(INNER).is_some() {
        body(who);
        return;
    }
    if let Some(why) = missing(who) {
        porthole_tests::skipped(&format!("{test}: {why}"));
        return;
    }
    let mut cmd = Command::new(std::env::current_exe().unwrap());
    cmd.args([test, "--exact", "--nocapture", "--test-threads=1"])
        .env(INNER, "1");
    let hosts_file = hosts.map(|text| {
        let f = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(f.path(), text).unwrap();
        let c = std::ffi::CString::new(f.path().as_os_str().as_encoded_bytes()).unwrap();
        (f, c)
    });
    let hosts_c = hosts_file.as_ref().map(|(_, c)| c.clone());
    // SAFETY: only unshare(2), mount(2) on strings made before the fork,
    // and the ioctls of loopback_up run between fork and exec, all
    // async-signal-safe.
    unsafe {
        cmd.pre_exec(move || {
            let flags = if hosts_c.is_some() {
                libc::CLONE_NEWNET | libc::CLONE_NEWNS
            } else {
                libc::CLONE_NEWNET
            };
            if libc::unshare(flags) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            if let Some(src) = &hosts_c {
                let none = c"none";
                if libc::mount(
                    none.as_ptr(),
                    c"/".as_ptr(),
                    std::ptr::null(),
                    libc::MS_REC | libc::MS_PRIVATE,
                    std::ptr::null(),
                ) != 0
                    || libc::mount(
                        src.as_ptr(),
                        c"/etc/hosts".as_ptr(),
                        std::ptr::null(),
                        libc::MS_BIND,
                        std::ptr::null(),
                    ) != 0
                {
                    return Err(std::io::Error::last_os_error());
                }
            }
            loopback_up()
        });
    }
    let (status, out, err) = run_with_timeout(&mut cmd, Duration::from_secs(600));
    eprintln!("---- {test} in its own network namespace ----\n{out}\n{err}");
    assert!(status.success(), "{test} failed in its network namespace");
}

/// A tiny HTTP server on `addr` answering every request with
/// `served by PORT`; returns the port.
fn http_server(addr: &str) -> u16 {
    let listener = TcpListener::bind(addr).unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { continue };
            std::thread::spawn(move || {
                let mut req = Vec::new();
                let mut buf = [0u8; 1024];
                while !req.windows(4).any(|w| w == b"\r\n\r\n") && req.len() < 8192 {
                    match conn.read(&mut buf) {
                        Ok(0) | Err(_) => return,
                        Ok(n) => req.extend_from_slice(&buf[..n]),
                    }
                }
                let body = format!("served by {port}\n");
                let _ = conn.write_all(
                    format!(
                        "HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                        body.len()
                    )
                    .as_bytes(),
                );
            });
        }
    });
    port
}

/// The SOCKS5 client the app runs (python3 from the host's /usr, which
/// the sandbox sees read-only). Each argument is one operation; each
/// prints one JSON line.
const CLIENT: &str = r#"
import socket, sys, json, threading, errno as E
PROXY = ("127.0.0.1", 1080)
def recv_all(s):
    out = b""
    while True:
        try:
            d = s.recv(65536)
        except OSError:
            break
        if not d:
            break
        out += d
    return out
def connect(atyp, host, port):
    s = socket.create_connection(PROXY, timeout=60)
    s.sendall(b"\x05\x01\x00")
    g = s.recv(2)
    if g != b"\x05\x00":
        return {"greeting": g.hex()}
    if atyp == 1:
        addr = b"\x01" + socket.inet_pton(socket.AF_INET, host)
    elif atyp == 4:
        addr = b"\x04" + socket.inet_pton(socket.AF_INET6, host)
    else:
        hb = host.encode()
        addr = b"\x03" + bytes([len(hb)]) + hb
    s.sendall(b"\x05\x01\x00" + addr + port.to_bytes(2, "big"))
    r = b""
    while len(r) < 10:
        d = s.recv(10 - len(r))
        if not d:
            break
        r += d
    if len(r) < 2:
        return {"rep": None}
    res = {"rep": r[1]}
    if r[1] == 0:
        s.sendall(b"GET / HTTP/1.0\r\n\r\n")
        res["body"] = recv_all(s).decode(errors="replace")
    s.close()
    return res
def raw(hexs):
    s = socket.create_connection(PROXY, timeout=10)
    s.sendall(bytes.fromhex(hexs))
    try:
        s.shutdown(socket.SHUT_WR)
    except OSError:
        pass
    return {"reply": recv_all(s).hex()}
def direct(host, port):
    try:
        socket.create_connection((host, int(port)), timeout=5)
        return {"errno": "connected"}
    except OSError as e:
        return {"errno": E.errorcode.get(e.errno, str(e.errno))}
def flood(n, host, port):
    results = [None] * n
    def one(i):
        try:
            results[i] = connect(1, host, port)
        except Exception as e:
            results[i] = {"error": str(e)}
    ts = [threading.Thread(target=one, args=(i,)) for i in range(n)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    ok = sum(1 for r in results if r and r.get("rep") == 0 and "served by" in r.get("body", ""))
    return {"ok": ok, "results": results}
for op in sys.argv[1:]:
    name, _, args = op.partition(":")
    a = args.split(",") if args else []
    if name == "connect":
        r = connect(int(a[0]), a[1], int(a[2]))
    elif name == "raw":
        r = raw(a[0])
    elif name == "direct":
        r = direct(a[0], a[1])
    elif name == "flood":
        r = flood(int(a[0]), a[1], int(a[2]))
    r["op"] = op
    print(json.dumps(r), flush=True)
"#;

/// The services on a private bus, and how to run the launcher as `who`.
struct Setup {
    who: Who,
    _store: Service,
    _prompt: Service,
    portals: Service,
    record: PathBuf,
    /// The test user's own runtime dir (the user variant).
    user_runtime: Option<PathBuf>,
    bus: Bus,
}

impl Setup {
    async fn start(who: Who, script: &str) -> Setup {
        let bus = if who == Who::User {
            Bus::start_open_to_all_users()
        } else {
            Bus::start()
        };
        let store = bus
            .spawn_owning(
                "permission-store",
                bus.command(bin("porthole-permission-store")),
                STORE,
            )
            .await;
        let portals_dir = bus.porthole_portal_dir();
        let script_path = bus.root().join("script.jsonl");
        std::fs::write(&script_path, script).unwrap();
        let record = bus.root().join("record.jsonl");
        let mut cmd = bus.command(bin("porthole-prompt"));
        cmd.arg("-v")
            .arg("--script")
            .arg(&script_path)
            .arg("--record")
            .arg(&record);
        let prompt = bus.spawn_owning("prompt", cmd, PROMPT).await;
        let mut cmd = bus.command(bin("porthole-portals"));
        cmd.arg("-v").env("XDG_DESKTOP_PORTAL_DIR", &portals_dir);
        let portals = bus.spawn_owning("portals", cmd, DESKTOP).await;
        let user_runtime = (who == Who::User).then(|| {
            let (uid, gid, _) = user_ids().unwrap();
            let d = bus.root().join("user-runtime");
            std::fs::create_dir_all(&d).unwrap();
            std::os::unix::fs::chown(&d, Some(uid), Some(gid)).unwrap();
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o700)).unwrap();
            d
        });
        Setup {
            who,
            _store: store,
            _prompt: prompt,
            portals,
            record,
            user_runtime,
            bus,
        }
    }

    /// `porthole run APP -- ARGS` as the test's user, with a hard timeout.
    fn run(&self, app: &str, args: &[&str]) -> (i32, String, String) {
        self.run_with(app, &[], &[], args)
    }

    /// [`Setup::run`] with launcher options and environment changes
    /// (`(key, None)` removes the variable).
    fn run_with(
        &self,
        app: &str,
        options: &[&str],
        env: &[(&str, Option<&str>)],
        args: &[&str],
    ) -> (i32, String, String) {
        let mut cmd = match self.who {
            Who::Root => self.bus.command(bin("porthole")),
            Who::User => {
                let mut c = self.bus.command("/usr/bin/setpriv");
                c.args([
                    &format!("--reuid={TEST_USER}"),
                    &format!("--regid={TEST_USER}"),
                    "--init-groups",
                    "--",
                ])
                .arg(bin("porthole"));
                let (_, _, home) = user_ids().unwrap();
                c.env("HOME", home)
                    .env("XDG_RUNTIME_DIR", self.user_runtime.as_ref().unwrap())
                    .env_remove("XDG_DATA_HOME")
                    .env_remove("XDG_CONFIG_HOME");
                c
            }
        };
        for (k, v) in env {
            match v {
                Some(v) => cmd.env(k, v),
                None => cmd.env_remove(k),
            };
        }
        cmd.args(["--log-level=info", "run"])
            .args(options)
            .args([app, "--"])
            .args(args)
            .current_dir("/");
        let (status, out, err) = run_with_timeout(&mut cmd, Duration::from_secs(120));
        (status.code().unwrap_or(-1), out, err)
    }

    /// The python client's JSON lines for `ops`, run inside `app`.
    fn client(&self, app: &str, ops: &[String]) -> Vec<serde_json::Value> {
        let mut args = vec!["/usr/bin/python3", "-c", CLIENT];
        args.extend(ops.iter().map(String::as_str));
        let (code, out, err) = self.run(app, &args);
        assert_eq!(code, 0, "client failed: {out}\n{err}\n{}", self.logs());
        let lines: Vec<serde_json::Value> = out
            .lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{l}: {e}")))
            .collect();
        assert_eq!(lines.len(), ops.len(), "{out}\n{err}");
        lines
    }

    /// curl inside `app`, configured only by the environment the launcher
    /// gives it (ALL_PROXY): (exit code, body).
    fn curl(&self, app: &str, url: &str) -> (i32, String, String) {
        self.run(app, &["/usr/bin/curl", "-sS", "--max-time", "30", url])
    }

    fn permctl(&self, args: &[&str]) -> String {
        let mut cmd = self.bus.command(bin("permctl"));
        cmd.args(args);
        let (status, out, err) = run_with_timeout(&mut cmd, Duration::from_secs(30));
        assert!(status.success(), "permctl {args:?}: {out}\n{err}");
        out
    }

    /// The dialogs the backend showed so far.
    fn dialogs(&self) -> Vec<serde_json::Value> {
        std::fs::read_to_string(&self.record)
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    fn logs(&self) -> String {
        self.bus.logs()
    }

    /// Asserts that `n` dialogs were shown in all, and returns the last.
    fn expect_dialogs(&self, n: usize, what: &str) -> serde_json::Value {
        let d = self.dialogs();
        assert_eq!(
            d.len(),
            n,
            "{what}: expected {n} dialogs in all, the backend recorded {}:\n{d:#?}",
            d.len()
        );
        d.last().cloned().unwrap_or_default()
    }

    /// The app's stored answer for `id`, as `permctl show` lists it.
    fn stored(&self, id: &str, app: &str) -> Option<Vec<String>> {
        let mut cmd = self.bus.command(bin("permctl"));
        cmd.args(["--json", "show", app]);
        let (status, out, _) = run_with_timeout(&mut cmd, Duration::from_secs(30));
        if !status.success() {
            // Exit 3: the store does not know the app (no grant at all).
            return None;
        }
        let v: serde_json::Value = serde_json::from_str(&out).unwrap();
        v.as_array()?.iter().find_map(|g| {
            if g["table"] != "network" || g["id"] != id {
                return None;
            }
            Some(
                g["permissions"]
                    .as_array()?
                    .iter()
                    .filter_map(|p| p.as_str().map(str::to_owned))
                    .collect(),
            )
        })
    }
}

fn rep(v: &serde_json::Value) -> Option<u64> {
    v.get("rep").and_then(|r| r.as_u64())
}

fn dialog_text(d: &serde_json::Value) -> String {
    d.to_string()
}

/// The scripted user's answers, in the order the scenario asks.
const SCRIPT: &str = r#"
{"method": "AccessDialog", "response": 1, "choices": [["remember", "once"]]}
{"method": "AccessDialog", "response": 0, "choices": [["remember", "once"]]}
{"method": "AccessDialog", "response": 0, "choices": [["remember", "once"]]}
{"method": "AccessDialog", "response": 0, "choices": [["remember", "always"]]}
{"method": "AccessDialog", "response": 1, "choices": [["remember", "always"]]}
{"method": "AccessDialog", "response": 1, "choices": [["remember", "once"]]}
{"method": "AccessDialog", "response": 1, "choices": [["remember", "once"]]}
{"method": "AccessDialog", "response": 1, "choices": [["remember", "once"]]}
{"method": "AccessDialog", "response": 0, "choices": [["remember", "once"]], "delay_ms": 1500}
"#;

fn scenario(who: Who) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let mut s = rt.block_on(Setup::start(who, SCRIPT));
    let p1 = http_server("127.0.0.1:0");
    let p2 = http_server("127.0.0.1:0");
    let p3 = http_server("127.0.0.1:0");
    let p4 = http_server("127.0.0.1:0");
    let d1 = format!("127.0.0.1:{p1}");

    // 1. Without a grant nothing connects: not directly (the sandbox has
    // its own lo: the test's 127.0.0.1 is not there, and no route leads
    // out), and not through SOCKS5 when the user says no. A second try
    // within the minute asks no more.
    let r = s.client(
        APP,
        &[
            format!("direct:127.0.0.1,{p1}"),
            "direct:192.0.2.1,80".into(),
            format!("connect:1,127.0.0.1,{p1}"),
            format!("connect:1,127.0.0.1,{p1}"),
        ],
    );
    assert_eq!(r[0]["errno"], "ECONNREFUSED", "{r:?}");
    assert_eq!(r[1]["errno"], "ENETUNREACH", "{r:?}");
    assert_eq!(rep(&r[2]), Some(2), "denied once: {r:?}\n{}", s.logs());
    assert_eq!(rep(&r[3]), Some(2), "still denied: {r:?}");
    let d = s.expect_dialogs(1, "a denial once is remembered by the instance");
    let text = dialog_text(&d);
    assert!(
        text.contains(APP) && text.contains(&d1),
        "names app and HOST:PORT: {text}"
    );
    assert!(
        text.contains("local"),
        "says the destination is local: {text}"
    );
    assert!(
        text.contains("remember") && text.contains("Only this time"),
        "{text}"
    );
    assert_eq!(s.stored(&d1, APP), None, "a denial once stores nothing");

    // 2. Allowed once: curl, unmodified, through the endpoint. Nothing is
    // stored; the next instance asks again.
    let (code, out, err) = s.curl(APP, &format!("http://{d1}/"));
    assert_eq!(
        (code, out.as_str()),
        (0, format!("served by {p1}\n").as_str()),
        "{err}\n{}",
        s.logs()
    );
    s.expect_dialogs(2, "once");
    assert_eq!(s.stored(&d1, APP), None, "once stores nothing");
    let (code, out, _) = s.curl(APP, &format!("http://{d1}/"));
    assert_eq!(code, 0, "{out}");
    s.expect_dialogs(3, "once is asked again next time");

    // 3. Always: stored ["yes"]; then only that destination connects
    // without asking; another is asked (denied always, stored ["no"]).
    let (code, out, err) = s.curl(APP, &format!("http://{d1}/"));
    assert_eq!(code, 0, "{out}{err}");
    s.expect_dialogs(4, "always");
    assert_eq!(s.stored(&d1, APP), Some(vec!["yes".to_owned()]));
    let r = s.client(
        APP,
        &[
            format!("connect:1,127.0.0.1,{p1}"),
            format!("connect:1,127.0.0.1,{p2}"),
            format!("connect:1,127.0.0.1,{p2}"),
        ],
    );
    assert_eq!(rep(&r[0]), Some(0), "{r:?}");
    assert!(
        r[0]["body"]
            .as_str()
            .unwrap_or("")
            .contains(&format!("served by {p1}")),
        "{r:?}"
    );
    assert_eq!(rep(&r[1]), Some(2), "{r:?}");
    assert_eq!(rep(&r[2]), Some(2), "{r:?}");
    s.expect_dialogs(
        5,
        "a grant covers its destination only; deny always is asked once",
    );
    assert_eq!(
        s.stored(&format!("127.0.0.1:{p2}"), APP),
        Some(vec!["no".to_owned()])
    );

    // The fd path: NetworkAccess1.Connect called by the app itself
    // (the probe, through its bus) returns a socket connected to the
    // granted destination, and refuses the denied one.
    let app_dir = s.bus.root().join("app");
    std::fs::create_dir_all(app_dir.join("bin")).unwrap();
    std::fs::copy(bin("porthole-probe"), app_dir.join("bin/porthole-probe")).unwrap();
    let app_opt = format!("--app-dir={}", app_dir.display());
    for (port, expect) in [(p1, "OK"), (p2, "org.freedesktop.portal.Error.NotAllowed")] {
        let (code, out, err) = s.run_with(
            APP,
            &[&app_opt],
            &[],
            &[
                "porthole-probe",
                "net-connect",
                "fd",
                "127.0.0.1",
                &port.to_string(),
            ],
        );
        assert_eq!(code, 0, "{out}{err}");
        let v: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
        assert!(
            v["result"].as_str().unwrap_or("").starts_with(expect),
            "fd path to {port}: {v}"
        );
        if expect == "OK" {
            assert!(
                v["first"].as_str().unwrap().starts_with("HTTP/1.0 200 OK"),
                "{v}"
            );
        }
    }
    s.expect_dialogs(5, "the fd path uses the same grants");

    // 4. Another app does not get this app's grant.
    let r = s.client(OTHER_APP, &[format!("connect:1,127.0.0.1,{p1}")]);
    assert_eq!(rep(&r[0]), Some(2), "{r:?}");
    let d = s.expect_dialogs(6, "another app is asked for itself");
    assert!(dialog_text(&d).contains(OTHER_APP));

    // 5. Revoked: asked again.
    s.permctl(&["revoke", "network", &d1, APP]);
    let r = s.client(APP, &[format!("connect:1,127.0.0.1,{p1}")]);
    assert_eq!(rep(&r[0]), Some(2), "{r:?}");
    s.expect_dialogs(7, "after a revocation the next connection asks again");

    // 6. permctl pre-approves (a name, resolved outside: socks5h), and an
    // expired grant is not honoured.
    s.permctl(&[
        "grant",
        "network",
        &format!("localhost:{p3}"),
        APP,
        "yes",
        "--expires-in",
        "1h",
    ]);
    s.permctl(&[
        "grant",
        "network",
        &format!("127.0.0.1:{p3}"),
        APP,
        "yes",
        "--expires-in",
        "1s",
    ]);
    let (code, out, err) = s.curl(APP, &format!("http://localhost:{p3}/"));
    assert_eq!(
        (code, out.as_str()),
        (0, format!("served by {p3}\n").as_str()),
        "{err}"
    );
    s.expect_dialogs(7, "a pre-approved destination is not asked");
    std::thread::sleep(Duration::from_millis(2100));
    let r = s.client(APP, &[format!("connect:1,127.0.0.1,{p3}")]);
    assert_eq!(rep(&r[0]), Some(2), "expired: {r:?}");
    s.expect_dialogs(8, "an expired grant is asked again");

    // 7. Bad input: refused with the protocol's codes, no dialog, and the
    // endpoint and the portal keep serving.
    s.permctl(&["grant", "network", &format!("[::1]:{p1}"), APP, "no"]);
    let name253 = format!("{a}.{a}.{a}.{}.invalid", "a".repeat(59), a = "a".repeat(61));
    assert_eq!(name253.len(), 253);
    let long255 = format!("{}.{a}.{a}.{a}", "b".repeat(63), a = "a".repeat(63));
    assert_eq!(long255.len(), 255);
    let long254 = long255[1..].to_owned();
    let r = s.client(
        APP,
        &[
            "connect:3,no-such-host.invalid,80".into(),
            "connect:1,127.0.0.1,0".into(),
            format!("connect:3,{long255},80"),
            format!("connect:3,{long254},80"),
            format!("connect:3,{name253},80"),
            format!("connect:4,::1,{p1}"),
            "raw:04010050".into(),
            "raw:050102".into(),
            "raw:0500".into(),
            "raw:0501000501".into(),
            format!("raw:050100050200017f000001{p1:04x}"),
            "raw:05010005010009".into(),
            "raw:ffffffffffffffffffff".into(),
            "raw:0501".into(),
            format!("connect:3,localhost,{p3}"),
        ],
    );
    assert_eq!(rep(&r[0]), Some(4), "unresolvable: {r:?}");
    assert_eq!(rep(&r[1]), Some(1), "port 0: {r:?}");
    assert_eq!(rep(&r[2]), Some(1), "255-byte name: {r:?}");
    assert_eq!(rep(&r[3]), Some(1), "254-byte name: {r:?}");
    assert_eq!(
        rep(&r[4]),
        Some(4),
        "253-byte name is valid, but unresolvable: {r:?}"
    );
    assert_eq!(
        rep(&r[5]),
        Some(2),
        "IPv6 literal, denied as [::1]:PORT: {r:?}"
    );
    assert_eq!(r[6]["reply"], "", "SOCKS4 greeting: closed: {r:?}");
    assert_eq!(r[7]["reply"], "05ff", "no acceptable method: {r:?}");
    assert_eq!(r[8]["reply"], "05ff", "no methods at all: {r:?}");
    assert_eq!(
        r[9]["reply"], "0500",
        "truncated request: greeting answered, then closed: {r:?}"
    );
    assert_eq!(
        r[10]["reply"], "050005070001000000000000",
        "BIND: 0x07: {r:?}"
    );
    assert_eq!(
        r[11]["reply"], "050005080001000000000000",
        "address type 9: 0x08: {r:?}"
    );
    assert_eq!(r[12]["reply"], "", "garbage: closed: {r:?}");
    assert_eq!(r[13]["reply"], "", "truncated greeting: closed: {r:?}");
    assert_eq!(rep(&r[14]), Some(0), "still serving: {r:?}");
    s.expect_dialogs(8, "bad input raises no dialog");

    // 8. A flood of parallel requests for one new destination: one dialog
    // (answered after 1.5 s, allow once), every request connected.
    let r = s.client(APP, &[format!("flood:64,127.0.0.1,{p4}")]);
    assert_eq!(r[0]["ok"], 64, "{r:?}\n{}", s.logs());
    s.expect_dialogs(9, "64 parallel requests share one dialog");

    // permctl reset removes the app's network grants with the rest.
    assert_eq!(
        s.stored(&format!("localhost:{p3}"), APP),
        Some(vec!["yes".to_owned()])
    );
    s.permctl(&["reset", APP]);
    assert_eq!(s.stored(&format!("localhost:{p3}"), APP), None);
    assert_eq!(s.stored(&format!("127.0.0.1:{p2}"), APP), None);
    s.permctl(&["grant", "network", &format!("localhost:{p3}"), APP, "yes"]);

    // 9. Identity: a host process cannot use the app's grants (nor any).
    rt.block_on(async {
        let conn = s.bus.connection().await;
        let reply = conn
            .call_method(
                Some(DESKTOP),
                "/org/freedesktop/portal/desktop",
                Some("org.porthole.NetworkAccess1"),
                "Connect",
                &(
                    "localhost",
                    p3,
                    std::collections::HashMap::<String, zvariant::Value<'_>>::new(),
                ),
            )
            .await;
        let err = reply.expect_err("a host caller got a socket");
        assert!(err.to_string().contains("NotAllowed"), "host caller: {err}");
    });
    s.expect_dialogs(9, "the host's call raises no dialog");
    assert!(
        porthole_tests::pid_alive(s.portals.pid()),
        "the portal died:\n{}",
        s.logs()
    );

    // 10. The environment points at the endpoint; --share=network has
    // neither the endpoint nor the variables.
    let (_, out, _) = s.run(APP, &["/bin/sh", "-c", "echo \"[$ALL_PROXY][$all_proxy]\""]);
    assert_eq!(
        out.trim(),
        "[socks5h://127.0.0.1:1080][socks5h://127.0.0.1:1080]"
    );
    let (_, out, _) = s.run_with(
        APP,
        &["--share=network"],
        &[],
        &["/bin/sh", "-c", "echo \"[$ALL_PROXY][$all_proxy]\""],
    );
    assert_eq!(out.trim(), "[][]");

    // 11. Without a bus the endpoint exists and refuses; the launch does
    // not fail for it.
    let r = {
        let mut args = vec!["/usr/bin/python3", "-c", CLIENT];
        let op = format!("connect:3,localhost,{p3}");
        args.push(&op);
        let (code, out, err) = s.run_with(APP, &[], &[("DBUS_SESSION_BUS_ADDRESS", None)], &args);
        assert_eq!(code, 0, "{out}{err}");
        serde_json::from_str::<serde_json::Value>(out.trim()).unwrap()
    };
    assert_eq!(rep(&r), Some(2), "no bus: {r}");

    // 12. Without the portal on the bus: refused, with a log line.
    s.portals.stop();
    let (code, out, err) = s.curl(APP, &format!("http://localhost:{p3}/"));
    assert!(
        code != 0 && code < 100 && out.is_empty(),
        "curl without a portal: {code} {out} {err}"
    );
    assert!(err.contains("no portal approves"), "{err}");
}

/// `network=ask` metadata: the user is asked at launch (id `*`), the
/// answer kept like the others.
const ASK_SCRIPT: &str = r#"
{"method": "AccessDialog", "response": 0, "choices": [["remember", "always"]]}
{"method": "AccessDialog", "response": 1, "choices": [["remember", "once"]]}
"#;

fn network_ask(who: Who) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let s = rt.block_on(Setup::start(who, ASK_SCRIPT));
    let port = http_server("127.0.0.1:0");
    let app_dir = s.bus.root().join("ask-app");
    std::fs::create_dir_all(&app_dir).unwrap();
    std::fs::write(
        app_dir.join("metadata"),
        format!("[Application]\nname={APP}\n\n[Context]\nnetwork=ask\n"),
    )
    .unwrap();
    let app_opt = format!("--app-dir={}", app_dir.display());
    let direct = |what: &str| -> (String, String) {
        let op = format!("direct:127.0.0.1,{port}");
        let (code, out, err) = s.run_with(
            APP,
            &[&app_opt],
            &[],
            &[
                "/bin/sh",
                "-c",
                "echo \"[$ALL_PROXY]\"; exec /usr/bin/python3 -c \"$0\" \"$1\"",
                CLIENT,
                &op,
            ],
        );
        assert_eq!(code, 0, "{what}: {out}\n{err}\n{}", s.logs());
        let mut lines = out.lines();
        let env = lines.next().unwrap_or_default().to_owned();
        let v: serde_json::Value = serde_json::from_str(lines.next().unwrap_or("{}")).unwrap();
        (env, v["errno"].as_str().unwrap_or("").to_owned())
    };
    // Yes, always: the app shares the network (here the test's own
    // namespace, where the server listens), without the SOCKS5 variables.
    assert_eq!(direct("first launch"), ("[]".into(), "connected".into()));
    let d = s.expect_dialogs(1, "asked at launch");
    assert!(dialog_text(&d).contains("use the network"), "{d}");
    assert_eq!(s.stored("*", APP), Some(vec!["yes".to_owned()]));
    assert_eq!(direct("second launch"), ("[]".into(), "connected".into()));
    s.expect_dialogs(1, "the kept answer is not asked again");
    // Revoked, then denied: its own namespace, the endpoint's variables.
    s.permctl(&["revoke", "network", "*", APP]);
    assert_eq!(
        direct("after revoke"),
        ("[socks5h://127.0.0.1:1080]".into(), "ECONNREFUSED".into())
    );
    s.expect_dialogs(2, "asked again after the revocation");
}

/// Answers for [`rebinding`]: no once, then yes always.
const REBIND_SCRIPT: &str = r#"
{"method": "AccessDialog", "response": 1, "choices": [["remember", "once"]]}
{"method": "AccessDialog", "response": 0, "choices": [["remember", "always"]]}
"#;

/// A name that looks public, and resolves (through the test's /etc/hosts)
/// to this computer.
const REBOUND: &str = "rebind.example.net";

/// DNS rebinding: a grant given for a public-looking name does not follow
/// it to a local address; the user is asked again, told it is local, and an
/// approval then is kept as `["yes", "local"]`. Names that are local by
/// definition keep their plain grants.
fn rebinding(who: Who) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let s = rt.block_on(Setup::start(who, REBIND_SCRIPT));
    let p = http_server("127.0.0.1:0");
    let id = format!("{REBOUND}:{p}");
    let served = format!("served by {p}");
    // Approved beforehand for the name, with nothing said about where it
    // leads (as a user approving a public site would).
    s.permctl(&["grant", "network", &id, APP, "yes"]);
    s.permctl(&["grant", "network", &format!("localhost:{p}"), APP, "yes"]);

    // The plain grant does not reach 127.0.0.1 through the public name:
    // asked (denied here), and the dialog says the destination is local.
    let r = s.client(APP, &[format!("connect:3,{REBOUND},{p}")]);
    assert_eq!(
        rep(&r[0]),
        Some(2),
        "rebound name refused: {r:?}\n{}",
        s.logs()
    );
    let d = s.expect_dialogs(1, "a rebound name is asked again");
    let text = dialog_text(&d);
    assert!(text.contains(&id) && text.contains("local"), "{text}");
    assert_eq!(
        s.stored(&id, APP),
        Some(vec!["yes".to_owned()]),
        "a no once keeps the grant"
    );

    // localhost, local by definition, keeps its plain grant.
    let r = s.client(APP, &[format!("connect:3,localhost,{p}")]);
    assert_eq!(rep(&r[0]), Some(0), "{r:?}");
    s.expect_dialogs(1, "localhost is not asked");

    // Approved always with the warning shown: stored with "local", and
    // from then on it connects without asking.
    let r = s.client(APP, &[format!("connect:3,{REBOUND},{p}")]);
    assert_eq!(rep(&r[0]), Some(0), "{r:?}");
    assert!(
        r[0]["body"].as_str().unwrap_or("").contains(&served),
        "{r:?}"
    );
    s.expect_dialogs(2, "approved as local");
    assert_eq!(
        s.stored(&id, APP),
        Some(vec!["yes".to_owned(), "local".to_owned()])
    );
    let r = s.client(APP, &[format!("connect:3,{REBOUND},{p}")]);
    assert_eq!(rep(&r[0]), Some(0), "{r:?}");
    s.expect_dialogs(2, "a local approval covers the local address");
}

const REBIND_HOSTS: &str = "127.0.0.1 localhost\n::1 localhost\n127.0.0.1 rebind.example.net\n";

#[test]
fn rebinding_to_a_local_address_is_asked_again_as_root() {
    in_own_netns_with_hosts(
        "rebinding_to_a_local_address_is_asked_again_as_root",
        Who::Root,
        Some(REBIND_HOSTS),
        rebinding,
    );
}

#[test]
fn rebinding_to_a_local_address_is_asked_again_as_user() {
    in_own_netns_with_hosts(
        "rebinding_to_a_local_address_is_asked_again_as_user",
        Who::User,
        Some(REBIND_HOSTS),
        rebinding,
    );
}

#[test]
fn network_ask_as_root() {
    in_own_netns("network_ask_as_root", Who::Root, network_ask);
}

#[test]
fn network_ask_as_user() {
    in_own_netns("network_ask_as_user", Who::User, network_ask);
}

#[test]
fn network_grants_as_root() {
    in_own_netns("network_grants_as_root", Who::Root, scenario);
}

#[test]
fn network_grants_as_user() {
    in_own_netns("network_grants_as_user", Who::User, scenario);
}
