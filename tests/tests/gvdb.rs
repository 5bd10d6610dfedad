//! Our store in place of xdg-permission-store on a desktop that used it:
//! grants made through Debian's xdg-permission-store are all there when
//! ours starts on the same data directory (it imports upstream's GVDB
//! files), `permctl export` hands them back, and upstream's
//! xdg-document-portal keeps its documents across restarts with our store
//! (the mirror of `flatpak/db/documents`).

mod store_common;

use std::collections::BTreeMap;
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use porthole_permission_store::gvdb_table;
use porthole_permission_store_client::{BUS_NAME, PermissionStoreProxy};
use porthole_tests::{Bus, Service, anchor_present, skipped};
use store_common::{db_path, permctl, start_store};
use zvariant::Value;

const ANCHOR: &str = "/usr/libexec/xdg-permission-store";
const DOC_PORTAL: &str = "/usr/libexec/xdg-document-portal";
const DOCUMENTS: &str = "org.freedesktop.portal.Documents";
const DOCUMENTS_PATH: &str = "/org/freedesktop/portal/documents";

async fn start_anchor(bus: &Bus) -> Service {
    bus.spawn_owning("xdg-permission-store", bus.command(ANCHOR), BUS_NAME)
        .await
}

fn gvdb_dir(bus: &Bus) -> PathBuf {
    bus.data_home().join("flatpak/db")
}

/// Everything a client can read: each table's ids (List, sorted) and each
/// id's permissions and data (Lookup).
async fn snapshot(conn: &zbus::Connection, tables: &[&str]) -> Vec<String> {
    let ps = PermissionStoreProxy::new(conn).await.unwrap();
    let mut out = Vec::new();
    for table in tables {
        let mut ids = ps.list(table).await.unwrap();
        ids.sort();
        out.push(format!("{table}: {ids:?}"));
        for id in ids {
            let (perms, data) = ps.lookup(table, &id).await.unwrap();
            out.push(format!("{table}/{id}: {perms:?} {}", Value::from(data)));
        }
    }
    out
}

const TABLES: &[&str] = &["notifications", "devices", "background", "odd table.name"];

/// Grants of every shape, made through whatever store owns the name.
async fn populate(conn: &zbus::Connection) {
    let ps = PermissionStoreProxy::new(conn).await.unwrap();
    ps.set_permission("notifications", true, "org.x.Mail", "org.x.Mail", &["yes"])
        .await
        .unwrap();
    ps.set_permission("notifications", true, "org.x.Mail", "", &["no"])
        .await
        .unwrap();
    // Non-ASCII keys (GLib hashes them as signed chars) and the empty id.
    ps.set_permission(
        "notifications",
        true,
        "Übersicht ünïcode",
        "org.x.Ü",
        &["yes"],
    )
    .await
    .unwrap();
    ps.set_value("notifications", true, "", &Value::from(9u8))
        .await
        .unwrap();
    // Many apps on one id.
    for i in 0..40 {
        let app = format!("org.many.App{i:02}");
        let perms: Vec<&str> = if i % 2 == 0 {
            vec!["yes"]
        } else {
            vec!["no", "ask"]
        };
        ps.set_permission("devices", true, "camera", &app, &perms)
            .await
            .unwrap();
    }
    let mut dict: std::collections::HashMap<&str, Value<'_>> = std::collections::HashMap::new();
    dict.insert("count", Value::from(7u32));
    dict.insert("name", Value::from("cam"));
    ps.set_value("devices", false, "camera", &Value::from(dict))
        .await
        .unwrap();
    // Data values of several types, some ids with no grant at all.
    let values = [
        ("u64", Value::from(u64::MAX)),
        ("str", Value::from("text with ünïcode")),
        ("tuple", Value::from((1i32, "s", vec![1u8, 2, 3]))),
        ("strv", Value::from(vec!["a", "b"])),
        ("bool", Value::from(true)),
        ("double", Value::from(2.5f64)),
        ("nested", Value::Value(Box::new(Value::from(-3i16)))),
        ("/a/path/as/id", Value::from(1u8)),
    ];
    for (id, v) in values {
        ps.set_value("background", true, id, &v).await.unwrap();
    }
    let apps: BTreeMap<&str, Vec<&str>> = [
        ("org.b.One", vec!["yes"]),
        ("org.b.Two", vec![]),
        ("", vec!["x", "y", "z"]),
    ]
    .into();
    ps.set(
        "background",
        true,
        "tuple",
        apps,
        &Value::from((1i32, "s", vec![1u8, 2, 3])),
    )
    .await
    .unwrap();
    ps.set_permission("odd table.name", true, "id with spaces", "org.o.O", &["1"])
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grants_made_upstream_survive_the_switch_and_the_switch_back() {
    if !anchor_present(ANCHOR, "xdg-desktop-portal") {
        return;
    }
    let bus = Bus::start();
    let conn = bus.connection().await;
    let mut anchor = start_anchor(&bus).await;
    populate(&conn).await;
    let upstream = snapshot(&conn, TABLES).await;
    anchor.stop();
    assert!(
        gvdb_dir(&bus).join("devices").exists(),
        "upstream wrote no files"
    );
    assert!(!db_path(&bus).exists());

    // Ours, first start on the same XDG_DATA_HOME: it imports.
    let mut ours = start_store(&bus).await;
    let imported = snapshot(&conn, TABLES).await;
    assert_eq!(imported, upstream, "what ours answers after the import");
    let log = ours.log_text();
    assert!(
        log.contains("imported xdg-permission-store's tables") && log.contains("tables=4"),
        "the service logs the import:\n{log}"
    );
    let (code, out, err) = permctl(&bus, &["--json", "history", "--limit", "0"]);
    assert_eq!(code, 0, "{err}");
    let records: Vec<serde_json::Value> = serde_json::from_str(&out).unwrap();
    assert!(!records.is_empty());
    assert!(
        records.iter().all(|r| r["action"] == "import"),
        "every history record of the first start is an import: {out}"
    );

    // A change made through ours, then back to upstream through the export,
    // with upstream's own files gone: only the export can bring them back.
    let ps = PermissionStoreProxy::new(&conn).await.unwrap();
    ps.set_permission("notifications", true, "org.y.New", "org.y.New", &["yes"])
        .await
        .unwrap();
    let ours_now = snapshot(&conn, TABLES).await;
    assert_ne!(ours_now, upstream);
    // A grant meant to lapse does not go back: upstream would keep it for
    // ever.
    let (code, out, err) = permctl(
        &bus,
        &[
            "grant",
            "notifications",
            "org.x.Mail",
            "org.t.Temp",
            "yes",
            "--expires-in",
            "1h",
        ],
    );
    assert_eq!(code, 0, "{out}{err}");
    std::fs::remove_dir_all(gvdb_dir(&bus)).unwrap();
    let (code, out, err) = permctl(&bus, &["export"]);
    assert_eq!(code, 0, "permctl export: {out}{err}");
    assert!(out.contains("exported 4 tables"), "{out}");
    assert!(err.contains("1 grant(s) with an expiry left out"), "{err}");
    ours.stop();

    let _anchor = start_anchor(&bus).await;
    assert_eq!(
        snapshot(&conn, TABLES).await,
        ours_now,
        "what upstream answers from the exported files"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_damaged_and_a_truncated_file_are_named_and_skipped() {
    if !anchor_present(ANCHOR, "xdg-desktop-portal") {
        return;
    }
    let bus = Bus::start();
    let conn = bus.connection().await;
    let mut anchor = start_anchor(&bus).await;
    populate(&conn).await;
    let upstream = snapshot(&conn, &["notifications", "background"]).await;
    anchor.stop();
    let dir = gvdb_dir(&bus);
    let devices = std::fs::read(dir.join("devices")).unwrap();
    std::fs::write(dir.join("devices"), &devices[..devices.len() / 2]).unwrap();
    let mut damaged = std::fs::read(dir.join("odd table.name")).unwrap();
    for b in damaged.iter_mut().skip(16) {
        *b = b.wrapping_mul(31).wrapping_add(7);
    }
    std::fs::write(dir.join("odd table.name"), &damaged).unwrap();

    let ours = start_store(&bus).await;
    assert_eq!(
        snapshot(&conn, &["notifications", "background"]).await,
        upstream,
        "the sound tables are imported"
    );
    let ps = PermissionStoreProxy::new(&conn).await.unwrap();
    assert!(ps.list("devices").await.unwrap().is_empty());
    assert!(ps.list("odd table.name").await.unwrap().is_empty());
    let log = ours.log_text();
    for name in ["devices", "odd table.name"] {
        assert!(
            log.contains(&format!("flatpak/db/{name}")) && log.contains("not imported"),
            "the service names {name}:\n{log}"
        );
    }
    assert!(log.contains("skipped=2"), "{log}");

    // permctl names them too, imports the rest again (no change) and says
    // that something was skipped by its status.
    let (code, out, err) = permctl(&bus, &["import"]);
    assert_eq!(code, 1, "{out}{err}");
    assert!(
        err.contains("devices") && err.contains("odd table.name"),
        "{err}"
    );
    assert!(
        out.contains("imported 2 tables") && out.contains("0 ids changed"),
        "{out}"
    );
    // The damaged files stay as they were: the mirror never replaces an
    // unreadable file with an empty table.
    assert_eq!(
        std::fs::read(dir.join("devices")).unwrap().len(),
        devices.len() / 2
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn importing_twice_changes_nothing() {
    if !anchor_present(ANCHOR, "xdg-desktop-portal") {
        return;
    }
    let bus = Bus::start();
    let conn = bus.connection().await;
    let mut anchor = start_anchor(&bus).await;
    populate(&conn).await;
    anchor.stop();

    let (code, out, err) = permctl(&bus, &["import"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("imported 4 tables"), "{out}");
    assert!(!out.contains(" 0 ids changed"), "{out}");
    let history = |bus: &Bus| {
        let (code, out, err) = permctl(bus, &["--json", "history", "--limit", "0"]);
        assert_eq!(code, 0, "{err}");
        serde_json::from_str::<Vec<serde_json::Value>>(&out).unwrap()
    };
    let first = history(&bus);
    // Each grant and each id once; an empty permission list (org.b.Two)
    // is no grant, upstream's and ours alike.
    let grants = first.iter().filter(|r| !r["app"].is_null()).count();
    assert_eq!(grants, 3 + 40 + 2 + 1, "{first:?}");
    assert_eq!(first.len() - grants, 13, "one record per id: {first:?}");

    let (code, out, err) = permctl(&bus, &["import"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains("4 tables") && out.contains("; 0 ids changed"),
        "{out}"
    );
    assert_eq!(history(&bus), first, "a second import records nothing");

    // The service finds a database and imports nothing at its start.
    let ours = start_store(&bus).await;
    let before = snapshot(&conn, TABLES).await;
    assert!(!ours.log_text().contains("imported xdg-permission-store"));
    assert_eq!(history(&bus), first);
    assert_eq!(snapshot(&conn, TABLES).await, before);
}

/// Documents, names and grants as a client of the document portal sees
/// them: Info(id) for each, and the host path Lookup finds.
async fn documents_view(conn: &zbus::Connection, ids: &[String], files: &[PathBuf]) -> Vec<String> {
    let mut out = Vec::new();
    for (id, file) in ids.iter().zip(files) {
        let info = conn
            .call_method(
                Some(DOCUMENTS),
                DOCUMENTS_PATH,
                Some(DOCUMENTS),
                "Info",
                &(id,),
            )
            .await;
        let info = match info {
            Ok(m) => {
                let (path, apps): (Vec<u8>, BTreeMap<String, Vec<String>>) =
                    m.body().deserialize().unwrap();
                let path = String::from_utf8_lossy(&path)
                    .trim_end_matches('\0')
                    .to_owned();
                format!("{path} {apps:?}")
            }
            Err(e) => format!("Info failed: {e}"),
        };
        let mut host = file.as_os_str().as_encoded_bytes().to_vec();
        host.push(0);
        let found = conn
            .call_method(
                Some(DOCUMENTS),
                DOCUMENTS_PATH,
                Some(DOCUMENTS),
                "Lookup",
                &(host,),
            )
            .await
            .map(|m| m.body().deserialize::<String>().unwrap())
            .unwrap_or_else(|e| format!("Lookup failed: {e}"));
        out.push(format!("{id}: {info}; lookup -> {found}"));
    }
    out
}

async fn start_docs(bus: &Bus) -> Service {
    bus.spawn_owning("xdg-document-portal", bus.command(DOC_PORTAL), DOCUMENTS)
        .await
}

/// Waits (up to 10 s) until the documents file on disk holds `ids` with
/// their grants: the store writes it after the calls returned, as a user's
/// restart comes later. Gives up quietly: what the restarted document
/// portal then shows is the test's verdict.
fn wait_for_documents_file(dir: &Path, ids: &[String]) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let entries = std::fs::read(dir.join("documents"))
            .ok()
            .and_then(|b| gvdb_table::parse(&b).ok())
            .unwrap_or_default();
        let complete = ids.iter().all(|id| {
            entries
                .iter()
                .any(|(i, e)| i == id && e.apps.contains_key("org.example.Docs"))
        });
        if complete || Instant::now() > deadline {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// One run of the document sequence against `store` (ours or upstream's):
/// returns the views before, after a document portal restart, and after a
/// restart of both.
async fn documents_across_restarts(ours: bool) -> Vec<Vec<String>> {
    let bus = Bus::start();
    let conn = bus.connection().await;
    let mut store = if ours {
        start_store(&bus).await
    } else {
        start_anchor(&bus).await
    };
    let mut docs = start_docs(&bus).await;
    let files: Vec<PathBuf> = (0..4)
        .map(|i| {
            let p = bus.root().join(format!("home/file {i}.txt"));
            std::fs::write(&p, format!("content {i}")).unwrap();
            p
        })
        .collect();
    let mut ids = Vec::new();
    for (i, file) in files.iter().enumerate() {
        let f = std::fs::File::open(file).unwrap();
        let reply = conn
            .call_method(
                Some(DOCUMENTS),
                DOCUMENTS_PATH,
                Some(DOCUMENTS),
                "Add",
                // reuse_existing, persistent: only persistent documents
                // outlive the document portal.
                &(zvariant::Fd::from(f.as_fd()), true, true),
            )
            .await
            .unwrap();
        let id: String = reply.body().deserialize().unwrap();
        let perms: &[&str] = if i % 2 == 0 {
            &["read"]
        } else {
            &["read", "write"]
        };
        conn.call_method(
            Some(DOCUMENTS),
            DOCUMENTS_PATH,
            Some(DOCUMENTS),
            "GrantPermissions",
            &(&id, "org.example.Docs", perms),
        )
        .await
        .unwrap();
        ids.push(id);
    }
    let mut views = vec![documents_view(&conn, &ids, &files).await];
    wait_for_documents_file(&gvdb_dir(&bus), &ids);

    docs.stop();
    let mut docs = start_docs(&bus).await;
    views.push(documents_view(&conn, &ids, &files).await);

    docs.stop();
    store.stop();
    let _store = if ours {
        start_store(&bus).await
    } else {
        start_anchor(&bus).await
    };
    let _docs = start_docs(&bus).await;
    views.push(documents_view(&conn, &ids, &files).await);
    views
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstreams_document_portal_keeps_its_documents_with_our_store() {
    if !anchor_present(DOC_PORTAL, "xdg-desktop-portal")
        || !anchor_present(ANCHOR, "xdg-desktop-portal")
    {
        return;
    }
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 || !Path::new("/dev/fuse").exists() {
        skipped(
            "upstreams_document_portal_keeps_its_documents_with_our_store: needs root and /dev/fuse",
        );
        return;
    }
    for ours in [false, true] {
        let views = documents_across_restarts(ours).await;
        let side = if ours {
            "our store"
        } else {
            "xdg-permission-store"
        };
        assert_eq!(views[0].len(), 4);
        for v in &views[0] {
            assert!(
                !v.contains("failed") && v.contains("org.example.Docs"),
                "{side}: {v}"
            );
        }
        assert_eq!(
            views[1], views[0],
            "{side}: after a restart of the document portal"
        );
        assert_eq!(
            views[2], views[0],
            "{side}: after a restart of both services"
        );
    }
}
