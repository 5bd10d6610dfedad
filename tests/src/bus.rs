//! A private `dbus-daemon` per test and our services (or the upstream
//! anchors) on it, all stopped by PID when the test ends.
//!
//! Each [`Bus`] owns a temporary directory holding the daemon's generated
//! config, its socket, a service directory for D-Bus activation, the logs of
//! everything started on it, and private `HOME`, `XDG_DATA_HOME`,
//! `XDG_RUNTIME_DIR` and `XDG_CONFIG_HOME` for the services. When a test
//! panics, the directory is kept and the logs are printed, so a failure can be
//! read after the fact.

use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::process::signal_and_wait;

/// How long a started daemon may take to show up before the test fails.
pub const START_TIMEOUT: Duration = Duration::from_secs(10);

/// A process the harness started; stopped (SIGTERM, then SIGKILL) on drop.
pub struct Service {
    pub name: String,
    child: Option<Child>,
    pub log: PathBuf,
}

impl Service {
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    /// Stops with SIGTERM and returns the exit status.
    pub fn stop(&mut self) -> Option<std::process::ExitStatus> {
        self.stop_with(libc::SIGTERM)
    }

    /// Sends `sig` and reaps the process (SIGKILL after 5 s).
    pub fn stop_with(&mut self, sig: i32) -> Option<std::process::ExitStatus> {
        let mut child = self.child.take()?;
        let pid = child.id();
        // SAFETY: the child is ours and not yet reaped, so the PID is valid.
        unsafe { libc::kill(pid as libc::pid_t, sig) };
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                return Some(status);
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                return child.wait().ok();
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// Waits for the process to exit by itself.
    pub fn wait_timeout(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        let child = self.child.as_mut()?;
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = child.try_wait() {
                self.child = None;
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        None
    }

    pub fn log_text(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A private `dbus-daemon` with its own directory tree.
pub struct Bus {
    dir: Option<tempfile::TempDir>,
    root: PathBuf,
    address: String,
    daemon: Option<Child>,
    activatable: Vec<String>,
}

impl Bus {
    /// Starts a session-type `dbus-daemon` listening on a unix socket in a
    /// new temporary directory.
    pub fn start() -> Bus {
        Self::start_inner(false)
    }

    /// As [`Bus::start`], for tests that run a client as another user (the
    /// launcher's unprivileged runs beside services run by root): the
    /// daemon admits every uid and the directory is traversable by all
    /// (its socket is world-connectable, as dbus-daemon makes it).
    pub fn start_open_to_all_users() -> Bus {
        Self::start_inner(true)
    }

    fn start_inner(open: bool) -> Bus {
        let dir = tempfile::Builder::new()
            .prefix("porthole-test-")
            .tempdir()
            .expect("temp dir");
        let root = dir.path().to_owned();
        for sub in ["services", "home", "data", "config", "runtime", "logs"] {
            fs::create_dir_all(root.join(sub)).expect("mkdir");
        }
        set_mode(&root.join("runtime"), 0o700);
        if open {
            set_mode(&root, 0o755);
        }
        let all_users = if open {
            "\n    <allow user=\"*\"/>"
        } else {
            ""
        };
        let socket = root.join("bus");
        let config = format!(
            r#"<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <type>session</type>
  <keep_umask/>
  <listen>unix:path={socket}</listen>
  <auth>EXTERNAL</auth>
  <servicedir>{services}</servicedir>
  <policy context="default">
    <allow send_destination="*" eavesdrop="true"/>
    <allow eavesdrop="true"/>
    <allow own="*"/>{all_users}
  </policy>
  <limit name="max_message_size">134217728</limit>
  <limit name="reply_timeout">300000</limit>
  <limit name="max_replies_per_connection">50000</limit>
  <limit name="max_incoming_bytes">1000000000</limit>
  <limit name="max_outgoing_bytes">1000000000</limit>
  <limit name="max_connections_per_user">100000</limit>
</busconfig>
"#,
            socket = socket.display(),
            services = root.join("services").display(),
        );
        let conf_path = root.join("bus.conf");
        fs::write(&conf_path, config).expect("write bus config");
        let log = File::create(root.join("logs/dbus-daemon.log")).expect("log");
        let mut cmd = Command::new("dbus-daemon");
        // The daemon prints its address once it accepts connections; the
        // socket file alone appears before listen(2) and would race.
        cmd.arg("--nofork")
            .arg("--nopidfile")
            .arg("--print-address=1")
            .arg(format!("--config-file={}", conf_path.display()))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(log);
        Self::apply_env(&root, &mut cmd, &format!("unix:path={}", socket.display()));
        let mut daemon = cmd
            .spawn()
            .expect("dbus-daemon must be installed (package dbus-daemon)");
        let stdout = daemon.stdout.take().expect("piped stdout");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut line = String::new();
            let mut reader = std::io::BufReader::new(stdout);
            let _ = std::io::BufRead::read_line(&mut reader, &mut line);
            let _ = tx.send(line);
        });
        match rx.recv_timeout(START_TIMEOUT) {
            Ok(line) if line.starts_with("unix:") => {}
            other => panic!("dbus-daemon did not start: {other:?}"),
        }
        Bus {
            dir: Some(dir),
            address: format!("unix:path={}", socket.display()),
            root,
            daemon: Some(daemon),
            activatable: Vec::new(),
        }
    }

    fn apply_env(root: &Path, cmd: &mut Command, address: &str) {
        cmd.env("DBUS_SESSION_BUS_ADDRESS", address)
            .env("HOME", root.join("home"))
            .env("XDG_DATA_HOME", root.join("data"))
            .env("XDG_CONFIG_HOME", root.join("config"))
            .env("XDG_RUNTIME_DIR", root.join("runtime"))
            .env_remove("DBUS_SYSTEM_BUS_ADDRESS")
            .env_remove("PORTHOLE_PERMISSIONS_DB")
            .env_remove("PORTHOLE_FLATPAK_DB_DIR");
    }

    pub fn address(&self) -> &str {
        &self.address
    }

    /// The test's private directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// A portals directory for a frontend's `XDG_DESKTOP_PORTAL_DIR`:
    /// `data/porthole.portal` (our dialog backend) and a `portals.conf`
    /// that prefers it, so the frontend uses `porthole-prompt` as upstream
    /// 1.20 would find it.
    pub fn porthole_portal_dir(&self) -> PathBuf {
        let dir = self.root.join("portals");
        std::fs::create_dir_all(&dir).unwrap();
        let data = Path::new(env!("CARGO_MANIFEST_DIR")).join("../data/porthole.portal");
        std::fs::copy(&data, dir.join("porthole.portal")).unwrap();
        std::fs::write(dir.join("portals.conf"), "[preferred]\ndefault=porthole\n").unwrap();
        dir
    }

    /// A host file `host/picked.txt` holding `content`, and a
    /// `porthole-prompt` script answering OpenFile with it (the scripted
    /// backend repeats its last answer, so every call picks it); returns
    /// the script's path.
    pub fn picked_file_script(&self, content: &str) -> PathBuf {
        let host = self.root.join("host");
        std::fs::create_dir_all(&host).unwrap();
        let picked = host.join("picked.txt");
        std::fs::write(&picked, content).unwrap();
        let script = self.root.join("script.jsonl");
        std::fs::write(
            &script,
            format!(
                "{{\"method\": \"OpenFile\", \"uris\": [\"file://{}\"]}}\n",
                picked.display()
            ),
        )
        .unwrap();
        script
    }

    /// The private `XDG_DATA_HOME` every service on this bus gets.
    pub fn data_home(&self) -> PathBuf {
        self.root.join("data")
    }

    pub fn runtime_dir(&self) -> PathBuf {
        self.root.join("runtime")
    }

    /// A command with this bus's environment (bus address, private XDG dirs).
    pub fn command(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut cmd = Command::new(program);
        Self::apply_env(&self.root, &mut cmd, &self.address);
        cmd
    }

    /// Starts `cmd` with its output in `logs/<name>.log`.
    pub fn spawn(&self, name: &str, mut cmd: Command) -> Service {
        let log = self.root.join("logs").join(format!("{name}.log"));
        let file = File::create(&log).expect("log file");
        cmd.stdin(Stdio::null())
            .stdout(file.try_clone().expect("log fd"))
            .stderr(file);
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("starting {name}: {e}"));
        Service {
            name: name.to_owned(),
            child: Some(child),
            log,
        }
    }

    /// Starts `cmd` and waits until `bus_name` has an owner on this bus.
    pub async fn spawn_owning(&self, name: &str, cmd: Command, bus_name: &str) -> Service {
        let mut service = self.spawn(name, cmd);
        let conn = self.connection().await;
        let dbus = zbus::fdo::DBusProxy::new(&conn).await.expect("DBus proxy");
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            let owned = dbus
                .name_has_owner(bus_name.try_into().expect("valid bus name"))
                .await
                .unwrap_or(false);
            if owned {
                return service;
            }
            if let Some(status) = service.wait_timeout(Duration::from_millis(0)) {
                panic!(
                    "{name} exited with {status} before owning {bus_name}:\n{}",
                    service.log_text()
                );
            }
            assert!(
                Instant::now() < deadline,
                "{name} did not own {bus_name} in time:\n{}",
                service.log_text()
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Starts our permission store, then the document store `program` (ours
    /// or upstream's xdg-document-portal, which keeps its documents in that
    /// store), each waited for until it owns its name; `verbose` passes
    /// `--verbose` to the document store. Returns (store, document store):
    /// keep both for the test's length.
    pub async fn start_document_store(&self, program: &Path, verbose: bool) -> (Service, Service) {
        let store = self
            .spawn_owning(
                "permission-store",
                self.command(crate::process::bin("porthole-permission-store")),
                "org.freedesktop.impl.portal.PermissionStore",
            )
            .await;
        let mut cmd = self.command(program);
        if verbose {
            cmd.arg("--verbose");
        }
        let docs = self
            .spawn_owning("documents", cmd, "org.freedesktop.portal.Documents")
            .await;
        (store, docs)
    }

    /// Makes `bus_name` activatable: the daemon starts `exec` (with this
    /// bus's environment) on the first message to it.
    pub fn add_activatable(&mut self, bus_name: &str, exec: &str) {
        let file = self
            .root
            .join("services")
            .join(format!("{bus_name}.service"));
        let mut f = File::create(file).expect("service file");
        writeln!(f, "[D-BUS Service]\nName={bus_name}\nExec={exec}").expect("write service file");
        self.activatable.push(bus_name.to_owned());
        // dbus-daemon rescans the service dir on a miss, no reload needed.
    }

    /// A new client connection to this bus.
    pub async fn connection(&self) -> zbus::Connection {
        zbus::connection::Builder::address(self.address.as_str())
            .expect("bus address")
            .build()
            .await
            .expect("connecting to the test bus")
    }

    /// A monitor of this bus (org.freedesktop.DBus.Monitoring): every
    /// message that matches one of `rules` (match-rule strings; none: every
    /// message), in the order the bus routes them. What a person runs
    /// `dbus-monitor` for, so a test can assert what went over the bus.
    pub async fn monitor(&self, rules: &[&str]) -> zbus::MessageStream {
        let conn = self.connection().await;
        let stream = zbus::MessageStream::from(&conn);
        conn.call_method(
            Some("org.freedesktop.DBus"),
            "/org/freedesktop/DBus",
            Some("org.freedesktop.DBus.Monitoring"),
            "BecomeMonitor",
            &(rules.to_vec(), 0u32),
        )
        .await
        .expect("BecomeMonitor");
        stream
    }

    /// Stops activated services by the PID the bus reports for their name.
    fn stop_activated(&self) {
        if self.activatable.is_empty() {
            return;
        }
        for name in &self.activatable {
            let out = Command::new("gdbus")
                .args([
                    "call",
                    "--address",
                    &self.address,
                    "--dest",
                    "org.freedesktop.DBus",
                ])
                .args(["--object-path", "/org/freedesktop/DBus"])
                .args([
                    "--method",
                    "org.freedesktop.DBus.GetConnectionUnixProcessID",
                    name,
                ])
                .stderr(Stdio::null())
                .output();
            let Ok(out) = out else { continue };
            let text = String::from_utf8_lossy(&out.stdout);
            // "(uint32 1234,)"
            let pid = text
                .split_whitespace()
                .nth(1)
                .and_then(|s| s.trim_end_matches(",)").parse::<u32>().ok());
            if let Some(pid) = pid
                && !signal_and_wait(pid, libc::SIGTERM, Duration::from_secs(3))
            {
                signal_and_wait(pid, libc::SIGKILL, Duration::from_secs(2));
            }
        }
    }

    /// Every log file written so far, for failure reports.
    pub fn logs(&self) -> String {
        let mut out = String::new();
        if let Ok(entries) = fs::read_dir(self.root.join("logs")) {
            for e in entries.flatten() {
                let text = fs::read_to_string(e.path()).unwrap_or_default();
                out.push_str(&format!("==== {} ====\n{text}\n", e.path().display()));
            }
        }
        out
    }
}

impl Drop for Bus {
    fn drop(&mut self) {
        self.stop_activated();
        if let Some(mut daemon) = self.daemon.take() {
            let _ = daemon.kill();
            let _ = daemon.wait();
        }
        if std::thread::panicking()
            && let Some(dir) = self.dir.take()
        {
            let kept = dir.keep();
            eprintln!("test failed; logs kept in {}", kept.display());
            eprintln!("{}", self.logs());
        }
    }
}

fn set_mode(path: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).expect("chmod");
}

/// Calls `method` with an arbitrary body (so wrong argument types can be
/// sent) and returns the D-Bus error name of the reply, or `None` when the
/// call succeeded.
pub async fn call_error_name<B>(
    conn: &zbus::Connection,
    dest: &str,
    path: &str,
    interface: &str,
    method: &str,
    body: &B,
) -> Option<String>
where
    B: serde::Serialize + zvariant::DynamicType,
{
    match conn
        .call_method(Some(dest), path, Some(interface), method, body)
        .await
    {
        Ok(_) => None,
        Err(zbus::Error::MethodError(name, _, _)) => Some(name.to_string()),
        Err(e) => panic!("{method}: not a D-Bus error reply: {e}"),
    }
}

/// The service the D-Bus proxy tests call through the proxy:
/// `org.example.Iface` with plain methods and fds in both directions.
pub struct ExampleIface;

#[zbus::interface(name = "org.example.Iface")]
impl ExampleIface {
    fn allowed(&self) -> String {
        "allowed".into()
    }
    fn other(&self) -> String {
        "other".into()
    }
    /// Reads the file behind a passed fd.
    fn read_fd(&self, fd: zvariant::OwnedFd) -> String {
        use std::io::Read;
        let mut f = std::fs::File::from(std::os::fd::OwnedFd::from(fd));
        let mut s = String::new();
        let _ = f.read_to_string(&mut s);
        s
    }
    /// Returns an fd to a file holding "from-service".
    fn make_fd(&self) -> zvariant::OwnedFd {
        use std::io::{Seek, Write};
        let mut f = tempfile::tempfile().expect("tempfile");
        f.write_all(b"from-service").expect("write");
        f.rewind().expect("rewind");
        zvariant::OwnedFd::from(std::os::fd::OwnedFd::from(f))
    }
}

/// Owns `name` on `bus` and serves [`ExampleIface`] at each of `paths`.
pub async fn serve_example(bus: &Bus, name: &str, paths: &[&str]) -> zbus::Connection {
    let mut b = zbus::connection::Builder::address(bus.address())
        .unwrap()
        .name(name.to_owned())
        .unwrap();
    for p in paths {
        b = b.serve_at(*p, ExampleIface).unwrap();
    }
    b.build()
        .await
        .unwrap_or_else(|e| panic!("serving {name}: {e}"))
}
