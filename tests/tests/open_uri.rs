//! OpenURI as a user meets it: `porthole-portals` with our scripted
//! `porthole-prompt` as its AppChooser (found through data/porthole.portal),
//! our permission store, and handlers that are real desktop entries in the
//! bus's `$XDG_DATA_HOME/applications` whose `Exec` is a script writing a
//! marker file, all on a private bus. What is asserted is what a user sees:
//! the handler started (with the URI or the file's path), a dialog shown or
//! not (the prompt's `--record`), the remembered choice in `permctl`.

use std::collections::HashMap;
use std::os::fd::AsFd;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use porthole_tests::portal::{Options, opt, options, predicted};
use porthole_tests::{Bus, Service, bin, call_error_name, run_with_timeout};
use zbus::MatchRule;
use zbus::message::Type as MessageType;
use zvariant::{Fd, OwnedObjectPath, OwnedValue, Value};

const DESKTOP: &str = "org.freedesktop.portal.Desktop";
const DESKTOP_PATH: &str = "/org/freedesktop/portal/desktop";
const OPEN_URI: &str = "org.freedesktop.portal.OpenURI";
const REQUEST: &str = "org.freedesktop.portal.Request";
const PROMPT: &str = "org.freedesktop.impl.portal.desktop.porthole";
const STORE: &str = "org.freedesktop.impl.portal.PermissionStore";
const INVALID_ARGUMENT: &str = "org.freedesktop.portal.Error.InvalidArgument";
/// The app every caller is, through upstream's test hook.
const CALLER: &str = "org.example.Caller";
/// The handlers' ids (desktop ids without `.desktop`).
const MARKER: &str = "org.example.Marker";
const OTHER: &str = "org.example.Other";

/// The services on one bus, the handlers installed, the marker file.
/// Fields drop in order: the services stop before the bus goes.
struct Portal {
    /// Terminal mode: the prompt, its standard input, and where its
    /// standard output goes.
    terminal: Option<(std::process::Child, std::process::ChildStdin, PathBuf)>,
    _services: Vec<Service>,
    record: PathBuf,
    marker: PathBuf,
    bus: Bus,
}

impl Portal {
    /// Every caller is [`CALLER`] (upstream's test hook).
    async fn start(script: &str) -> Portal {
        Self::start_on(Bus::start(), Vec::new(), Some(script), true).await
    }

    /// `test_hook`: every caller is [`CALLER`]; otherwise callers are who
    /// they are (a sandboxed app by its instance info). `stores` stop
    /// after the portal.
    /// `script`: the prompt's answers, or None for its terminal mode.
    async fn start_on(
        bus: Bus,
        stores: Vec<Service>,
        script: Option<&str>,
        test_hook: bool,
    ) -> Portal {
        let portals = bus.porthole_portal_dir();
        // Two handlers of a private scheme, plain text and https; each
        // writes "ID|ARG|PARENT_WINDOW_ID|XDG_ACTIVATION_TOKEN" to the
        // marker.
        let marker = bus.root().join("marker");
        let handler = bus.root().join("handler.sh");
        std::fs::write(
            &handler,
            format!(
                "#!/bin/sh\nprintf '%s|%s|%s|%s\\n' \"$1\" \"$2\" \"$PARENT_WINDOW_ID\" \"$XDG_ACTIVATION_TOKEN\" >> {}\n",
                marker.display()
            ),
        )
        .unwrap();
        std::fs::set_permissions(&handler, std::fs::Permissions::from_mode(0o755)).unwrap();
        let apps = bus.data_home().join("applications");
        std::fs::create_dir_all(&apps).unwrap();
        for id in [MARKER, OTHER] {
            std::fs::write(
                apps.join(format!("{id}.desktop")),
                format!(
                    "[Desktop Entry]\nType=Application\nName={id}\nExec={} {id} %u\n\
                     MimeType=x-scheme-handler/porthole-test;text/plain;x-scheme-handler/https;\n",
                    handler.display()
                ),
            )
            .unwrap();
        }
        let system = bus.root().join("system");
        std::fs::create_dir_all(&system).unwrap();
        std::os::unix::fs::symlink("/usr/share/mime", system.join("mime")).unwrap();
        let script_path = bus.root().join("script.jsonl");
        std::fs::write(&script_path, script.unwrap_or_default()).unwrap();
        let record = bus.root().join("record.jsonl");

        let store = if stores.is_empty() {
            Some(
                bus.spawn_owning(
                    "permission-store",
                    bus.command(bin("porthole-permission-store")),
                    STORE,
                )
                .await,
            )
        } else {
            None
        };
        let mut cmd = bus.command(bin("porthole-prompt"));
        cmd.arg("-v").arg("--record").arg(&record);
        let mut terminal = None;
        let mut services = Vec::new();
        if script.is_some() {
            cmd.arg("--script").arg(&script_path);
            services.push(bus.spawn_owning("prompt", cmd, PROMPT).await);
        } else {
            let shown = bus.root().join("logs/terminal.out");
            let log = std::fs::File::create(bus.root().join("logs/prompt.log")).unwrap();
            cmd.arg("--terminal")
                .stdin(std::process::Stdio::piped())
                .stdout(std::fs::File::create(&shown).unwrap())
                .stderr(log);
            let mut child = cmd.spawn().unwrap();
            let input = child.stdin.take().unwrap();
            terminal = Some((child, input, shown));
            let dbus = zbus::fdo::DBusProxy::new(&bus.connection().await)
                .await
                .unwrap();
            let deadline = Instant::now() + Duration::from_secs(10);
            while !dbus
                .name_has_owner(PROMPT.try_into().unwrap())
                .await
                .unwrap()
            {
                assert!(Instant::now() < deadline, "no prompt:\n{}", bus.logs());
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
        let mut cmd = bus.command(bin("porthole-portals"));
        cmd.arg("-v").env("XDG_DESKTOP_PORTAL_DIR", &portals);
        if test_hook {
            cmd.env("XDG_DESKTOP_PORTAL_TEST_APP_ID", CALLER);
        }
        cmd
            // Only this test's applications, and the system's MIME database.
            .env("XDG_DATA_DIRS", &system)
            .env("XDG_CONFIG_DIRS", bus.root().join("no-system-config"));
        let frontend = bus.spawn_owning("portals", cmd, DESKTOP).await;
        services.insert(0, frontend);
        services.extend(stores);
        services.extend(store);
        Portal {
            terminal,
            _services: services,
            record,
            marker,
            bus,
        }
    }

    /// The dialogs the backend showed so far.
    fn records(&self) -> Vec<serde_json::Value> {
        std::fs::read_to_string(&self.record)
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    /// The handler starts so far: (handler, argument, parent window, token).
    fn launches(&self) -> Vec<[String; 4]> {
        std::fs::read_to_string(&self.marker)
            .unwrap_or_default()
            .lines()
            .map(|l| {
                let parts: Vec<String> = l.split('|').map(str::to_owned).collect();
                [0, 1, 2, 3].map(|i| parts.get(i).cloned().unwrap_or_default())
            })
            .collect()
    }

    /// Waits until `n` handler starts are in the marker file.
    async fn wait_launches(&self, n: usize) -> Vec<[String; 4]> {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let got = self.launches();
            if got.len() >= n {
                return got;
            }
            assert!(
                Instant::now() < deadline,
                "{} handler starts, expected {n}:\n{}",
                got.len(),
                self.bus.logs()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// `permctl ARGS` on this bus: (success, stdout).
    fn permctl(&self, args: &[&str]) -> (bool, String) {
        let mut cmd = self.bus.command(bin("permctl"));
        cmd.args(args);
        let (status, out, err) = run_with_timeout(&mut cmd, Duration::from_secs(30));
        assert!(status.success() || !err.is_empty(), "permctl {args:?}");
        (status.success(), out)
    }
}

impl Portal {
    /// Terminal mode: waits until the prompt has shown `marker`.
    async fn wait_shown(&self, marker: &str) -> String {
        let (_, _, shown) = self.terminal.as_ref().expect("terminal mode");
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let text = std::fs::read_to_string(shown).unwrap_or_default();
            if text.contains(marker) {
                return text;
            }
            assert!(
                Instant::now() < deadline,
                "the prompt never showed {marker:?}:\n{text}\n{}",
                self.bus.logs()
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    fn type_in(&mut self, text: &str) {
        use std::io::Write;
        let (_, input, _) = self.terminal.as_mut().expect("terminal mode");
        input.write_all(text.as_bytes()).unwrap();
        input.flush().unwrap();
    }
}

impl Drop for Portal {
    fn drop(&mut self) {
        if let Some((child, _, _)) = &mut self.terminal {
            porthole_tests::signal_and_wait(child.id(), libc::SIGTERM, Duration::from_secs(5));
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Calls `method` with `args` (the handle_token `token` added to the
/// options inside) and waits for the Response; Err is the method error.
async fn request<B>(
    conn: &zbus::Connection,
    method: &str,
    token: &str,
    args: B,
) -> Result<(u32, Options), String>
where
    B: serde::Serialize + zvariant::DynamicType,
{
    let path = predicted(conn, token);
    let rule = MatchRule::builder()
        .msg_type(MessageType::Signal)
        .interface(REQUEST)
        .unwrap()
        .member("Response")
        .unwrap()
        .path(path.clone())
        .unwrap()
        .build();
    let mut stream = zbus::MessageStream::for_match_rule(rule, conn, None)
        .await
        .unwrap();
    let reply = conn
        .call_method(Some(DESKTOP), DESKTOP_PATH, Some(OPEN_URI), method, &args)
        .await;
    match reply {
        Ok(m) => {
            let handle: OwnedObjectPath = m.body().deserialize().unwrap();
            assert_eq!(handle.as_str(), path, "the handle is upstream's formula");
        }
        Err(zbus::Error::MethodError(name, _, _)) => return Err(name.to_string()),
        Err(e) => return Err(e.to_string()),
    }
    let msg = tokio::time::timeout(Duration::from_secs(15), stream.next())
        .await
        .expect("a Response in time")
        .unwrap()
        .unwrap();
    Ok(msg.body().deserialize::<(u32, Options)>().unwrap())
}

async fn open_uri(
    conn: &zbus::Connection,
    uri: &str,
    token: &str,
    mut opts: Options,
) -> Result<u32, String> {
    opts.insert("handle_token".into(), opt(Value::from(token)));
    request(conn, "OpenURI", token, ("parent:1", uri, opts))
        .await
        .map(|(code, results)| {
            assert!(results.is_empty(), "OpenURI results are empty: {results:?}");
            code
        })
}

async fn open_fd(
    conn: &zbus::Connection,
    method: &str,
    fd: std::os::fd::BorrowedFd<'_>,
    token: &str,
    mut opts: Options,
) -> Result<u32, String> {
    opts.insert("handle_token".into(), opt(Value::from(token)));
    request(conn, method, token, ("", Fd::from(fd), opts))
        .await
        .map(|r| r.0)
}

/// The caller's remembered handler for `id` in `desktop-used-apps`, as
/// `permctl --json list desktop-used-apps ID` shows it.
fn remembered(portal: &Portal, id: &str) -> Option<Vec<String>> {
    let (ok, out) = portal.permctl(&["--json", "list", "desktop-used-apps", id]);
    if !ok {
        return None;
    }
    let rows: serde_json::Value =
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"));
    let perms = rows[0]["apps"][CALLER]["permissions"].as_array()?;
    Some(
        perms
            .iter()
            .map(|p| p.as_str().unwrap().to_owned())
            .collect(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_https_uri_opens_in_the_default_handler_without_a_dialog() {
    let portal = Portal::start(r#"{"method": "ChooseApplication", "response": 1}"#).await;
    let conn = portal.bus.connection().await;
    let opts = options(vec![("activation_token", Value::from("tok-1"))]);
    assert_eq!(
        open_uri(&conn, "https://example.org/a?b=c", "web", opts).await,
        Ok(0)
    );
    let launches = portal.wait_launches(1).await;
    // GIO's default for a type without a mimeapps.list default: the first
    // associated handler (desktop ids in order).
    assert_eq!(
        launches[0],
        [MARKER, "https://example.org/a?b=c", "parent:1", "tok-1"].map(String::from)
    );
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(portal.records().is_empty(), "no dialog for a web URI");
    // A direct start is not a choice: nothing is remembered.
    assert_eq!(remembered(&portal, "x-scheme-handler/https"), None);
    // The app may insist on the dialog: cancelled here, nothing starts.
    let ask = options(vec![("ask", Value::from(true))]);
    assert_eq!(
        open_uri(&conn, "https://example.org/", "asked", ask).await,
        Ok(1)
    );
    let records = portal.records();
    assert_eq!(records.len(), 1);
    assert_eq!(records[0]["method"], "ChooseApplication");
    assert_eq!(records[0]["app_id"], CALLER);
    assert_eq!(
        records[0]["options"]["content_type"],
        "x-scheme-handler/https"
    );
    assert_eq!(records[0]["options"]["uri"], "https://example.org/");
    assert_eq!(records[0]["options"]["last_choice"], MARKER);
    assert_eq!(
        records[0]["options"]["choices"],
        serde_json::json!([MARKER, OTHER])
    );
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(
        portal.launches().len(),
        1,
        "a cancelled dialog starts nothing"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_choice_made_three_times_is_remembered_until_permctl_revokes_it() {
    let portal = Portal::start(&format!(
        r#"{{"method": "ChooseApplication", "choice": "{OTHER}"}}"#
    ))
    .await;
    let conn = portal.bus.connection().await;
    let id = "x-scheme-handler/porthole-test";
    // Three dialogs, each choosing OTHER: counted 1, 2, 3 of 3.
    for (i, count) in ["1", "2", "3"].into_iter().enumerate() {
        let uri = format!("porthole-test:item/{i}");
        assert_eq!(
            open_uri(&conn, &uri, &format!("t{i}"), Options::new()).await,
            Ok(0)
        );
        let launches = portal.wait_launches(i + 1).await;
        assert_eq!(launches[i][0], OTHER);
        assert_eq!(launches[i][1], uri);
        assert_eq!(portal.records().len(), i + 1, "dialog {i}");
        assert_eq!(
            remembered(&portal, id),
            Some(vec![OTHER.to_owned(), count.to_owned(), "3".to_owned()]),
            "after dialog {i}"
        );
    }
    // Now the remembered handler opens it without a dialog.
    assert_eq!(
        open_uri(&conn, "porthole-test:item/3", "t3", Options::new()).await,
        Ok(0)
    );
    let launches = portal.wait_launches(4).await;
    assert_eq!(launches[3][0], OTHER);
    assert_eq!(portal.records().len(), 3, "the fourth open asked nothing");
    // permctl shows it, and revoking it makes the portal ask again.
    let (ok, listing) = portal.permctl(&["list", "desktop-used-apps"]);
    assert!(
        ok && listing.contains(id) && listing.contains(OTHER),
        "{listing}"
    );
    let (ok, _) = portal.permctl(&["revoke", "desktop-used-apps", id, CALLER]);
    assert!(ok);
    assert_eq!(remembered(&portal, id), None);
    assert_eq!(
        open_uri(&conn, "porthole-test:item/4", "t4", Options::new()).await,
        Ok(0)
    );
    portal.wait_launches(5).await;
    assert_eq!(portal.records().len(), 4, "asked again after the revoke");
    // `permctl reset APP` forgets it as well.
    let (ok, _) = portal.permctl(&["reset", CALLER]);
    assert!(ok);
    assert_eq!(remembered(&portal, id), None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_opens_by_its_content_type_and_the_handler_gets_its_path() {
    let portal = Portal::start(&format!(
        r#"{{"method": "ChooseApplication", "choice": "{MARKER}"}}"#
    ))
    .await;
    let conn = portal.bus.connection().await;
    let file = portal.bus.root().join("home/notes");
    std::fs::write(&file, "plain words\n").unwrap();
    let f = std::fs::File::open(&file).unwrap();
    assert_eq!(
        open_fd(&conn, "OpenFile", f.as_fd(), "file", Options::new()).await,
        Ok(0)
    );
    let launches = portal.wait_launches(1).await;
    assert_eq!(launches[0][0], MARKER);
    assert_eq!(launches[0][1], format!("file://{}", file.display()));
    let records = portal.records();
    assert_eq!(records[0]["options"]["content_type"], "text/plain");
    assert_eq!(records[0]["options"]["filename"], "notes");
    assert_eq!(
        remembered(&portal, "text/plain"),
        Some(vec![MARKER.to_owned(), "1".to_owned(), "3".to_owned()])
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dangerous_uris_and_files_are_refused_without_a_dialog() {
    let portal = Portal::start(&format!(
        r#"{{"method": "ChooseApplication", "choice": "{MARKER}"}}"#
    ))
    .await;
    let conn = portal.bus.connection().await;
    // file: URIs must come as fds (upstream); invalid URIs are refused.
    for (i, uri) in [
        "file:///etc/passwd",
        "FILE:///etc/passwd",
        "not a uri",
        "https://exa mple.org/",
        "porthole-test://[::zz]/",
    ]
    .into_iter()
    .enumerate()
    {
        assert_eq!(
            open_uri(&conn, uri, &format!("u{i}"), Options::new()).await,
            Ok(2),
            "{uri}"
        );
    }
    // Programs and launchers, whatever their names say.
    let home = portal.bus.root().join("home");
    let elf = home.join("holiday.txt");
    std::fs::copy("/bin/true", &elf).unwrap();
    std::fs::set_permissions(&elf, std::fs::Permissions::from_mode(0o644)).unwrap();
    let script = home.join("notes");
    std::fs::write(&script, "#!/bin/sh\ntouch /tmp/pwned\n").unwrap();
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    let launcher = home.join("game.desktop");
    std::fs::write(
        &launcher,
        "[Desktop Entry]\nType=Application\nName=x\nExec=sh -c 'touch /tmp/pwned'\n",
    )
    .unwrap();
    let shell = home.join("setup.sh");
    std::fs::write(&shell, "#!/bin/sh\necho hi\n").unwrap();
    for (i, path) in [&elf, &script, &launcher, &shell].into_iter().enumerate() {
        let f = std::fs::File::open(path).unwrap();
        assert_eq!(
            open_fd(
                &conn,
                "OpenFile",
                f.as_fd(),
                &format!("f{i}"),
                Options::new()
            )
            .await,
            Ok(2),
            "{}",
            path.display()
        );
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(portal.records().is_empty(), "{:?}", portal.records());
    assert!(portal.launches().is_empty(), "{:?}", portal.launches());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancelled_dialog_is_response_1_and_starts_nothing() {
    let portal = Portal::start(r#"{"method": "ChooseApplication", "response": 1}"#).await;
    let conn = portal.bus.connection().await;
    assert_eq!(
        open_uri(&conn, "porthole-test:x", "c", Options::new()).await,
        Ok(1)
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(portal.records().len(), 1);
    assert!(portal.launches().is_empty());
    assert_eq!(remembered(&portal, "x-scheme-handler/porthole-test"), None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_option_types_are_invalid_argument() {
    let portal = Portal::start(r#"{"method": "ChooseApplication", "response": 1}"#).await;
    let conn = portal.bus.connection().await;
    for (i, (key, value)) in [
        ("writable", Value::from("yes")),
        ("ask", Value::from(1u32)),
        ("activation_token", Value::from(true)),
    ]
    .into_iter()
    .enumerate()
    {
        let opts = options(vec![(key, value)]);
        assert_eq!(
            open_uri(&conn, "porthole-test:x", &format!("o{i}"), opts).await,
            Err(INVALID_ARGUMENT.to_owned()),
            "{key}"
        );
    }
    let name = call_error_name(
        &conn,
        DESKTOP,
        DESKTOP_PATH,
        OPEN_URI,
        "SchemeSupported",
        &("", HashMap::<String, OwnedValue>::new()),
    )
    .await;
    assert_eq!(name.as_deref(), Some(INVALID_ARGUMENT));
    let supported = |scheme: &'static str| {
        let conn = conn.clone();
        async move {
            let reply = conn
                .call_method(
                    Some(DESKTOP),
                    DESKTOP_PATH,
                    Some(OPEN_URI),
                    "SchemeSupported",
                    &(scheme, HashMap::<String, OwnedValue>::new()),
                )
                .await
                .unwrap();
            reply.body().deserialize::<bool>().unwrap()
        }
    };
    assert!(supported("porthole-test").await);
    assert!(!supported("bogusnonexistanthandler").await);
    assert!(portal.records().is_empty());
}

/// fd checks as upstream's `xdp_app_info_get_path_for_fd`. As root the
/// portal may read every file, so the unreadable O_PATH case runs again as
/// the test user (the test starts itself as `porthole-test`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fds_that_do_not_prove_access_are_refused() {
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    let portal = Portal::start(&format!(
        r#"{{"method": "ChooseApplication", "choice": "{MARKER}"}}"#
    ))
    .await;
    let conn = portal.bus.connection().await;
    let home = portal.bus.root().join("home");
    let file = home.join("letter");
    std::fs::write(&file, "dear reader\n").unwrap();
    let nofollow = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_PATH | libc::O_NOFOLLOW)
        .open(&file)
        .unwrap();
    let write_only = std::fs::OpenOptions::new().write(true).open(&file).unwrap();
    let (pipe, _w) = std::io::pipe().unwrap();
    let cases: Vec<(&str, std::os::fd::BorrowedFd<'_>, Options)> = vec![
        ("O_PATH|O_NOFOLLOW", nofollow.as_fd(), Options::new()),
        ("write-only", write_only.as_fd(), Options::new()),
        ("a pipe", pipe.as_fd(), Options::new()),
    ];
    for (i, (what, fd, opts)) in cases.into_iter().enumerate() {
        assert_eq!(
            open_fd(&conn, "OpenFile", fd, &format!("b{i}"), opts).await,
            Ok(2),
            "{what}"
        );
    }
    // (`writable` with a read-only fd is refused only for sandboxed
    // callers: upstream counts every fd of a host app as writable.)
    // An O_PATH fd to a file it cannot read.
    let secret = home.join("secret");
    std::fs::write(&secret, "not for you\n").unwrap();
    std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o000)).unwrap();
    let opath = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_PATH)
        .open(&secret)
        .unwrap();
    let got = open_fd(&conn, "OpenFile", opath.as_fd(), "secret", Options::new()).await;
    if !root {
        assert_eq!(got, Ok(2), "an unreadable file through O_PATH");
    }
    // A readable O_PATH fd is taken, as upstream takes GTK's.
    let readable = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_PATH)
        .open(&file)
        .unwrap();
    assert_eq!(
        open_fd(&conn, "OpenFile", readable.as_fd(), "ok", Options::new()).await,
        Ok(0)
    );
    let launches = portal.wait_launches(1).await;
    assert!(
        launches
            .iter()
            .all(|l| l[1] != format!("file://{}", secret.display()))
            || root,
        "{launches:?}"
    );
    assert!(
        launches
            .iter()
            .any(|l| l[1] == format!("file://{}", file.display()))
    );
    if root {
        as_test_user("fds_that_do_not_prove_access_are_refused");
    }
}

/// Runs this test binary's test `name` again as `porthole-test`.
fn as_test_user(name: &str) {
    let Some((uid, gid)) = test_user() else {
        porthole_tests::skipped(&format!(
            "{name} as porthole-test: no such user (scripts/install-deps creates it)"
        ));
        return;
    };
    // setpriv drops the supplementary groups too (root's would stay with
    // a plain setuid).
    let mut cmd = std::process::Command::new("setpriv");
    cmd.arg(format!("--reuid={uid}"))
        .arg(format!("--regid={gid}"))
        .arg("--clear-groups")
        .arg(std::env::current_exe().unwrap())
        .args(["--exact", name, "--nocapture", "--test-threads=1"])
        .env("HOME", "/tmp")
        .env("TMPDIR", "/tmp")
        .env("PORTHOLE_BIN_DIR", porthole_tests::bin_dir());
    let (status, out, err) = run_with_timeout(&mut cmd, Duration::from_secs(120));
    assert!(
        status.success() && out.contains("1 passed"),
        "{name} as porthole-test: {status}\n{out}\n{err}"
    );
}

fn test_user() -> Option<(u32, u32)> {
    let passwd = std::fs::read_to_string("/etc/passwd").ok()?;
    let line = passwd.lines().find(|l| l.starts_with("porthole-test:"))?;
    let fields: Vec<&str> = line.split(':').collect();
    Some((fields.get(2)?.parse().ok()?, fields.get(3)?.parse().ok()?))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn open_directory_opens_the_containing_folder() {
    let portal = Portal::start(&format!(
        r#"{{"method": "ChooseApplication", "choice": "{MARKER}"}}"#
    ))
    .await;
    // A folder handler, so the folder opens without a dialog (its default).
    let apps = portal.bus.data_home().join("applications");
    std::fs::write(
        apps.join("org.example.Files.desktop"),
        format!(
            "[Desktop Entry]\nType=Application\nName=Files\nExec={} org.example.Files %U\nMimeType=inode/directory;\n",
            portal.bus.root().join("handler.sh").display()
        ),
    )
    .unwrap();
    let conn = portal.bus.connection().await;
    let dir = portal.bus.root().join("home/photos");
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("cat.png");
    std::fs::write(&file, b"\x89PNG\r\n\x1a\n").unwrap();
    let f = std::fs::File::open(&file).unwrap();
    assert_eq!(
        open_fd(&conn, "OpenDirectory", f.as_fd(), "dir", Options::new()).await,
        Ok(0)
    );
    let launches = portal.wait_launches(1).await;
    assert_eq!(launches[0][0], "org.example.Files");
    assert_eq!(launches[0][1], format!("file://{}", dir.display()));
    assert!(portal.records().is_empty());
}

/// The sandboxed app: OpenFile on files in its own data directory (visible
/// at the same path inside), each fd opened as named; prints one JSON
/// object of the response codes.
const APP: &str = r#"
import dbus, dbus.mainloop.glib, json, os, sys
from gi.repository import GLib
dbus.mainloop.glib.DBusGMainLoop(set_as_default=True)
bus = dbus.SessionBus()
portal = dbus.Interface(bus.get_object('org.freedesktop.portal.Desktop', '/org/freedesktop/portal/desktop'), 'org.freedesktop.portal.OpenURI')
sender = bus.get_unique_name()[1:].replace('.', '_')
cases = json.loads(sys.argv[1])
codes = {}
loop = GLib.MainLoop()
def step(i):
    if i == len(cases):
        print(json.dumps(codes)); sys.stdout.flush(); loop.quit(); return
    name, path, mode, writable = cases[i]
    token = 'c%d' % i
    handle = '/org/freedesktop/portal/desktop/request/%s/%s' % (sender, token)
    holder = {}
    def on_response(code, results):
        codes[name] = int(code)
        holder['m'].remove()
        step(i + 1)
    holder['m'] = bus.add_signal_receiver(on_response, 'Response', 'org.freedesktop.portal.Request', path=handle)
    fd = os.open(path, os.O_RDWR if mode == 'rw' else os.O_RDONLY)
    options = {'handle_token': token}
    if writable:
        options['writable'] = True
    portal.OpenFile('', dbus.types.UnixFd(fd), options)
    os.close(fd)
GLib.timeout_add_seconds(30, loop.quit)
step(0)
loop.run()
"#;

/// A sandboxed caller (python3-dbus inside `porthole run`, through its
/// proxy): its writable fd needs `writable`, `writable` needs a writable
/// fd (upstream's rules for apps); a sandboxed handler (`X-Flatpak`) gets
/// the file as a document of its own, writable only when asked.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sandboxed_caller_proves_write_access_and_a_sandboxed_handler_gets_a_document() {
    // SAFETY: geteuid has no preconditions.
    let missing = if unsafe { libc::geteuid() } != 0 {
        Some("needs root (porthole run and the FUSE mount as root here)")
    } else if !Path::new("/dev/fuse").exists() {
        Some("/dev/fuse is missing (FUSE)")
    } else if !Path::new("/usr/lib/python3/dist-packages/dbus").exists()
        || !Path::new("/usr/lib/python3/dist-packages/gi").exists()
    {
        Some("python3-dbus or python3-gi missing")
    } else {
        None
    };
    if let Some(why) = missing {
        porthole_tests::skipped(&format!("open_uri sandboxed caller: {why}"));
        return;
    }
    const APP_ID: &str = "org.example.Opener";
    const VIEWER: &str = "org.example.Viewer";
    let bus = Bus::start();
    let (store, docs) = bus
        .start_document_store(&bin("porthole-documents"), true)
        .await;
    let conn = bus.connection().await;
    conn.call_method(
        Some("org.freedesktop.portal.Documents"),
        "/org/freedesktop/portal/documents",
        Some("org.freedesktop.portal.Documents"),
        "GetMountPoint",
        &(),
    )
    .await
    .unwrap();
    let script = format!(r#"{{"method": "ChooseApplication", "choice": "{VIEWER}"}}"#);
    let portal = Portal::start_on(bus, vec![docs, store], Some(&script), false).await;
    // The sandboxed handler: a Flatpak-style entry of its own app id.
    let apps = portal.bus.data_home().join("applications");
    std::fs::write(
        apps.join(format!("{VIEWER}.desktop")),
        format!(
            "[Desktop Entry]\nType=Application\nName=Viewer\nExec={} {VIEWER} %u\n\
             MimeType=text/plain;\nX-Flatpak={VIEWER}\n",
            portal.bus.root().join("handler.sh").display()
        ),
    )
    .unwrap();
    let data = portal.bus.root().join("home/.var/app").join(APP_ID);
    std::fs::create_dir_all(&data).unwrap();
    let read_me = data.join("read-me.txt");
    let edit_me = data.join("edit-me.txt");
    std::fs::write(&read_me, "read only\n").unwrap();
    std::fs::write(&edit_me, "edit me\n").unwrap();
    let cases = serde_json::json!([
        ["rw fd without writable", read_me, "rw", false],
        ["writable with a ro fd", read_me, "ro", true],
        ["ro", read_me, "ro", false],
        ["rw writable", edit_me, "rw", true],
    ]);
    let mut cmd = portal.bus.command(bin("porthole"));
    cmd.args(["run", APP_ID, "--", "/usr/bin/python3", "-c", APP])
        .arg(cases.to_string());
    let (status, out, err) = run_with_timeout(&mut cmd, Duration::from_secs(60));
    assert!(
        status.success(),
        "{status}: {out}\n{err}\n{}",
        portal.bus.logs()
    );
    let codes: serde_json::Value = serde_json::from_str(out.trim())
        .unwrap_or_else(|e| panic!("{e}: {out}\n{err}\n{}", portal.bus.logs()));
    assert_eq!(
        codes,
        serde_json::json!({
            "rw fd without writable": 2,
            "writable with a ro fd": 2,
            "ro": 0,
            "rw writable": 0,
        }),
        "{}",
        portal.bus.logs()
    );
    // The dialogs named the app that asked.
    let records = portal.records();
    assert_eq!(records.len(), 2, "{records:?}");
    assert!(records.iter().all(|r| r["app_id"] == APP_ID));
    // The sandboxed handler got documents of its own, not the host paths.
    let launches = portal.wait_launches(2).await;
    // SAFETY: getuid has no preconditions.
    let uid = unsafe { libc::getuid() };
    let prefix = format!("file:///run/user/{uid}/doc/");
    // (Two handler processes: their lines may come in either order.)
    for (name, write) in [("read-me.txt", false), ("edit-me.txt", true)] {
        let launch = launches
            .iter()
            .find(|l| l[1].ends_with(name))
            .unwrap_or_else(|| panic!("{name}: {launches:?}"));
        assert_eq!(launch[0], VIEWER);
        assert!(
            launch[1].starts_with(&prefix) && launch[1].ends_with(name),
            "{launch:?}"
        );
        let doc_id = launch[1][prefix.len()..].split('/').next().unwrap();
        let reply = conn
            .call_method(
                Some("org.freedesktop.portal.Documents"),
                "/org/freedesktop/portal/documents",
                Some("org.freedesktop.portal.Documents"),
                "Info",
                &(doc_id,),
            )
            .await
            .unwrap();
        let (_path, apps): (Vec<u8>, HashMap<String, Vec<String>>) =
            reply.body().deserialize().unwrap();
        let perms = &apps[VIEWER];
        assert!(perms.contains(&"read".to_owned()), "{perms:?}");
        assert_eq!(
            perms.contains(&"write".to_owned()),
            write,
            "{name}: {perms:?}"
        );
    }
}

/// Terminal mode: the candidates listed with the last choice marked, a
/// typed number picks the handler; Enter on no mark, or 0, cancels.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn terminal_mode_lists_the_handlers_and_takes_a_number() {
    let mut portal = Portal::start_on(Bus::start(), Vec::new(), None, true).await;
    let conn = portal.bus.connection().await;
    let pending = {
        let conn = conn.clone();
        tokio::spawn(
            async move { open_uri(&conn, "porthole-test:one", "n1", Options::new()).await },
        )
    };
    let shown = portal.wait_shown("Number (").await;
    assert!(
        shown.contains("ChooseApplication from org.example.Caller"),
        "{shown}"
    );
    // The default handler is marked before any choice was made.
    assert!(shown.contains(&format!("1) {MARKER} *\n")), "{shown}");
    assert!(shown.contains(&format!("2) {OTHER}\n")), "{shown}");
    portal.type_in("9\n2\n");
    assert_eq!(pending.await.unwrap(), Ok(0));
    let launches = portal.wait_launches(1).await;
    assert_eq!(launches[0][0], OTHER);
    // The next dialog marks the last choice; 0 cancels.
    let pending = {
        let conn = conn.clone();
        tokio::spawn(
            async move { open_uri(&conn, "porthole-test:two", "n2", Options::new()).await },
        )
    };
    let shown = portal
        .wait_shown(&format!("(Enter: {OTHER}, 0: cancel)"))
        .await;
    assert!(shown.contains(&format!("2) {OTHER} *")), "{shown}");
    assert!(shown.contains("not a number from 0 to 2"), "{shown}");
    portal.type_in("0\n");
    assert_eq!(pending.await.unwrap(), Ok(1));
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(portal.launches().len(), 1);
}

/// An app installed while the dialog is up reaches it through
/// `UpdateChoices` (watched on the bus by a monitor connection), and can
/// be chosen.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_app_installed_during_the_dialog_is_sent_with_update_choices() {
    const NEW: &str = "org.example.New";
    let portal = Portal::start(&format!(
        r#"{{"method": "ChooseApplication", "choice": "{NEW}", "delay_ms": 1500}}"#
    ))
    .await;
    // A monitor connection sees every UpdateChoices call on the bus.
    let monitor = portal.bus.connection().await;
    let mut seen = zbus::MessageStream::from(&monitor);
    monitor
        .call_method(
            Some("org.freedesktop.DBus"),
            "/org/freedesktop/DBus",
            Some("org.freedesktop.DBus.Monitoring"),
            "BecomeMonitor",
            &(vec!["type='method_call',member='UpdateChoices'"], 0u32),
        )
        .await
        .unwrap();
    let conn = portal.bus.connection().await;
    let pending = {
        let conn = conn.clone();
        tokio::spawn(
            async move { open_uri(&conn, "porthole-test:new", "new", Options::new()).await },
        )
    };
    // Once the dialog is up, install a third handler.
    let prompt_log = portal.bus.root().join("logs/prompt.log");
    let deadline = Instant::now() + Duration::from_secs(10);
    while !std::fs::read_to_string(&prompt_log)
        .unwrap_or_default()
        .contains("dialog up")
    {
        assert!(
            Instant::now() < deadline,
            "no dialog:\n{}",
            portal.bus.logs()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    std::fs::write(
        portal
            .bus
            .data_home()
            .join(format!("applications/{NEW}.desktop")),
        format!(
            "[Desktop Entry]\nType=Application\nName=New\nExec={} {NEW} %u\n\
             MimeType=x-scheme-handler/porthole-test;\n",
            portal.bus.root().join("handler.sh").display()
        ),
    )
    .unwrap();
    let update = tokio::time::timeout(Duration::from_secs(10), async {
        while let Some(msg) = seen.next().await {
            let Ok(msg) = msg else { continue };
            if msg.header().member().is_some_and(|m| m == "UpdateChoices") {
                return msg
                    .body()
                    .deserialize::<(OwnedObjectPath, Vec<String>)>()
                    .unwrap();
            }
        }
        panic!("the monitor stream ended");
    })
    .await
    .unwrap_or_else(|_| panic!("no UpdateChoices:\n{}", portal.bus.logs()));
    assert_eq!(update.0.as_str(), predicted(&conn, "new"));
    assert_eq!(update.1, [MARKER, NEW, OTHER]);
    assert_eq!(pending.await.unwrap(), Ok(0));
    let launches = portal.wait_launches(1).await;
    assert_eq!(launches[0][0], NEW);
}
