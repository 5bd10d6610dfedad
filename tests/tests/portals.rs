//! The portal frontend (`porthole-portals`) with our scripted backend
//! (`porthole-prompt`) behind it, found through `data/porthole.portal` in
//! `XDG_DESKTOP_PORTAL_DIR`, on a private bus: what a client observes of the
//! Request pattern and FileChooser. Host clients are zbus connections of
//! this test and GLib's `gdbus`; the sandboxed clients are python3-dbus and
//! an ashpd program (`tests/examples/ashpd_app.rs`) inside `porthole run`,
//! talking through its proxy, with our document store or upstream's
//! xdg-document-portal. One test puts xdg-desktop-portal-gtk, a real
//! backend, behind the frontend on a headless weston.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use porthole_tests::portal::{Options, opt, options, predicted};
use porthole_tests::{Bus, Service, bin, call_error_name};
use zbus::MatchRule;
use zbus::message::Type as MessageType;
use zvariant::{OwnedObjectPath, OwnedValue, Value};

const DESKTOP: &str = "org.freedesktop.portal.Desktop";
const DESKTOP_PATH: &str = "/org/freedesktop/portal/desktop";
const FILE_CHOOSER: &str = "org.freedesktop.portal.FileChooser";
const REQUEST: &str = "org.freedesktop.portal.Request";
const PROMPT: &str = "org.freedesktop.impl.portal.desktop.porthole";
const INVALID_ARGUMENT: &str = "org.freedesktop.portal.Error.InvalidArgument";
const ACCESS_DENIED: &str = "org.freedesktop.DBus.Error.AccessDenied";
const UNKNOWN_OBJECT: &str = "org.freedesktop.DBus.Error.UnknownObject";

/// A bus with the scripted backend and the frontend on it.
/// Fields drop in order: the services stop before the bus goes.
struct Portal {
    /// Services started before the portal (the document store): stopped
    /// first, while the bus and the runtime dir still exist.
    _stores: Vec<Service>,
    /// None when the bus activates the backend on the frontend's first call.
    prompt: Option<Service>,
    frontend: Service,
    record: PathBuf,
    bus: Bus,
}

impl Portal {
    /// Starts both with `script` as the backend's answers. The backend is
    /// chosen the way an installed one is: its .portal file from data/ and
    /// a portals.conf naming it, both in XDG_DESKTOP_PORTAL_DIR.
    async fn start(script: &str) -> Portal {
        let bus = Bus::start();
        Self::start_on(bus, Vec::new(), script, false).await
    }

    /// `activated`: the backend is not started here but made activatable,
    /// so the bus starts it when the frontend first calls it.
    async fn start_on(bus: Bus, extra: Vec<Service>, script: &str, activated: bool) -> Portal {
        Self::start_full(bus, extra, script, activated, &[]).await
    }

    /// As [`Portal::start_on`], with `frontend_env` in the frontend's
    /// environment.
    async fn start_full(
        mut bus: Bus,
        extra: Vec<Service>,
        script: &str,
        activated: bool,
        frontend_env: &[(&str, &str)],
    ) -> Portal {
        let portals = bus.porthole_portal_dir();
        let script_path = bus.root().join("script.jsonl");
        std::fs::write(&script_path, script).unwrap();
        let record = bus.root().join("record.jsonl");

        let prompt = if activated {
            bus.add_activatable(
                PROMPT,
                &format!(
                    "{} -v --script {} --record {}",
                    bin("porthole-prompt").display(),
                    script_path.display(),
                    record.display()
                ),
            );
            None
        } else {
            let mut cmd = bus.command(bin("porthole-prompt"));
            cmd.arg("-v")
                .arg("--script")
                .arg(&script_path)
                .arg("--record")
                .arg(&record);
            // A test that wants settings served writes them first.
            let settings = bus.root().join("settings.ini");
            if settings.exists() {
                cmd.arg("--settings").arg(settings);
            }
            Some(bus.spawn_owning("prompt", cmd, PROMPT).await)
        };
        let mut cmd = bus.command(bin("porthole-portals"));
        cmd.arg("-v").env("XDG_DESKTOP_PORTAL_DIR", &portals);
        cmd.envs(frontend_env.iter().copied());
        let frontend = bus.spawn_owning("portals", cmd, DESKTOP).await;
        Portal {
            _stores: extra,
            bus,
            prompt,
            frontend,
            record,
        }
    }

    /// The backend's records so far, one JSON object per dialog.
    fn records(&self) -> Vec<serde_json::Value> {
        std::fs::read_to_string(&self.record)
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    /// Waits for the backend's `n`th record.
    async fn wait_records(&self, n: usize) -> Vec<serde_json::Value> {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let records = self.records();
            if records.len() >= n {
                return records;
            }
            assert!(
                Instant::now() < deadline,
                "the backend recorded {} dialogs, expected {n}:\n{}",
                records.len(),
                self.bus.logs()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// Subscribes to `Response` on `path` (before the call, as ashpd does).
async fn subscribe(conn: &zbus::Connection, path: &str) -> zbus::MessageStream {
    let rule = MatchRule::builder()
        .msg_type(MessageType::Signal)
        .interface(REQUEST)
        .unwrap()
        .member("Response")
        .unwrap()
        .path(path.to_owned())
        .unwrap()
        .build();
    zbus::MessageStream::for_match_rule(rule, conn, None)
        .await
        .unwrap()
}

async fn next_response(
    stream: &mut zbus::MessageStream,
    within: Duration,
) -> Option<(u32, Options)> {
    let msg = tokio::time::timeout(within, stream.next()).await.ok()??;
    let msg = msg.unwrap();
    Some(msg.body().deserialize::<(u32, Options)>().unwrap())
}

async fn call(
    conn: &zbus::Connection,
    method: &str,
    options: &Options,
) -> zbus::Result<OwnedObjectPath> {
    let reply = conn
        .call_method(
            Some(DESKTOP),
            DESKTOP_PATH,
            Some(FILE_CHOOSER),
            method,
            &("", "Pick", options),
        )
        .await?;
    Ok(reply.body().deserialize::<OwnedObjectPath>().unwrap())
}

/// The error a Close on `path` gets from `conn` (None: it was closed).
async fn close(conn: &zbus::Connection, path: &str) -> Option<String> {
    call_error_name(conn, DESKTOP, path, REQUEST, "Close", &()).await
}

/// Waits until the backend shows the dialog of request `path` (its
/// impl.portal.Request object is up).
async fn wait_dialog_up(portal: &Portal, conn: &zbus::Connection, path: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let proxy = zbus::fdo::IntrospectableProxy::builder(conn)
            .destination(PROMPT)
            .unwrap()
            .path(path.to_owned())
            .unwrap()
            .build()
            .await
            .unwrap();
        let xml = proxy.introspect().await.unwrap_or_default();
        if xml.contains("org.freedesktop.impl.portal.Request") {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "the backend never showed the dialog:\n{}",
            portal.bus.logs()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

fn strings(v: &OwnedValue) -> Vec<String> {
    Vec::<String>::try_from(v.try_clone().unwrap()).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_method_answers_with_the_scripted_choice_to_the_caller_alone() {
    let script = r#"
{"method": "OpenFile", "uris": ["file:///srv/a%20b.txt", "https://example.org/x"], "choices": [["enc", "utf8"]], "current_filter": ["Text", [[0, "*.txt"]]]}
{"method": "SaveFile", "uris": ["file:///srv/new.txt"]}
{"method": "SaveFiles", "uris": ["file:///srv/d/one", "file:///srv/d/two"]}
"#;
    let portal = Portal::start(script).await;
    let conn = portal.bus.connection().await;
    let onlooker = portal.bus.connection().await;
    // The version property as clients read it (ashpd reads it first).
    let props = zbus::fdo::PropertiesProxy::builder(&conn)
        .destination(DESKTOP)
        .unwrap()
        .path(DESKTOP_PATH)
        .unwrap()
        .build()
        .await
        .unwrap();
    let version = props
        .get(FILE_CHOOSER.try_into().unwrap(), "version")
        .await
        .unwrap();
    assert_eq!(u32::try_from(version).unwrap(), 4);
    let cases = [
        (
            "OpenFile",
            options(vec![
                ("accept_label", Value::from("_Open")),
                ("multiple", Value::from(true)),
                ("not_an_option", Value::from(7u32)),
            ]),
            vec!["file:///srv/a%20b.txt"],
        ),
        (
            "SaveFile",
            options(vec![("current_name", Value::from("new.txt"))]),
            vec!["file:///srv/new.txt"],
        ),
        (
            "SaveFiles",
            options(vec![(
                "files",
                Value::from(vec![b"one\0".to_vec(), b"two\0".to_vec()]),
            )]),
            vec!["file:///srv/d/one", "file:///srv/d/two"],
        ),
    ];
    for (i, (method, mut opts, want)) in cases.into_iter().enumerate() {
        let token = format!("tok{i}");
        opts.insert("handle_token".into(), opt(Value::from(token.as_str())));
        let path = predicted(&conn, &token);
        let mut responses = subscribe(&conn, &path).await;
        let mut overheard = subscribe(&onlooker, &path).await;
        let handle = call(&conn, method, &opts).await.unwrap();
        assert_eq!(
            handle.as_str(),
            path,
            "{method}: the handle is upstream's formula"
        );
        let (code, results) = next_response(&mut responses, Duration::from_secs(10))
            .await
            .unwrap_or_else(|| panic!("{method}: no Response\n{}", portal.bus.logs()));
        assert_eq!(code, 0, "{method}");
        // A host caller gets the chosen file:// URIs as they are; others
        // are dropped.
        assert_eq!(strings(&results["uris"]), want, "{method}");
        if method == "OpenFile" {
            let choices =
                Vec::<(String, String)>::try_from(results["choices"].try_clone().unwrap()).unwrap();
            assert_eq!(choices, vec![("enc".to_owned(), "utf8".to_owned())]);
            assert!(results.contains_key("current_filter"));
        }
        // Response went to the caller only.
        assert!(
            next_response(&mut overheard, Duration::from_millis(300))
                .await
                .is_none(),
            "{method}: another connection heard the Response"
        );
        // The request is over: its object is gone.
        assert_eq!(close(&conn, &path).await.as_deref(), Some(UNKNOWN_OBJECT));
    }
    let records = portal.wait_records(3).await;
    let open = &records[0];
    assert_eq!(open["method"], "OpenFile");
    assert_eq!(open["app_id"], "", "a host caller has the empty app id");
    assert_eq!(open["title"], "Pick");
    assert_eq!(
        open["handle"],
        predicted(&conn, "tok0"),
        "the backend gets the same handle"
    );
    // Known options are passed on, unknown ones and handle_token are not.
    let passed = open["options"].as_object().unwrap();
    let mut keys: Vec<&str> = passed.keys().map(String::as_str).collect();
    keys.sort();
    assert_eq!(keys, ["accept_label", "multiple"]);
    assert_eq!(records[1]["options"]["current_name"], "new.txt");
    assert_eq!(
        records[2]["options"]["files"],
        serde_json::json!(["one", "two"])
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancelled_dialog_is_response_1_and_a_failed_backend_is_2() {
    let portal =
        Portal::start(r#"{"method": "OpenFile", "response": 1, "uris": ["file:///srv/ignored"]}"#)
            .await;
    let conn = portal.bus.connection().await;
    for (method, want) in [("OpenFile", 1), ("SaveFile", 2)] {
        // No token: upstream's default token "t".
        let path = predicted(&conn, "t");
        let mut responses = subscribe(&conn, &path).await;
        let handle = call(&conn, method, &Options::new()).await.unwrap();
        assert_eq!(handle.as_str(), path);
        let (code, results) = next_response(&mut responses, Duration::from_secs(10))
            .await
            .expect("Response");
        // SaveFile is not in the script: the backend answers 2.
        assert_eq!(code, want, "{method}");
        assert!(
            strings(&results["uris"]).is_empty(),
            "{method}: {results:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_the_caller_can_close_and_close_ends_the_dialog_without_a_response() {
    let portal = Portal::start(r#"{"method": "OpenFile", "hold": true}"#).await;
    let conn = portal.bus.connection().await;
    let other = portal.bus.connection().await;
    let path = predicted(&conn, "held");
    let mut responses = subscribe(&conn, &path).await;
    call(
        &conn,
        "OpenFile",
        &options(vec![("handle_token", Value::from("held"))]),
    )
    .await
    .unwrap();
    wait_dialog_up(&portal, &other, &path).await;
    // Another connection may not close it.
    assert_eq!(close(&other, &path).await.as_deref(), Some(ACCESS_DENIED));
    // The dialog is still up: the backend has answered nothing.
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(portal.records().is_empty());
    // The caller closes it: the backend's dialog ends, no Response comes.
    assert_eq!(close(&conn, &path).await, None);
    let records = portal.wait_records(1).await;
    assert_eq!(records[0]["ended"], "closed", "{:?}", records[0]);
    assert!(
        next_response(&mut responses, Duration::from_millis(500))
            .await
            .is_none(),
        "Close must not emit Response"
    );
    // And the object is gone.
    let deadline = Instant::now() + Duration::from_secs(5);
    while close(&conn, &path).await.as_deref() != Some(UNKNOWN_OBJECT) {
        assert!(
            Instant::now() < deadline,
            "the closed request stays exported"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Close sent the moment the handle comes back, before the backend can
/// have shown anything: the backend exports each dialog's Request before it
/// reads its next message (as xdg-desktop-portal-gtk does), and the
/// frontend sends the Close once its call is on the wire, so the backend's
/// dialog is always closed: it ends with response 2, recorded as closed,
/// and the app hears no Response. No retries: a lost Close would leave a
/// held dialog up and its record missing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn close_at_once_always_reaches_the_backends_dialog() {
    const ROUNDS: usize = 25;
    let portal = Portal::start(r#"{"method": "OpenFile", "hold": true}"#).await;
    let conn = portal.bus.connection().await;
    // What the backend is asked, as the bus routes it.
    let rule = format!("type='method_call',destination='{PROMPT}'");
    let mut to_backend = portal.bus.monitor(&[rule.as_str()]).await;
    let mut all_responses = Vec::new();
    for round in 0..ROUNDS {
        let token = format!("at_once_{round}");
        let path = predicted(&conn, &token);
        all_responses.push(subscribe(&conn, &path).await);
        let handle = call(
            &conn,
            "OpenFile",
            &options(vec![("handle_token", Value::from(token.as_str()))]),
        )
        .await
        .unwrap();
        assert_eq!(handle.as_str(), path);
        assert_eq!(close(&conn, &path).await, None, "round {round}");
    }
    // The frontend may abort a request before it asks the backend (then
    // nothing is shown): count the dialogs asked for. Its Close replies
    // come after its calls to the backend, so a Ping sent now is routed
    // after every one of them.
    conn.call_method(
        Some(PROMPT),
        "/",
        Some("org.freedesktop.DBus.Peer"),
        "Ping",
        &(),
    )
    .await
    .unwrap();
    let mut asked = 0;
    let mut closes = 0;
    loop {
        let msg = tokio::time::timeout(Duration::from_secs(10), to_backend.next())
            .await
            .expect("the monitor saw the Ping")
            .unwrap()
            .unwrap();
        let hdr = msg.header();
        match hdr.member().map(|m| m.as_str()) {
            Some("OpenFile") => asked += 1,
            Some("Close") => closes += 1,
            Some("Ping") => break,
            _ => {}
        }
    }
    assert!(asked > 0, "no dialog was asked for:\n{}", portal.bus.logs());
    assert_eq!(closes, asked, "one Close for each dialog asked for");
    // Every dialog asked for ended by the Close.
    let records = portal.wait_records(asked).await;
    assert_eq!(records.len(), asked, "{records:?}");
    for record in &records {
        assert_eq!(record["ended"], "closed", "{record}");
        assert_eq!(record["response"], 2, "{record}");
    }
    // No dialog is left up at the backend.
    for round in 0..ROUNDS {
        let path = predicted(&conn, &format!("at_once_{round}"));
        let proxy = zbus::fdo::IntrospectableProxy::builder(&conn)
            .destination(PROMPT)
            .unwrap()
            .path(path.clone())
            .unwrap()
            .build()
            .await
            .unwrap();
        let xml = proxy.introspect().await.unwrap_or_default();
        assert!(
            !xml.contains("org.freedesktop.impl.portal.Request"),
            "round {round}: the backend's dialog is still up"
        );
    }
    for mut responses in all_responses {
        assert!(
            next_response(&mut responses, Duration::from_millis(50))
                .await
                .is_none(),
            "Close must not emit Response"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_options_are_invalid_argument_and_never_reach_the_backend() {
    let portal = Portal::start(
        r#"{"method": "OpenFile", "uris": []}
{"method": "SaveFiles", "uris": []}"#,
    )
    .await;
    let conn = portal.bus.connection().await;
    let bad = [
        ("OpenFile", options(vec![("modal", Value::from("yes"))])),
        (
            "OpenFile",
            options(vec![("handle_token", Value::from("not-valid"))]),
        ),
        ("OpenFile", options(vec![("handle_token", Value::from(""))])),
        (
            "OpenFile",
            options(vec![(
                "filters",
                Value::from(vec![("".to_owned(), vec![(0u32, "*".to_owned())])]),
            )]),
        ),
        (
            "SaveFile",
            options(vec![(
                "current_filter",
                Value::from(("Text".to_owned(), vec![(3u32, "*.txt".to_owned())])),
            )]),
        ),
        (
            "SaveFiles",
            options(vec![("files", Value::from(vec![b"../escape\0".to_vec()]))]),
        ),
        (
            "SaveFiles",
            options(vec![("files", Value::from(vec![b"a/b\0".to_vec()]))]),
        ),
        (
            "SaveFiles",
            options(vec![(
                "choices",
                Value::from(vec![(
                    "id".to_owned(),
                    "Label".to_owned(),
                    Vec::<(String, String)>::new(),
                    "maybe".to_owned(),
                )]),
            )]),
        ),
    ];
    for (method, opts) in &bad {
        let err = call(&conn, method, opts)
            .await
            .expect_err(&format!("{method} {opts:?} must be refused"));
        let zbus::Error::MethodError(name, _, _) = &err else {
            panic!("{method} {opts:?}: {err}");
        };
        assert_eq!(name.as_str(), INVALID_ARGUMENT, "{method} {opts:?}");
    }
    // A body of the wrong signature: GDBus's InvalidArgs, as upstream.
    let name = call_error_name(
        &conn,
        DESKTOP,
        DESKTOP_PATH,
        FILE_CHOOSER,
        "OpenFile",
        &("", "t"),
    )
    .await;
    assert_eq!(
        name.as_deref(),
        Some("org.freedesktop.DBus.Error.InvalidArgs")
    );
    // Nothing reached the backend, and no request was left behind.
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(portal.records().is_empty(), "{:?}", portal.records());
    assert_eq!(
        close(&conn, &predicted(&conn, "t")).await.as_deref(),
        Some(UNKNOWN_OBJECT)
    );
    // The frontend still serves. A handle_token that is not a string is
    // no token at all, as upstream reads it: the path ends in "t".
    let path = predicted(&conn, "t");
    let mut responses = subscribe(&conn, &path).await;
    let handle = call(
        &conn,
        "OpenFile",
        &options(vec![("handle_token", Value::from(7u32))]),
    )
    .await
    .unwrap();
    assert_eq!(handle.as_str(), path);
    assert_eq!(
        next_response(&mut responses, Duration::from_secs(10))
            .await
            .map(|r| r.0),
        Some(0)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_caller_that_leaves_mid_request_leaves_nothing_behind() {
    let mut portal = Portal::start(r#"{"method": "OpenFile", "hold": true}"#).await;
    let conn = portal.bus.connection().await;
    let path = predicted(&conn, "gone");
    call(
        &conn,
        "OpenFile",
        &options(vec![("handle_token", Value::from("gone"))]),
    )
    .await
    .unwrap();
    let other = portal.bus.connection().await;
    wait_dialog_up(&portal, &other, &path).await;
    assert_eq!(close(&other, &path).await.as_deref(), Some(ACCESS_DENIED));
    conn.close().await.unwrap();
    // The backend's dialog is closed and the request object goes.
    let records = portal.wait_records(1).await;
    assert_eq!(records[0]["ended"], "closed");
    let deadline = Instant::now() + Duration::from_secs(5);
    while close(&other, &path).await.as_deref() != Some(UNKNOWN_OBJECT) {
        assert!(Instant::now() < deadline, "the request outlived its caller");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // The backend's own request object is gone too.
    let backend = call_error_name(
        &other,
        PROMPT,
        &path,
        "org.freedesktop.impl.portal.Request",
        "Close",
        &(),
    )
    .await;
    assert_eq!(backend.as_deref(), Some(UNKNOWN_OBJECT));
    // Both still run.
    assert!(portal.frontend.wait_timeout(Duration::ZERO).is_none());
    let prompt = portal.prompt.as_mut().unwrap();
    assert!(prompt.wait_timeout(Duration::ZERO).is_none());
}

/// Callers that leave right after their call, while the frontend is
/// still handing the dialog to the backend: every dialog the backend put
/// up is closed again, and no request object stays on either side.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn callers_leaving_at_once_leave_no_dialog_up() {
    let portal = Portal::start(r#"{"method": "OpenFile", "hold": true}"#).await;
    let other = portal.bus.connection().await;
    let mut paths = Vec::new();
    for i in 0..30 {
        let conn = portal.bus.connection().await;
        let token = format!("gone{i}");
        paths.push(predicted(&conn, &token));
        call(
            &conn,
            "OpenFile",
            &options(vec![("handle_token", Value::from(token.as_str()))]),
        )
        .await
        .unwrap();
        conn.close().await.unwrap();
    }
    let prompt_log = || portal.prompt.as_ref().unwrap().log_text();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let up = prompt_log().matches("dialog up").count();
        let records = portal.records();
        if up == records.len() {
            assert!(
                records.iter().all(|r| r["ended"] == "closed"),
                "{records:?}"
            );
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{up} dialogs came up, {} ended:\n{}",
            records.len(),
            portal.bus.logs()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    for path in &paths {
        assert_eq!(close(&other, path).await.as_deref(), Some(UNKNOWN_OBJECT));
        let backend = call_error_name(
            &other,
            PROMPT,
            path,
            "org.freedesktop.impl.portal.Request",
            "Close",
            &(),
        )
        .await;
        assert_eq!(backend.as_deref(), Some(UNKNOWN_OBJECT), "{path}");
    }
}

/// Upstream's test hook: with XDG_DESKTOP_PORTAL_TEST_APP_ID in the
/// frontend's environment every caller is a host app with that id: the
/// backend is told the id, and the chosen URIs come back as they are.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_test_app_id_hook_makes_every_caller_a_host_app_with_that_id() {
    let portal = Portal::start_full(
        Bus::start(),
        Vec::new(),
        r#"{"method": "OpenFile", "uris": ["file:///srv/a.txt"]}"#,
        false,
        &[("XDG_DESKTOP_PORTAL_TEST_APP_ID", "org.example.Tested")],
    )
    .await;
    let conn = portal.bus.connection().await;
    let path = predicted(&conn, "t");
    let mut responses = subscribe(&conn, &path).await;
    call(&conn, "OpenFile", &Options::new()).await.unwrap();
    let (code, results) = next_response(&mut responses, Duration::from_secs(10))
        .await
        .expect("Response");
    assert_eq!(code, 0);
    assert_eq!(strings(&results["uris"]), ["file:///srv/a.txt"]);
    assert_eq!(
        portal.wait_records(1).await[0]["app_id"],
        "org.example.Tested"
    );

    // An invalid id there stops the frontend instead of meaning the host.
    let bus = Bus::start();
    let mut cmd = bus.command(bin("porthole-portals"));
    cmd.env("XDG_DESKTOP_PORTAL_TEST_APP_ID", "not an id");
    let (status, _, err) = porthole_tests::run_with_timeout(&mut cmd, Duration::from_secs(10));
    assert!(!status.success(), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_frontend_exits_0_on_sighup() {
    let mut portal = Portal::start("").await;
    let status = portal.frontend.stop_with(libc::SIGHUP).unwrap();
    assert_eq!(status.code(), Some(0), "{}", portal.frontend.log_text());
    let prompt = portal.prompt.as_mut().unwrap();
    let status = prompt.stop_with(libc::SIGHUP).unwrap();
    assert_eq!(status.code(), Some(0), "{}", prompt.log_text());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_bus_starts_the_backend_on_the_frontends_first_call() {
    let portal = Portal::start_on(
        Bus::start(),
        Vec::new(),
        r#"{"method": "OpenFile", "uris": ["file:///srv/activated"]}"#,
        true,
    )
    .await;
    let conn = portal.bus.connection().await;
    let dbus = zbus::fdo::DBusProxy::new(&conn).await.unwrap();
    assert!(
        !dbus
            .name_has_owner(PROMPT.try_into().unwrap())
            .await
            .unwrap()
    );
    let path = predicted(&conn, "t");
    let mut responses = subscribe(&conn, &path).await;
    call(&conn, "OpenFile", &Options::new()).await.unwrap();
    let (code, results) = next_response(&mut responses, Duration::from_secs(10))
        .await
        .unwrap_or_else(|| panic!("no Response\n{}", portal.bus.logs()));
    assert_eq!(code, 0);
    assert_eq!(strings(&results["uris"]), ["file:///srv/activated"]);
    assert!(
        dbus.name_has_owner(PROMPT.try_into().unwrap())
            .await
            .unwrap()
    );
}

const SETTINGS: &str = "org.freedesktop.portal.Settings";
const APPEARANCE: &str = "org.freedesktop.appearance";

async fn settings_call(
    conn: &zbus::Connection,
    method: &str,
    body: &(impl serde::Serialize + zvariant::DynamicType),
) -> zbus::Result<zbus::Message> {
    conn.call_method(Some(DESKTOP), DESKTOP_PATH, Some(SETTINGS), method, body)
        .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn settings_come_from_the_backend_and_changes_are_sent_on() {
    let bus = Bus::start();
    let settings_file = bus.root().join("settings.ini");
    std::fs::write(
        &settings_file,
        "[org.freedesktop.appearance]\ncolor-scheme=prefer-dark\naccent-color=0.25,0.5,0.75\n",
    )
    .unwrap();
    let mut portal = Portal::start_on(bus, Vec::new(), "", false).await;
    let conn = portal.bus.connection().await;

    type All = HashMap<String, HashMap<String, OwnedValue>>;
    let all: All = settings_call(&conn, "ReadAll", &(Vec::<String>::new(),))
        .await
        .unwrap()
        .body()
        .deserialize()
        .unwrap();
    let appearance = &all[APPEARANCE];
    assert_eq!(u32::try_from(&appearance["color-scheme"]).unwrap(), 1);
    assert_eq!(u32::try_from(&appearance["contrast"]).unwrap(), 0);
    let accent =
        <(f64, f64, f64)>::try_from(appearance["accent-color"].try_clone().unwrap()).unwrap();
    assert_eq!(accent, (0.25, 0.5, 0.75));
    for (patterns, present) in [
        (vec!["org.freedesktop.*"], true),
        (vec![APPEARANCE], true),
        (vec!["org.gnome.*"], false),
        (vec!["org.freedesktop"], false),
    ] {
        let all: All = settings_call(&conn, "ReadAll", &(patterns.clone(),))
            .await
            .unwrap()
            .body()
            .deserialize()
            .unwrap();
        assert_eq!(all.contains_key(APPEARANCE), present, "{patterns:?}");
    }
    // ReadOne: the value; Read (deprecated): the value in one more variant.
    let one = settings_call(&conn, "ReadOne", &(APPEARANCE, "color-scheme"))
        .await
        .unwrap();
    assert_eq!(one.body().signature().to_string(), "v");
    assert_eq!(
        u32::try_from(one.body().deserialize::<OwnedValue>().unwrap()).unwrap(),
        1
    );
    let read = settings_call(&conn, "Read", &(APPEARANCE, "color-scheme"))
        .await
        .unwrap();
    let outer = read.body().deserialize::<OwnedValue>().unwrap();
    match &*outer {
        Value::Value(inner) => assert_eq!(**inner, Value::U32(1)),
        other => panic!("Read must wrap the value in a variant: {other:?}"),
    }
    let missing = call_error_name(
        &conn,
        DESKTOP,
        DESKTOP_PATH,
        SETTINGS,
        "ReadOne",
        &(APPEARANCE, "no-such-key"),
    )
    .await;
    assert_eq!(
        missing.as_deref(),
        Some("org.freedesktop.portal.Error.NotFound")
    );

    // A change in the backend reaches every client as the portal's signal.
    let rule = MatchRule::builder()
        .msg_type(MessageType::Signal)
        .interface(SETTINGS)
        .unwrap()
        .member("SettingChanged")
        .unwrap()
        .build();
    let mut changes = zbus::MessageStream::for_match_rule(rule, &conn, None)
        .await
        .unwrap();
    std::fs::write(
        &settings_file,
        "[org.freedesktop.appearance]\ncolor-scheme=prefer-light\naccent-color=0.25,0.5,0.75\n",
    )
    .unwrap();
    let prompt = portal.prompt.as_mut().unwrap();
    // SAFETY: kill(2) on the prompt we started and have not reaped.
    unsafe { libc::kill(prompt.pid() as libc::pid_t, libc::SIGUSR1) };
    let msg = tokio::time::timeout(Duration::from_secs(10), changes.next())
        .await
        .unwrap_or_else(|_| panic!("no SettingChanged\n{}", portal.bus.logs()))
        .unwrap()
        .unwrap();
    let (namespace, key, value): (String, String, OwnedValue) = msg.body().deserialize().unwrap();
    assert_eq!(
        (namespace.as_str(), key.as_str()),
        (APPEARANCE, "color-scheme")
    );
    assert_eq!(u32::try_from(value).unwrap(), 2);
    assert_eq!(msg.header().path().unwrap().as_str(), DESKTOP_PATH);
    let one = settings_call(&conn, "ReadOne", &(APPEARANCE, "color-scheme"))
        .await
        .unwrap();
    assert_eq!(
        u32::try_from(one.body().deserialize::<OwnedValue>().unwrap()).unwrap(),
        2
    );
    // Only the changed key was announced.
    assert!(
        tokio::time::timeout(Duration::from_millis(300), changes.next())
            .await
            .is_err()
    );
}

// ---- NetworkMonitor -------------------------------------------------------

const NETWORK_MONITOR: &str = "org.freedesktop.portal.NetworkMonitor";

async fn monitor_call<R>(conn: &zbus::Connection, method: &str) -> R
where
    R: for<'d> zvariant::DynamicDeserialize<'d> + for<'d> serde::Deserialize<'d> + zvariant::Type,
{
    monitor_call_with(conn, method, &()).await
}

async fn monitor_call_with<R>(
    conn: &zbus::Connection,
    method: &str,
    body: &(impl serde::Serialize + zvariant::DynamicType),
) -> R
where
    R: for<'d> serde::Deserialize<'d> + zvariant::Type,
{
    conn.call_method(
        Some(DESKTOP),
        DESKTOP_PATH,
        Some(NETWORK_MONITOR),
        method,
        body,
    )
    .await
    .unwrap_or_else(|e| panic!("{method}: {e}"))
    .body()
    .deserialize::<R>()
    .unwrap()
}

/// Runs `script` in the network namespace of `pid`.
fn in_netns(pid: u32, script: &str) {
    let mut cmd = std::process::Command::new("nsenter");
    cmd.args(["-t", &pid.to_string(), "-n", "sh", "-ec", script]);
    let (status, out, err) = porthole_tests::run_with_timeout(&mut cmd, Duration::from_secs(10));
    assert!(status.success(), "{script}: {out}{err}");
}

/// Waits for `changed` signals until `available` reads `want`.
async fn settle(conn: &zbus::Connection, changes: &mut zbus::MessageStream, want: bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let got = tokio::time::timeout(left, changes.next()).await;
        assert!(got.is_ok(), "no changed signal to available={want}");
        if monitor_call::<bool>(conn, "GetAvailable").await == want {
            return;
        }
    }
}

/// The frontend in a network namespace of its own (only `lo`): no network;
/// a default route added there: network, and `changed`; the default route
/// removed again: back to local only, and `changed`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn network_state_follows_the_kernels_routes() {
    if !porthole_tests::running_as_root("network_state_follows_the_kernels_routes") {
        return;
    }
    let bus = Bus::start();
    let mut cmd = bus.command("unshare");
    cmd.arg("--net").arg(bin("porthole-portals")).arg("-v");
    let frontend = bus.spawn_owning("portals", cmd, DESKTOP).await;
    let pid = frontend.pid();
    let conn = bus.connection().await;

    assert!(!monitor_call::<bool>(&conn, "GetAvailable").await);
    assert!(!monitor_call::<bool>(&conn, "GetMetered").await);
    assert_eq!(monitor_call::<u32>(&conn, "GetConnectivity").await, 1);
    let status: Options = monitor_call(&conn, "GetStatus").await;
    assert!(!bool::try_from(&status["available"]).unwrap());
    assert_eq!(u32::try_from(&status["connectivity"]).unwrap(), 1);
    assert!(!monitor_call_with::<bool>(&conn, "CanReach", &("10.200.0.1", 443u32)).await);

    let rule = MatchRule::builder()
        .msg_type(MessageType::Signal)
        .interface(NETWORK_MONITOR)
        .unwrap()
        .member("changed")
        .unwrap()
        .build();
    let mut changes = zbus::MessageStream::for_match_rule(rule, &conn, None)
        .await
        .unwrap();
    in_netns(
        pid,
        "ip link add pv0 type veth peer name pv1; ip link set pv0 up; ip link set pv1 up; \
         ip addr add 10.77.0.1/24 dev pv0; ip route add default via 10.77.0.2 dev pv0",
    );
    settle(&conn, &mut changes, true).await;
    assert_eq!(monitor_call::<u32>(&conn, "GetConnectivity").await, 4);
    let status: Options = monitor_call(&conn, "GetStatus").await;
    assert!(bool::try_from(&status["available"]).unwrap());
    assert_eq!(u32::try_from(&status["connectivity"]).unwrap(), 4);
    assert!(monitor_call_with::<bool>(&conn, "CanReach", &("10.200.0.1", 443u32)).await);

    in_netns(pid, "ip route del default");
    settle(&conn, &mut changes, false).await;
    assert_eq!(monitor_call::<u32>(&conn, "GetConnectivity").await, 1);
    // Its own subnet is still reachable; beyond it, nothing.
    assert!(monitor_call_with::<bool>(&conn, "CanReach", &("10.77.0.9", 80u32)).await);
    assert!(!monitor_call_with::<bool>(&conn, "CanReach", &("10.200.0.1", 443u32)).await);
    assert!(!monitor_call_with::<bool>(&conn, "CanReach", &("no.such.name.invalid", 80u32)).await);
}

/// A sandboxed app may ask only when it has the network, as upstream
/// decides from the app's `[Context] shared`: through its proxy, without
/// `--share=network` GetStatus is NotAllowed; with it, the answer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sandboxed_app_without_network_is_refused() {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 || !Path::new("/usr/lib/python3/dist-packages/dbus").exists()
    {
        porthole_tests::skipped(
            "a_sandboxed_app_without_network_is_refused: needs root and python3-dbus",
        );
        return;
    }
    const ASK: &str = r#"
import dbus
b = dbus.SessionBus()
m = dbus.Interface(b.get_object('org.freedesktop.portal.Desktop', '/org/freedesktop/portal/desktop'),
                   'org.freedesktop.portal.NetworkMonitor')
try:
    print('available=%s' % bool(m.GetStatus()['available']))
except dbus.exceptions.DBusException as e:
    print(e.get_dbus_name())
"#;
    let portal = Portal::start("").await;
    for (extra, want) in [
        (None, "org.freedesktop.portal.Error.NotAllowed"),
        (Some("--share=network"), "available="),
    ] {
        let mut cmd = portal.bus.command(bin("porthole"));
        cmd.arg("run")
            .args(extra)
            .args([APP_ID, "--", "/usr/bin/python3", "-c", ASK]);
        let (status, out, err) =
            porthole_tests::run_with_timeout(&mut cmd, Duration::from_secs(30));
        assert!(status.success(), "{extra:?}: {out}{err}");
        assert!(out.trim().starts_with(want), "{extra:?}: {out}{err}");
    }
}

// ---- terminal mode --------------------------------------------------------

/// The prompt in terminal mode, its standard input and everything it has
/// shown; stopped with SIGTERM on drop.
struct TerminalPrompt {
    child: std::process::Child,
    input: std::process::ChildStdin,
    shown: std::sync::Arc<std::sync::Mutex<String>>,
}

impl TerminalPrompt {
    fn start(bus: &Bus) -> TerminalPrompt {
        let mut cmd = bus.command(bin("porthole-prompt"));
        let log = std::fs::File::create(bus.root().join("logs/prompt.log")).unwrap();
        cmd.args(["-v", "--terminal"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(log);
        let mut child = cmd.spawn().unwrap();
        let input = child.stdin.take().unwrap();
        let mut output = child.stdout.take().unwrap();
        let shown = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
        let sink = shown.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = output.read(&mut buf) {
                if n == 0 {
                    break;
                }
                sink.lock()
                    .unwrap()
                    .push_str(&String::from_utf8_lossy(&buf[..n]));
            }
        });
        TerminalPrompt {
            child,
            input,
            shown,
        }
    }

    /// Waits until the prompt has shown `marker` (after `from` bytes);
    /// returns everything shown so far.
    async fn wait_for(&self, marker: &str, from: usize) -> String {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let shown = self.shown.lock().unwrap().clone();
            if shown.get(from..).is_some_and(|s| s.contains(marker)) {
                return shown;
            }
            assert!(
                Instant::now() < deadline,
                "the prompt never showed {marker:?}:\n{shown}"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    fn shown_len(&self) -> usize {
        self.shown.lock().unwrap().len()
    }

    fn type_in(&mut self, text: &str) {
        use std::io::Write;
        self.input.write_all(text.as_bytes()).unwrap();
        self.input.flush().unwrap();
    }
}

impl Drop for TerminalPrompt {
    fn drop(&mut self) {
        porthole_tests::signal_and_wait(self.child.id(), libc::SIGTERM, Duration::from_secs(5));
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn terminal_mode_shows_each_dialog_and_takes_the_typed_answer() {
    let bus = Bus::start();
    let mut prompt = TerminalPrompt::start(&bus);
    let conn = bus.connection().await;
    let dbus = zbus::fdo::DBusProxy::new(&conn).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while !dbus
        .name_has_owner(PROMPT.try_into().unwrap())
        .await
        .unwrap()
    {
        assert!(Instant::now() < deadline, "no prompt:\n{}", bus.logs());
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let portals = bus.root().join("portals");
    std::fs::create_dir_all(&portals).unwrap();
    let data = Path::new(env!("CARGO_MANIFEST_DIR")).join("../data/porthole.portal");
    std::fs::copy(&data, portals.join("porthole.portal")).unwrap();
    // No portals.conf: the backend is chosen by its UseIn for this desktop.
    let mut cmd = bus.command(bin("porthole-portals"));
    cmd.arg("-v")
        .env("XDG_DESKTOP_PORTAL_DIR", &portals)
        .env("XDG_CURRENT_DESKTOP", "Porthole");
    let _frontend = bus.spawn_owning("portals", cmd, DESKTOP).await;

    // OpenFile: two paths (one relative to the current folder), then the
    // two choices.
    type Choice = (String, String, Vec<(String, String)>, String);
    let choices: Vec<Choice> = vec![
        (
            "enc".into(),
            "Encoding".into(),
            vec![
                ("utf8".into(), "UTF-8".into()),
                ("latin1".into(), "Latin-1".into()),
            ],
            "utf8".into(),
        ),
        ("ro".into(), "Read only".into(), vec![], "false".into()),
    ];
    let path = predicted(&conn, "term");
    let mut responses = subscribe(&conn, &path).await;
    let opts = options(vec![
        ("handle_token", Value::from("term")),
        ("choices", Value::from(choices)),
        ("current_folder", Value::from(b"/srv/docs\0".to_vec())),
    ]);
    conn.call_method(
        Some(DESKTOP),
        DESKTOP_PATH,
        Some(FILE_CHOOSER),
        "OpenFile",
        &("", "Open a text", &opts),
    )
    .await
    .unwrap();
    let shown = prompt.wait_for("Path(s) to open", 0).await;
    assert!(
        shown.contains("OpenFile from a host app: \"Open a text\""),
        "{shown}"
    );
    assert!(shown.contains("current_folder: \"/srv/docs\""), "{shown}");
    prompt.type_in("a.txt\n/abs/b c.txt\n\n");
    prompt.wait_for("Encoding [utf8/latin1]", 0).await;
    prompt.type_in("latin1\n");
    prompt.wait_for("Read only [true/false]", 0).await;
    prompt.type_in("\n");
    let (code, results) = next_response(&mut responses, Duration::from_secs(10))
        .await
        .expect("Response");
    assert_eq!(code, 0);
    assert_eq!(
        strings(&results["uris"]),
        ["file:///srv/docs/a.txt", "file:///abs/b%20c.txt"]
    );
    let picked =
        Vec::<(String, String)>::try_from(results["choices"].try_clone().unwrap()).unwrap();
    assert_eq!(
        picked,
        [
            ("enc".to_owned(), "latin1".to_owned()),
            ("ro".to_owned(), "false".to_owned())
        ]
    );

    // SaveFile, closed by the app while the prompt waits.
    let from = prompt.shown_len();
    let path = predicted(&conn, "term_save");
    let mut responses = subscribe(&conn, &path).await;
    call(
        &conn,
        "SaveFile",
        &options(vec![("handle_token", Value::from("term_save"))]),
    )
    .await
    .unwrap();
    prompt.wait_for("Save as", from).await;
    assert_eq!(close(&conn, &path).await, None);
    prompt.wait_for("(closed by the app)", from).await;
    assert!(
        next_response(&mut responses, Duration::from_millis(300))
            .await
            .is_none()
    );

    // An empty answer cancels: Response 1.
    let from = prompt.shown_len();
    let path = predicted(&conn, "term_cancel");
    let mut responses = subscribe(&conn, &path).await;
    call(
        &conn,
        "SaveFile",
        &options(vec![("handle_token", Value::from("term_cancel"))]),
    )
    .await
    .unwrap();
    prompt.wait_for("Save as", from).await;
    prompt.type_in("\n");
    let (code, _) = next_response(&mut responses, Duration::from_secs(10))
        .await
        .expect("Response");
    assert_eq!(code, 1);

    // AccessDialog, asked the way a frontend asks it.
    let from = prompt.shown_len();
    let asker = conn.clone();
    let access = tokio::spawn(async move {
        let reply = asker
            .call_method(
                Some(PROMPT),
                DESKTOP_PATH,
                Some("org.freedesktop.impl.portal.Access"),
                "AccessDialog",
                &(
                    OwnedObjectPath::try_from("/org/freedesktop/portal/desktop/request/1_1/acc")
                        .unwrap(),
                    "org.example.App",
                    "",
                    "Reach example.org:443?",
                    "The app wants to connect",
                    "Only this once unless you say always",
                    Options::new(),
                ),
            )
            .await
            .unwrap();
        reply.body().deserialize::<(u32, Options)>().unwrap().0
    });
    let shown = prompt.wait_for("Allow? [y/N]", from).await;
    assert!(
        shown[from..].contains("AccessDialog from org.example.App"),
        "{shown}"
    );
    assert!(
        shown[from..].contains("The app wants to connect"),
        "{shown}"
    );
    prompt.type_in("y\n");
    assert_eq!(access.await.unwrap(), 0);
}

// ---- a sandboxed caller ---------------------------------------------------

const APP_ID: &str = "org.example.Picker";
const DOCUMENT_PORTAL: &str = "/usr/libexec/xdg-document-portal";
const DOCUMENTS: &str = "org.freedesktop.portal.Documents";

/// The app: for OpenFile, then SaveFile, subscribes to Response on the
/// predicted path and calls the portal through its proxy; reads the opened
/// file's URI and writes to the saved one inside the sandbox; prints one
/// JSON object.
const APP: &str = r#"
import dbus, dbus.mainloop.glib, json, sys, urllib.parse
from gi.repository import GLib
dbus.mainloop.glib.DBusGMainLoop(set_as_default=True)
b = dbus.SessionBus()
portal = b.get_object('org.freedesktop.portal.Desktop', '/org/freedesktop/portal/desktop')
def ask(method, token, extra=None):
    path = '/org/freedesktop/portal/desktop/request/%s/%s' % (
        b.get_unique_name()[1:].replace('.', '_'), token)
    out = {'expected': path}
    loop = GLib.MainLoop()
    def on_response(code, results):
        out['code'] = int(code)
        out['uris'] = [str(u) for u in results.get('uris', [])]
        loop.quit()
    match = b.add_signal_receiver(on_response, signal_name='Response',
        dbus_interface='org.freedesktop.portal.Request', path=path)
    try:
        options = {'handle_token': token}
        options.update(extra or {})
        out['handle'] = str(getattr(portal, method)('', 'Pick a file', options,
            dbus_interface='org.freedesktop.portal.FileChooser'))
        GLib.timeout_add(20000, loop.quit)
        loop.run()
    except dbus.exceptions.DBusException as e:
        out['error'] = e.get_dbus_name()
    match.remove()
    return out
def local(uri):
    return urllib.parse.unquote(uri[len('file://'):])
opened = ask('OpenFile', 'porthole_open')
opened['read'] = []
for u in opened.get('uris', []):
    try:
        with open(local(u)) as f:
            opened['read'].append(f.read())
    except OSError as e:
        opened['read'].append('ERROR %s' % e)
# Re-saving the opened document: its folder and file as the app sees them.
extra = {}
if opened.get('uris'):
    doc_file = local(opened['uris'][0])
    as_bytes = lambda p: dbus.ByteArray(p.encode() + b'\0')
    extra = {'current_folder': as_bytes(doc_file.rsplit('/', 1)[0]),
             'current_file': as_bytes(doc_file)}
saved = ask('SaveFile', 'porthole_save', extra)
saved['wrote'] = []
for u in saved.get('uris', []):
    try:
        with open(local(u), 'w') as f:
            f.write('saved inside\n')
        saved['wrote'].append('ok')
    except OSError as e:
        saved['wrote'].append('ERROR %s' % e)
print(json.dumps({'open': opened, 'save': saved}), flush=True)
"#;

fn sandbox_missing() -> Option<String> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Some("needs root (porthole run and the FUSE mount as root here)".into());
    }
    if !Path::new("/dev/fuse").exists() {
        return Some("/dev/fuse is missing (FUSE)".into());
    }
    if !Path::new("/usr/lib/python3/dist-packages/dbus").exists()
        || !Path::new("/usr/lib/python3/dist-packages/gi").exists()
    {
        return Some("python3-dbus or python3-gi missing".into());
    }
    if !Path::new(DOCUMENT_PORTAL).exists() {
        return Some(format!("{DOCUMENT_PORTAL} missing (xdg-desktop-portal)"));
    }
    None
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sandboxed_app_gets_a_document_it_can_read_inside() {
    if let Some(why) = sandbox_missing() {
        porthole_tests::skipped(&format!(
            "a_sandboxed_app_gets_a_document_it_can_read_inside: {why}"
        ));
        return;
    }
    app_gets_a_document(&bin("porthole-documents")).await;
}

/// The same with upstream's document store behind the frontend: the
/// frontend speaks only the Documents D-Bus API, so either store serves it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sandboxed_app_gets_a_document_from_xdg_document_portal() {
    if let Some(why) = sandbox_missing() {
        porthole_tests::skipped(&format!(
            "a_sandboxed_app_gets_a_document_from_xdg_document_portal: {why}"
        ));
        return;
    }
    app_gets_a_document(Path::new(DOCUMENT_PORTAL)).await;
}

async fn app_gets_a_document(document_store: &Path) {
    let bus = Bus::start();
    let (store, docs) = bus.start_document_store(document_store, true).await;
    // GetMountPoint answers once the FUSE mount is up; the launcher binds
    // the app's view only when it is.
    let conn = bus.connection().await;
    conn.call_method(
        Some(DOCUMENTS),
        "/org/freedesktop/portal/documents",
        Some(DOCUMENTS),
        "GetMountPoint",
        &(),
    )
    .await
    .unwrap();

    let host = bus.root().join("host");
    std::fs::create_dir_all(&host).unwrap();
    let chosen = host.join("chosen file.txt");
    std::fs::write(&chosen, "picked on the host\n").unwrap();
    let chosen_uri = format!(
        "file://{}",
        chosen.display().to_string().replace(' ', "%20")
    );
    let saved = host.join("saved.txt");
    let saved_uri = format!("file://{}", saved.display());
    let script = format!(
        "{{\"method\": \"OpenFile\", \"uris\": [\"{chosen_uri}\"]}}\n\
         {{\"method\": \"SaveFile\", \"uris\": [\"{saved_uri}\"]}}\n"
    );
    // The document store stops first, then the permission store.
    let portal = Portal::start_on(bus, vec![docs, store], &script, false).await;

    let mut cmd = portal.bus.command(bin("porthole"));
    cmd.args(["run", APP_ID, "--", "/usr/bin/python3", "-c", APP])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("porthole run");
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let mut stderr = child.stderr.take().unwrap();
    let stderr_text = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stderr.read_to_string(&mut s);
        s
    });
    let line = rx.recv_timeout(Duration::from_secs(40));
    if line.is_err() {
        let _ = child.kill();
    }
    let status = child.wait().unwrap();
    let err = stderr_text.join().unwrap();
    let line = line.unwrap_or_else(|_| {
        panic!(
            "no answer from the sandboxed app ({status}): {err}\n{}",
            portal.bus.logs()
        )
    });
    let all: serde_json::Value = serde_json::from_str(&line).unwrap();
    assert!(status.success(), "{status}: {err}");
    // SAFETY: getuid has no preconditions.
    let uid = unsafe { libc::getuid() };
    let prefix = format!("file:///run/user/{uid}/doc/");
    for (key, name) in [("open", "/chosen%20file.txt"), ("save", "/saved.txt")] {
        let out = &all[key];
        assert_eq!(out["handle"], out["expected"], "{key}: {out}");
        assert_eq!(out["code"], 0, "{key}: {out}\n{}", portal.bus.logs());
        let uris: Vec<String> = serde_json::from_value(out["uris"].clone()).unwrap();
        assert_eq!(uris.len(), 1, "{key}: {out}");
        assert!(
            uris[0].starts_with(&prefix) && uris[0].ends_with(name),
            "{key}: the app must get a document URI, not the host path: {}",
            uris[0]
        );
    }
    assert_eq!(
        all["open"]["read"],
        serde_json::json!(["picked on the host\n"]),
        "the app reads its document inside the sandbox: {all}"
    );
    assert_eq!(all["save"]["wrote"], serde_json::json!(["ok"]), "{all}");
    assert_eq!(
        std::fs::read_to_string(&saved).unwrap_or_default(),
        "saved inside\n",
        "the app's save through its document reaches the host file"
    );
    // The backend was told which app asked.
    let records = portal.wait_records(2).await;
    assert_eq!(records[0]["app_id"], APP_ID);
    assert_eq!(records[1]["app_id"], APP_ID);
    // The app's document paths reach the backend as the host's paths.
    assert_eq!(
        records[1]["options"]["current_folder"],
        host.display().to_string(),
        "{}",
        records[1]
    );
    assert_eq!(
        records[1]["options"]["current_file"],
        chosen.display().to_string(),
        "{}",
        records[1]
    );
}

// ---- real clients -----------------------------------------------------------

const CLIENT_APP_ID: &str = "org.example.AshpdClient";

/// ashpd, the Rust portal client, inside `porthole run` (through the
/// sandbox's bus proxy), with our document store and the scripted backend:
/// FileChooser's three methods give the app document paths it reads and
/// writes inside its sandbox, whose writes reach the host files; Settings
/// gives the backend's colour scheme; NetworkMonitor the host's status.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ashpd_inside_the_sandbox_uses_each_portal() {
    if let Some(why) = sandbox_missing() {
        porthole_tests::skipped(&format!("ashpd_inside_the_sandbox_uses_each_portal: {why}"));
        return;
    }
    let app = porthole_tests::example("ashpd_app");
    let bus = Bus::start();
    let (store, docs) = bus
        .start_document_store(&bin("porthole-documents"), true)
        .await;
    let host = bus.root().join("host");
    std::fs::create_dir_all(&host).unwrap();
    let chosen = host.join("picked file.txt");
    std::fs::write(&chosen, "picked on the host\n").unwrap();
    let uri = |p: &Path| format!("file://{}", p.display().to_string().replace(' ', "%20"));
    let (report, one, two) = (
        host.join("report.txt"),
        host.join("one.txt"),
        host.join("two.txt"),
    );
    let script = format!(
        "{{\"method\": \"OpenFile\", \"uris\": [\"{}\"]}}\n\
         {{\"method\": \"SaveFile\", \"uris\": [\"{}\"]}}\n\
         {{\"method\": \"SaveFiles\", \"uris\": [\"{}\", \"{}\"]}}\n",
        uri(&chosen),
        uri(&report),
        uri(&one),
        uri(&two)
    );
    std::fs::write(
        bus.root().join("settings.ini"),
        "[org.freedesktop.appearance]\ncolor-scheme=prefer-dark\n",
    )
    .unwrap();
    let portal = Portal::start_on(bus, vec![docs, store], &script, false).await;

    let mut cmd = portal.bus.command(bin("porthole"));
    cmd.args(["run", "--share=network", "--app-dir"])
        .arg(app.parent().unwrap())
        .args([CLIENT_APP_ID, "--", "/app/ashpd_app"]);
    let (status, out, err) = porthole_tests::run_with_timeout(&mut cmd, Duration::from_secs(60));
    assert!(
        status.success(),
        "{status}: {out}{err}\n{}",
        portal.bus.logs()
    );
    let seen: serde_json::Value = serde_json::from_str(out.trim())
        .unwrap_or_else(|e| panic!("{e}: {out}{err}\n{}", portal.bus.logs()));

    // SAFETY: getuid has no preconditions.
    let uid = unsafe { libc::getuid() };
    let docs_prefix = format!("file:///run/user/{uid}/doc/");
    let uris_of = |key: &str| -> Vec<String> {
        serde_json::from_value(seen[key]["uris"].clone())
            .unwrap_or_else(|_| panic!("{key}: {seen}\n{}", portal.bus.logs()))
    };
    for (key, names) in [
        ("open", &["/picked%20file.txt"][..]),
        ("save", &["/report.txt"][..]),
        ("save_files", &["/one.txt", "/two.txt"][..]),
    ] {
        let uris = uris_of(key);
        assert_eq!(uris.len(), names.len(), "{key}: {seen}");
        for (uri, name) in uris.iter().zip(names) {
            assert!(
                uri.starts_with(&docs_prefix) && uri.ends_with(name),
                "{key}: a document URI, not the host path: {uri}"
            );
        }
    }
    assert_eq!(
        seen["open"]["read"],
        serde_json::json!(["picked on the host\n"]),
        "the app reads the picked file inside its sandbox: {seen}"
    );
    assert_eq!(seen["save"]["wrote"], serde_json::json!(["ok"]), "{seen}");
    assert_eq!(
        seen["save_files"]["wrote"],
        serde_json::json!(["ok", "ok"]),
        "{seen}"
    );
    for (file, text) in [
        (&report, "saved by SaveFile\n"),
        (&one, "saved by SaveFiles\n"),
        (&two, "saved by SaveFiles\n"),
    ] {
        assert_eq!(
            std::fs::read_to_string(file).unwrap_or_default(),
            text,
            "the app's write reaches {}",
            file.display()
        );
    }
    assert_eq!(seen["settings"]["color_scheme"], "PreferDark", "{seen}");
    assert_eq!(seen["settings"]["version"], 2, "{seen}");

    // The network status the app saw is the host's, as the frontend says.
    let conn = portal.bus.connection().await;
    let status: Options = monitor_call(&conn, "GetStatus").await;
    let connectivity = ["", "Local", "Limited", "CaptivePortal", "FullNetwork"]
        [u32::try_from(&status["connectivity"]).unwrap() as usize];
    assert_eq!(
        seen["network"],
        serde_json::json!({
            "available": bool::try_from(&status["available"]).unwrap(),
            "metered": bool::try_from(&status["metered"]).unwrap(),
            "connectivity": connectivity,
            "available_call": bool::try_from(&status["available"]).unwrap(),
        }),
        "{seen}"
    );
    // The backend was asked on behalf of the app, three dialogs.
    let records = portal.wait_records(3).await;
    let methods: Vec<&str> = records
        .iter()
        .map(|r| r["method"].as_str().unwrap())
        .collect();
    assert_eq!(methods, ["OpenFile", "SaveFile", "SaveFiles"]);
    assert!(
        records.iter().all(|r| r["app_id"] == CLIENT_APP_ID),
        "{records:?}"
    );
}

/// A line reader over a child's output, for waiting on what it printed.
struct Lines {
    rx: mpsc::Receiver<String>,
    seen: Vec<String>,
}

impl Lines {
    fn of(out: impl Read + Send + 'static) -> Lines {
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Lines {
            rx,
            seen: Vec::new(),
        }
    }

    /// Reads lines until one contains `what`; returns its index.
    fn wait_for(&mut self, what: &str, within: Duration) -> Option<usize> {
        if let Some(i) = self.seen.iter().position(|l| l.contains(what)) {
            return Some(i);
        }
        let deadline = Instant::now() + within;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = self.rx.recv_timeout(left).ok()?;
            self.seen.push(line);
            if self.seen.last().unwrap().contains(what) {
                return Some(self.seen.len() - 1);
            }
        }
    }
}

/// GLib's `gdbus call` asks for a file; `dbus-monitor` (a bus monitor)
/// sees the frontend's `Response` with the backend's URIs, sent to the
/// gdbus connection alone, on the handle gdbus printed. A one-shot caller
/// leaves the bus as soon as it has printed the handle, and a request
/// whose caller left is closed (as upstream does), so gdbus is held on the
/// bus by giving it a full pipe as standard output: it blocks printing
/// until the test reads. `gdbus monitor` cannot show this signal: it
/// subscribes with a match rule, and the Response is unicast to the
/// caller (upstream's too), never broadcast.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gdbus_call_gets_a_response_that_a_monitor_sees() {
    use std::os::fd::AsRawFd;
    let uri = "file:///srv/picked%20by%20gdbus.txt";
    let portal = Portal::start(&format!(r#"{{"method": "OpenFile", "uris": ["{uri}"]}}"#)).await;
    let address = portal.bus.address().to_owned();

    // The monitor, ready once it prints a signal the test sends.
    let mut monitor = std::process::Command::new("dbus-monitor")
        .args(["--address", &address, "--monitor"])
        .arg("type='signal',interface='org.freedesktop.portal.Request',member='Response'")
        .arg("type='signal',interface='org.porthole.Test',member='Ready'")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("dbus-monitor");
    let mut seen = Lines::of(monitor.stdout.take().unwrap());
    let conn = portal.bus.connection().await;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        conn.emit_signal(None::<&str>, "/", "org.porthole.Test", "Ready", &())
            .await
            .unwrap();
        if seen
            .wait_for("member=Ready", Duration::from_millis(100))
            .is_some()
        {
            break;
        }
        assert!(Instant::now() < deadline, "dbus-monitor never came up");
    }

    // gdbus's standard output: a pipe filled up, so its print blocks.
    let (mut reader, writer) = std::io::pipe().unwrap();
    let fd = writer.as_raw_fd();
    // SAFETY: fcntl on a pipe fd we own; only O_NONBLOCK changes.
    unsafe { libc::fcntl(fd, libc::F_SETFL, libc::O_NONBLOCK) };
    let mut filler = &writer;
    while std::io::Write::write(&mut filler, &[b'.'; 4096]).is_ok() {}
    // SAFETY: as above; back to blocking writes.
    unsafe { libc::fcntl(fd, libc::F_SETFL, 0) };
    let mut gdbus = std::process::Command::new("gdbus")
        .args(["call", "--address", &address, "--dest", DESKTOP])
        .args(["--object-path", DESKTOP_PATH])
        .args(["--method", "org.freedesktop.portal.FileChooser.OpenFile"])
        .args(["", "Pick", "{'handle_token': <'gdbus_1'>}"])
        .stdout(writer)
        .stderr(Stdio::piped())
        .spawn()
        .expect("gdbus");

    let at = seen.wait_for("member=Response", Duration::from_secs(10));
    // Let gdbus print and go.
    let drained = std::thread::spawn(move || {
        let mut out = Vec::new();
        let _ = reader.read_to_end(&mut out);
        String::from_utf8_lossy(&out)
            .trim_start_matches('.')
            .to_owned()
    });
    let status = gdbus.wait().unwrap();
    let printed = drained.join().unwrap();
    let mut err = String::new();
    gdbus
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    let at = at.unwrap_or_else(|| {
        panic!(
            "the monitor saw no Response: {:?}\ngdbus: {printed}{err}\n{}",
            seen.seen,
            portal.bus.logs()
        )
    });
    assert!(status.success(), "gdbus: {status} {printed}{err}");
    // "(objectpath '/org/freedesktop/portal/desktop/request/1_7/gdbus_1',)"
    let handle = printed
        .trim()
        .strip_prefix("(objectpath '")
        .and_then(|s| s.strip_suffix("',)"))
        .unwrap_or_else(|| panic!("gdbus printed {printed:?}"));
    let caller = handle
        .strip_prefix("/org/freedesktop/portal/desktop/request/")
        .and_then(|s| s.strip_suffix("/gdbus_1"))
        .unwrap_or_else(|| panic!("not upstream's handle formula: {handle}"));
    // "signal time=... sender=:1.3 -> destination=:1.7 serial=... path=...; interface=...; member=Response"
    let header = &seen.seen[at];
    assert!(
        header.contains(&format!("destination=:{} ", caller.replace('_', "."))),
        "the Response goes to the gdbus connection alone: {header}"
    );
    assert!(header.contains(&format!("path={handle};")), "{header}");
    // Its body: the response code and the chosen URIs.
    seen.wait_for(&format!("string \"{uri}\""), Duration::from_secs(5))
        .unwrap_or_else(|| panic!("no uris in the Response: {:?}", &seen.seen[at..]));
    let body: Vec<&str> = seen.seen[at + 1..].iter().map(|l| l.trim()).collect();
    assert_eq!(body.first(), Some(&"uint32 0"), "{body:?}");
    assert!(body.contains(&"string \"uris\""), "{body:?}");
    let _ = porthole_tests::signal_and_wait(monitor.id(), libc::SIGTERM, Duration::from_secs(3));
    let _ = monitor.wait();
}

// ---- a real backend ---------------------------------------------------------

const GTK: &str = "org.freedesktop.impl.portal.desktop.gtk";
const GTK_BACKEND: &str = "/usr/libexec/xdg-desktop-portal-gtk";
const GTK_PORTAL: &str = "/usr/share/xdg-desktop-portal/portals/gtk.portal";
const WAYLAND_SOCKET: &str = "wayland-porthole";

/// A process of the test, stopped by PID (SIGTERM, then SIGKILL) on drop.
struct Peer(std::process::Child);

impl Drop for Peer {
    fn drop(&mut self) {
        if !porthole_tests::signal_and_wait(self.0.id(), libc::SIGTERM, Duration::from_secs(3)) {
            porthole_tests::signal_and_wait(self.0.id(), libc::SIGKILL, Duration::from_secs(2));
        }
        let _ = self.0.wait();
    }
}

/// Starts a headless weston on `bus`'s runtime dir, waited for until its
/// socket accepts.
fn start_weston(bus: &Bus) -> Peer {
    let log = std::fs::File::create(bus.root().join("logs/weston.log")).unwrap();
    let mut cmd = bus.command("/usr/bin/weston");
    // Pixman renders the windows, so screenshots show them; no panel (so
    // no clock) and no animations: a still screen; --debug lets any client take screenshots
    // (weston-screenshooter).
    let config = bus.root().join("weston.ini");
    std::fs::write(
        &config,
        "[shell]\npanel-position=none\nstartup-animation=none\nanimation=none\n\
         close-animation=none\nfocus-animation=none\n",
    )
    .unwrap();
    cmd.args([
        "--backend=headless-backend.so",
        "--use-pixman",
        &format!("--config={}", config.display()),
        "--debug",
        &format!("--socket={WAYLAND_SOCKET}"),
        "--idle-time=0",
    ])
    .stdin(Stdio::null())
    .stdout(log.try_clone().unwrap())
    .stderr(log);
    let weston = Peer(cmd.spawn().expect("weston"));
    let socket = bus.runtime_dir().join(WAYLAND_SOCKET);
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::os::unix::net::UnixStream::connect(&socket).is_err() {
        assert!(
            Instant::now() < deadline,
            "weston did not come up:\n{}",
            bus.logs()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    weston
}

fn gtk_missing() -> Option<String> {
    [
        "/usr/bin/weston",
        GTK_BACKEND,
        GTK_PORTAL,
        "/usr/bin/weston-screenshooter",
    ]
    .iter()
    .find(|p| !Path::new(p).exists())
    .map(|p| format!("{p} missing (packages weston, xdg-desktop-portal-gtk)"))
}

/// xdg-desktop-portal-gtk as our frontend's FileChooser backend, chosen
/// through its installed .portal file and a portals.conf, on a headless
/// weston: OpenFile brings up its dialog (the backend's impl Request at the
/// request's handle, a GTK window on the compositor), and the client's
/// Close ends it: the frontend closes the backend's Request, GTK answers
/// the dialog's call with response 2 (seen by a bus monitor), the dialog
/// goes, and the app hears no Response (as upstream).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn xdg_desktop_portal_gtk_shows_the_dialog_and_close_ends_it() {
    if let Some(why) = gtk_missing() {
        porthole_tests::skipped(&format!(
            "xdg_desktop_portal_gtk_shows_the_dialog_and_close_ends_it: {why}"
        ));
        return;
    }
    let bus = Bus::start();
    let _weston = start_weston(&bus);
    let mut cmd = bus.command(GTK_BACKEND);
    cmd.args(["--verbose", "--replace"])
        .env("WAYLAND_DISPLAY", WAYLAND_SOCKET)
        .env("GDK_BACKEND", "wayland")
        .env("GSETTINGS_BACKEND", "memory")
        .env("GTK_A11Y", "none")
        .env("NO_AT_BRIDGE", "1");
    let _gtk = bus.spawn_owning("gtk", cmd, GTK).await;
    let portals = bus.root().join("portals");
    std::fs::create_dir_all(&portals).unwrap();
    std::fs::copy(GTK_PORTAL, portals.join("gtk.portal")).unwrap();
    std::fs::write(portals.join("portals.conf"), "[preferred]\ndefault=gtk\n").unwrap();
    let mut cmd = bus.command(bin("porthole-portals"));
    cmd.arg("-v").env("XDG_DESKTOP_PORTAL_DIR", &portals);
    let _frontend = bus.spawn_owning("portals", cmd, DESKTOP).await;

    // The empty screen, once the shell has drawn its background (two
    // screenshots alike).
    let mut empty = screenshot(&bus, "empty");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        tokio::time::sleep(Duration::from_millis(200)).await;
        let again = screenshot(&bus, "empty");
        if again.1 == empty.1 {
            break;
        }
        assert!(Instant::now() < deadline, "weston's screen never settles");
        empty = again;
    }
    let conn = bus.connection().await;
    let answers = format!("type='method_return',sender='{GTK}'");
    let mut from_gtk = bus.monitor(&[answers.as_str()]).await;
    let path = predicted(&conn, "gtk_dialog");
    let mut responses = subscribe(&conn, &path).await;
    let handle = call(
        &conn,
        "OpenFile",
        &options(vec![("handle_token", Value::from("gtk_dialog"))]),
    )
    .await
    .unwrap();
    assert_eq!(handle.as_str(), path);

    // The dialog is up: GTK's Request at the handle.
    let gtk_request = |conn: zbus::Connection, path: String| async move {
        let proxy = zbus::fdo::IntrospectableProxy::builder(&conn)
            .destination(GTK)
            .unwrap()
            .path(path)
            .unwrap()
            .build()
            .await
            .unwrap();
        proxy
            .introspect()
            .await
            .unwrap_or_default()
            .contains("org.freedesktop.impl.portal.Request")
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    while !gtk_request(conn.clone(), path.clone()).await {
        assert!(
            Instant::now() < deadline,
            "xdg-desktop-portal-gtk never showed the dialog:\n{}",
            bus.logs()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // And its window is on the screen: the screen differs from the empty
    // one taken before (a person can look at it: the test keeps it when it
    // fails; README "Seeing the dialog").
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let shown = screenshot(&bus, "dialog");
        if shown.1 != empty.1 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no window on the screen: {}\n{}",
            shown.0.display(),
            bus.logs()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // The client closes: no Response; GTK answers its call with 2.
    assert_eq!(close(&conn, &path).await, None);
    let answered = tokio::time::timeout(Duration::from_secs(10), async {
        while let Some(msg) = from_gtk.next().await {
            let msg = msg.unwrap();
            if let Ok((code, _)) = msg.body().deserialize::<(u32, Options)>() {
                return code;
            }
        }
        panic!("the monitor ended");
    })
    .await
    .unwrap_or_else(|_| panic!("GTK never answered the dialog's call:\n{}", bus.logs()));
    assert_eq!(answered, 2, "a closed dialog is response 2");
    let deadline = Instant::now() + Duration::from_secs(10);
    while gtk_request(conn.clone(), path.clone()).await {
        assert!(Instant::now() < deadline, "GTK's dialog stays up");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        next_response(&mut responses, Duration::from_millis(300))
            .await
            .is_none(),
        "Close must not emit Response"
    );
    // The window is gone: the screen is empty again.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let after = screenshot(&bus, "closed");
        if after.1 == empty.1 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the dialog's window stays on the screen: {}",
            after.0.display()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A screenshot of the headless weston (weston-screenshooter), saved as
/// `shots/NAME.png` in the test's directory: its path and bytes.
fn screenshot(bus: &Bus, name: &str) -> (PathBuf, Vec<u8>) {
    let dir = bus.root().join("shots").join(name);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let mut cmd = bus.command("/usr/bin/weston-screenshooter");
    cmd.env("WAYLAND_DISPLAY", WAYLAND_SOCKET).current_dir(&dir);
    let (status, out, err) = porthole_tests::run_with_timeout(&mut cmd, Duration::from_secs(10));
    assert!(status.success(), "weston-screenshooter: {out}{err}");
    let shot = std::fs::read_dir(&dir)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|e| e == "png"))
        .unwrap_or_else(|| panic!("weston-screenshooter wrote no PNG: {out}{err}"));
    let target = bus.root().join("shots").join(format!("{name}.png"));
    std::fs::rename(&shot, &target).unwrap();
    let bytes = std::fs::read(&target).unwrap();
    (target, bytes)
}
