//! permctl as a user meets it: its exit status, what it prints, and what it
//! leaves on disk, against our service, against Debian's
//! xdg-permission-store owning the name, and with no service at all.

mod store_common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use porthole_permission_store_client::BUS_NAME;
use porthole_permission_store_client::PermissionStoreProxy;
use porthole_tests::{Bus, bin};
use store_common::{db_path, start_store};

const ANCHOR: &str = "/usr/libexec/xdg-permission-store";

struct Out {
    code: i32,
    out: String,
    err: String,
}

fn permctl(bus: &Bus, args: &[&str]) -> Out {
    let (code, out, err) = store_common::permctl(bus, args);
    Out { code, out, err }
}

/// Every file under `dir`, recursively, with its length and a hash of its
/// bytes: "changed nothing" means this is equal before and after.
fn snapshot(dir: &Path) -> Vec<(PathBuf, usize, u64)> {
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return out;
    };
    for e in entries.flatten() {
        let path = e.path();
        if path.is_dir() {
            out.push((path.clone(), 0, 0));
            out.extend(snapshot(&path));
        } else {
            let bytes = std::fs::read(&path).unwrap_or_default();
            // FNV-1a
            let hash = bytes.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
                (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3)
            });
            out.push((path, bytes.len(), hash));
        }
    }
    out.sort();
    out
}

/// Bytes that are no SQLite file (the header is wrong).
fn garbage() -> Vec<u8> {
    (0..8192u32)
        .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
        .collect()
}

/// A SQLite header (taken from a database permctl made, so it says WAL
/// mode) followed by garbage: the file claims to be SQLite, its pages are
/// broken.
fn damaged_database(bus: &Bus, path: &Path) {
    let scratch = bus.root().join("scratch.db");
    let r = permctl(
        bus,
        &[
            "--db",
            scratch.to_str().unwrap(),
            "grant",
            "t",
            "i",
            "org.example.App",
            "yes",
        ],
    );
    assert_eq!(r.code, 0, "{}", r.err);
    let mut bytes = std::fs::read(&scratch).unwrap();
    bytes.truncate(100);
    bytes.extend_from_slice(&garbage()[100..]);
    std::fs::write(path, &bytes).unwrap();
}

// ---- 1: app ids the store holds --------------------------------------------

/// Upstream's SetPermission takes any string as the app, so the store
/// holds `firefox` and `snap.firefox`; permctl must show, revoke, reset and
/// list their history, and grant to them (with a warning).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn app_ids_that_are_not_flatpak_ids_work_on_every_command() {
    let bus = Bus::start();
    let _store = start_store(&bus).await;
    let conn = bus.connection().await;
    let ps = PermissionStoreProxy::new(&conn).await.unwrap();
    for app in ["firefox", "snap.firefox"] {
        ps.set_permission("devices", true, "camera", app, &["yes"])
            .await
            .unwrap();
        ps.set_permission("notifications", true, "n", app, &["yes"])
            .await
            .unwrap();
    }

    let r = permctl(&bus, &["show", "firefox"]);
    assert_eq!(r.code, 0, "{}", r.err);
    assert!(r.out.contains("devices        camera  yes"), "{}", r.out);
    let r = permctl(&bus, &["history", "--app", "snap.firefox", "--json"]);
    assert_eq!(r.code, 0, "{}", r.err);
    let history: serde_json::Value = serde_json::from_str(&r.out).unwrap();
    assert_eq!(history.as_array().unwrap().len(), 2, "{}", r.out);
    let r = permctl(&bus, &["revoke", "devices", "camera", "firefox"]);
    assert_eq!(r.code, 0, "{}", r.err);
    assert_eq!(
        r.out,
        "revoked every permission of firefox on devices/camera\n"
    );
    assert_eq!(
        ps.get_permission("devices", "camera", "firefox")
            .await
            .unwrap(),
        Vec::<String>::new()
    );
    let r = permctl(&bus, &["reset", "snap.firefox"]);
    assert_eq!(r.code, 0, "{}", r.err);
    assert_eq!(r.out, "removed the grants of snap.firefox from 2 id(s)\n");

    // A grant to such an id works, with a one-line warning.
    let r = permctl(&bus, &["grant", "devices", "mic", "firefox", "yes"]);
    assert_eq!(r.code, 0, "{}", r.err);
    assert_eq!(r.out, "granted yes to firefox on devices/mic\n");
    assert_eq!(r.err.lines().count(), 1, "{}", r.err);
    assert!(
        r.err
            .starts_with("permctl: warning: \"firefox\" is not a Flatpak app id"),
        "{}",
        r.err
    );
    assert_eq!(
        ps.get_permission("devices", "mic", "firefox")
            .await
            .unwrap(),
        vec!["yes"]
    );
    // No warning for a Flatpak id or for "" (host apps).
    for app in ["org.example.App", ""] {
        let r = permctl(&bus, &["grant", "devices", "mic", app, "yes"]);
        assert_eq!((r.code, r.err.as_str()), (0, ""), "{app:?}");
    }
}

// ---- 2: reads change no file -----------------------------------------------

/// A damaged database named with --db is reported (exit 4, the path, who
/// moves it aside) and stays byte for byte, for reads and writes alike.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_damaged_database_is_reported_and_left_untouched() {
    let bus = Bus::start();
    let dir = bus.root().join("dbs");
    std::fs::create_dir_all(&dir).unwrap();
    let not_sqlite = dir.join("garbage.db");
    std::fs::write(&not_sqlite, garbage()).unwrap();
    let broken = dir.join("broken.db");
    damaged_database(&bus, &broken);
    let before = snapshot(&dir);

    for db in [&not_sqlite, &broken] {
        let db = db.to_str().unwrap();
        for args in [
            &["tables"][..],
            &["list", "t"],
            &["show", "org.example.App"],
            &["history"],
            &["grant", "t", "i", "org.example.App", "yes"],
            &["revoke", "t", "i", "org.example.App"],
            &["reset", "org.example.App"],
        ] {
            let mut all = vec!["--db", db];
            all.extend_from_slice(args);
            let r = permctl(&bus, &all);
            assert_eq!(r.code, 4, "{all:?}: {}{}", r.out, r.err);
            assert!(
                r.err.contains(&format!("the database {db} is damaged"))
                    && r.err.contains("was left as it is")
                    && r.err
                        .contains("the permission store service moves it aside when it starts"),
                "{all:?}: {}",
                r.err
            );
            assert_eq!(r.out, "", "{all:?}");
            assert_eq!(snapshot(&dir), before, "{all:?} changed files");
        }
    }
}

/// --db naming a missing file: reads fail (exit 4, naming the path) and
/// create neither the file nor its directory; a write creates both.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reading_a_missing_db_creates_nothing() {
    let bus = Bus::start();
    let db = bus.root().join("typo/x.db");
    let path = db.to_str().unwrap();
    for args in [
        &["tables"][..],
        &["list", "t"],
        &["show", "org.example.App"],
        &["history", "--json"],
    ] {
        let mut all = vec!["--db", path];
        all.extend_from_slice(args);
        let r = permctl(&bus, &all);
        assert_eq!(r.code, 4, "{all:?}: {}", r.err);
        assert_eq!(
            r.err,
            format!(
                "permctl: no database at {path}; read commands never create one (a grant does)\n"
            )
        );
        assert!(
            !bus.root().join("typo").exists(),
            "{all:?} created the directory"
        );
    }
    let r = permctl(
        &bus,
        &["--db", path, "grant", "t", "i", "org.example.App", "yes"],
    );
    assert_eq!(r.code, 0, "{}", r.err);
    assert!(db.exists());
    let r = permctl(&bus, &["--db", path, "tables"]);
    assert_eq!(
        (r.code, r.out.as_str()),
        (0, "TABLE  IDS\nt      1\n"),
        "{}",
        r.err
    );
}

/// revoke and reset of a database that does not exist have nothing to
/// remove: exit 3, naming the path, and no file (nor -wal, -shm, nor a
/// directory) is created, with --db and at the default path alike. Only
/// grant creates a database.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revoke_and_reset_of_a_missing_database_create_nothing() {
    let bus = Bus::start();
    let dir = bus.root().join("dbs");
    std::fs::create_dir_all(&dir).unwrap();
    let data_before = snapshot(&bus.data_home());
    let never = " (revoke and reset never create one; a grant does)";
    let revoke =
        |db: &str| format!("permctl: no such grant: there is no database at {db}{never}\n");
    let reset = |db: &str| {
        format!("permctl: no grants for org.example.App: there is no database at {db}{never}\n")
    };

    for db in [dir.join("new.db"), dir.join("typo/x.db")] {
        let path = db.to_str().unwrap();
        for (args, expected) in [
            (&["revoke", "t", "i", "org.example.App"][..], revoke(path)),
            (
                &["revoke", "t", "i", "org.example.App", "yes"],
                revoke(path),
            ),
            (&["reset", "org.example.App"], reset(path)),
        ] {
            let mut all = vec!["--db", path];
            all.extend_from_slice(args);
            let r = permctl(&bus, &all);
            assert_eq!((r.code, r.out.as_str()), (3, ""), "{all:?}: {}", r.err);
            assert_eq!(r.err, expected, "{all:?}");
            assert_eq!(snapshot(&dir), [], "{all:?} created files");
        }
    }

    // No service and no --db: the default database is not created either.
    let default = db_path(&bus);
    let default = default.to_str().unwrap();
    for (args, expected) in [
        (
            &["revoke", "t", "i", "org.example.App"][..],
            revoke(default),
        ),
        (&["reset", "org.example.App"], reset(default)),
    ] {
        let r = permctl(&bus, args);
        assert_eq!((r.code, r.out.as_str()), (3, ""), "{args:?}: {}", r.err);
        assert_eq!(r.err, expected, "{args:?}");
        assert_eq!(snapshot(&bus.data_home()), data_before, "{args:?}");
    }

    // A grant creates the database; then reset and revoke find it.
    let db = dir.join("new.db");
    let path = db.to_str().unwrap();
    let r = permctl(
        &bus,
        &["--db", path, "grant", "t", "i", "org.example.App", "yes"],
    );
    assert_eq!(r.code, 0, "{}", r.err);
    let r = permctl(&bus, &["--db", path, "reset", "org.example.App"]);
    assert_eq!(
        (r.code, r.out.as_str()),
        (0, "removed the grants of org.example.App from 1 id(s)\n"),
        "{}",
        r.err
    );
    let r = permctl(&bus, &["--db", path, "revoke", "t", "i", "org.example.App"]);
    assert_eq!(r.code, 3, "{}", r.err);
    assert!(!r.err.contains("there is no database"), "{}", r.err);
}

/// --db naming a directory, or a path that runs through a regular file:
/// permctl says which, exit 4, for every command, instead of SQLite's
/// "disk I/O error" or "File exists", and changes nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_directory_or_a_path_through_a_file_is_named() {
    let bus = Bus::start();
    let dir = bus.root().join("dbs");
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("plain");
    std::fs::write(&file, "not a directory").unwrap();
    let before = snapshot(&dir);
    let d = dir.display();
    let f = file.display();
    let cases = [
        (
            dir.clone(),
            format!("permctl: {d} is a directory, not a database file\n"),
        ),
        (
            file.join("x.db"),
            format!("permctl: {f} is not a directory, so {f}/x.db cannot be a database file\n"),
        ),
        (
            file.join("sub/x.db"),
            format!("permctl: {f} is not a directory, so {f}/sub/x.db cannot be a database file\n"),
        ),
    ];
    for (db, expected) in &cases {
        for args in [
            &["tables"][..],
            &["list", "t"],
            &["show", "org.example.App"],
            &["history"],
            &["grant", "t", "i", "org.example.App", "yes"],
            &["revoke", "t", "i", "org.example.App"],
            &["reset", "org.example.App"],
        ] {
            let mut all = vec!["--db", db.to_str().unwrap()];
            all.extend_from_slice(args);
            let r = permctl(&bus, &all);
            assert_eq!((r.code, r.out.as_str()), (4, ""), "{all:?}: {}", r.err);
            assert_eq!(&r.err, expected, "{all:?}");
            assert_eq!(snapshot(&dir), before, "{all:?} changed files");
        }
    }
}

/// No service, no --db and no database yet: reads answer as an empty store
/// and create nothing under XDG_DATA_HOME.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_no_store_at_all_reads_show_an_empty_store() {
    let bus = Bus::start();
    let before = snapshot(&bus.data_home());
    let r = permctl(&bus, &["tables"]);
    assert_eq!((r.code, r.out.as_str()), (0, ""), "{}", r.err);
    assert!(r.err.starts_with("permctl: no grants yet"), "{}", r.err);
    for args in [&["tables", "--json"][..], &["history", "--json"]] {
        let r = permctl(&bus, args);
        assert_eq!((r.code, r.out.trim()), (0, "[]"), "{args:?}: {}", r.err);
    }
    let r = permctl(&bus, &["show", "org.example.App"]);
    assert_eq!(r.code, 3, "{}", r.err);
    let r = permctl(&bus, &["list", "devices"]);
    assert_eq!(r.code, 3, "{}", r.err);
    assert_eq!(snapshot(&bus.data_home()), before, "a read created files");
    assert!(!db_path(&bus).exists());
}

// ---- 3: activation of a service that cannot start ---------------------------

/// D-Bus activation of a service that finds a damaged database: the bus
/// only says the process exited; permctl says the service failed to start,
/// names the file it moved aside and where its log is.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_service_that_fails_to_start_is_explained() {
    let mut bus = Bus::start();
    bus.add_activatable(
        BUS_NAME,
        &bin("porthole-permission-store").display().to_string(),
    );
    let db = db_path(&bus);
    std::fs::create_dir_all(db.parent().unwrap()).unwrap();
    std::fs::write(&db, garbage()).unwrap();
    // Left by an earlier start: not this failure's doing.
    let old = old_corrupt_file(&bus);
    reload_activatable(&bus).await;

    let r = permctl(&bus, &["tables"]);
    assert_eq!(r.code, 4, "{}{}", r.out, r.err);
    let moved: Vec<PathBuf> = std::fs::read_dir(db.parent().unwrap())
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            p != &old
                && p.file_name()
                    .unwrap()
                    .to_string_lossy()
                    .starts_with("permissions.db.corrupt-")
        })
        .collect();
    assert_eq!(
        moved.len(),
        1,
        "the service moved the file aside: {moved:?}; permctl said {}",
        r.err
    );
    assert!(
        r.err
            .starts_with("permctl: the permission store service failed to start"),
        "{}",
        r.err
    );
    assert!(
        r.err.contains(&format!(
            "moved it aside to {} (the next start",
            moved[0].display()
        )),
        "{}",
        r.err
    );
    assert!(!r.err.contains(OLD_STAMP), "named the old file: {}", r.err);
    assert!(
        r.err
            .contains("journalctl --user -u porthole-permission-store"),
        "{}",
        r.err
    );
    assert_eq!(r.err.lines().count(), 1, "{}", r.err);
}

/// The stamp of a `permissions.db.corrupt-*` file from an earlier start
/// (2020-09-13).
const OLD_STAMP: &str = "corrupt-1600000000";

/// Puts an old moved-aside database beside the default one, as an earlier
/// failed start would have left it.
fn old_corrupt_file(bus: &Bus) -> PathBuf {
    let db = db_path(bus);
    std::fs::create_dir_all(db.parent().unwrap()).unwrap();
    let old = db.with_file_name(format!("permissions.db.{OLD_STAMP}"));
    std::fs::write(&old, garbage()).unwrap();
    old
}

/// permctl activates only a name the bus lists as activatable; make the
/// daemon read a new service file now rather than when it notices.
async fn reload_activatable(bus: &Bus) {
    let conn = bus.connection().await;
    let dbus = zbus::fdo::DBusProxy::new(&conn).await.unwrap();
    dbus.reload_config().await.unwrap();
    let names = dbus.list_activatable_names().await.unwrap();
    assert!(names.iter().any(|n| n.as_str() == BUS_NAME), "{names:?}");
}

/// A service that fails for a reason of its own (here it is /bin/false)
/// moved nothing aside: an old `permissions.db.corrupt-*` beside the
/// database must not be blamed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_start_blames_no_old_corrupt_file() {
    let mut bus = Bus::start();
    bus.add_activatable(BUS_NAME, "/bin/false");
    let old = old_corrupt_file(&bus);
    reload_activatable(&bus).await;

    let r = permctl(&bus, &["tables"]);
    assert_eq!(r.code, 4, "{}{}", r.out, r.err);
    assert!(
        r.err
            .starts_with("permctl: the permission store service failed to start (the bus said: "),
        "{}",
        r.err
    );
    assert!(
        !r.err.contains(OLD_STAMP) && !r.err.contains("damaged") && !r.err.contains("moved"),
        "blamed {}: {}",
        old.display(),
        r.err
    );
    assert!(
        r.err
            .contains("journalctl --user -u porthole-permission-store"),
        "{}",
        r.err
    );
    assert_eq!(r.err.lines().count(), 1, "{}", r.err);
}

// ---- 3b: a store that does not answer ----------------------------------------

/// Takes the store's bus name on a connection of the test without serving
/// anything: calls to the name reach it and get no reply. (The name is
/// requested through the bus daemon, not `Connection::request_name`, which
/// would start zbus's object server and answer UnknownObject.)
async fn own_the_name_silently(bus: &Bus) -> zbus::Connection {
    let conn = bus.connection().await;
    let dbus = zbus::fdo::DBusProxy::new(&conn).await.unwrap();
    let reply = dbus
        .request_name(BUS_NAME.try_into().unwrap(), Default::default())
        .await
        .unwrap();
    assert_eq!(reply, zbus::fdo::RequestNameReply::PrimaryOwner);
    conn
}

/// A store that owns the name and never replies: permctl gives up after
/// --timeout, says the store did not answer, and exits 4 (unreachable);
/// for a change it says it may have been made.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_that_never_answers_is_unreachable_after_the_timeout() {
    let bus = Bus::start();
    let _silent = own_the_name_silently(&bus).await;
    for (args, change) in [
        (&["--timeout", "1", "tables"][..], false),
        (&["--timeout", "1", "show", "org.example.App"], false),
        (
            &[
                "--timeout",
                "1",
                "grant",
                "t",
                "i",
                "org.example.App",
                "yes",
            ],
            true,
        ),
        (&["--timeout", "1", "reset", "org.example.App"], true),
    ] {
        let start = std::time::Instant::now();
        let r = permctl(&bus, args);
        let took = start.elapsed();
        assert_eq!(r.code, 4, "{args:?}: {}{}", r.out, r.err);
        assert!(
            took < Duration::from_secs(8),
            "{args:?} took {took:?} with --timeout 1"
        );
        assert!(
            r.err
                .starts_with("permctl: the permission store did not answer within 1s (--timeout)"),
            "{args:?}: {}",
            r.err
        );
        assert_eq!(
            r.err.contains("the change may or may not have been made"),
            change,
            "{args:?}: {}",
            r.err
        );
        assert_eq!(r.out, "", "{args:?}");
    }
}

/// A store that takes the call and leaves the bus without replying: the
/// bus answers org.freedesktop.DBus.Error.NoReply, which is an unreachable
/// store (4), not a store error (1).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_that_leaves_without_answering_is_unreachable() {
    use futures_util::StreamExt;

    let bus = Bus::start();
    let owner = own_the_name_silently(&bus).await;
    let mut calls = zbus::MessageStream::from(&owner);
    let leave = tokio::spawn(async move {
        while let Some(Ok(msg)) = calls.next().await {
            let header = msg.header();
            if header.message_type() == zbus::message::Type::MethodCall
                && header.member().is_some_and(|m| m.as_str() == "ListTables")
            {
                break;
            }
        }
        owner.close().await.unwrap();
    });

    let r = permctl(&bus, &["tables"]);
    assert_eq!(r.code, 4, "{}{}", r.out, r.err);
    assert!(
        r.err
            .starts_with("permctl: the permission store did not answer (the bus said: "),
        "{}",
        r.err
    );
    assert!(
        r.err
            .contains("journalctl --user -u porthole-permission-store"),
        "{}",
        r.err
    );
    tokio::time::timeout(Duration::from_secs(5), leave)
        .await
        .expect("the call reached the test's connection")
        .unwrap();
}

// ---- 4: another store owns the name ----------------------------------------

/// With xdg-permission-store owning the name, commands that need
/// org.porthole.PermissionStore1 say so (exit 4) instead of a raw
/// UnknownInterface; a plain grant goes through the upstream interface.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_store_on_the_bus_is_named() {
    if !porthole_tests::anchor_present(ANCHOR, "xdg-desktop-portal") {
        return;
    }
    let bus = Bus::start();
    let mut cmd = bus.command(ANCHOR);
    cmd.arg("--replace");
    let _anchor = bus.spawn_owning("anchor", cmd, BUS_NAME).await;
    let conn = bus.connection().await;
    let ps = PermissionStoreProxy::new(&conn).await.unwrap();
    ps.set_permission("devices", true, "camera", "org.example.App", &["yes"])
        .await
        .unwrap();

    for args in [
        &["tables"][..],
        &["list", "devices"],
        &["show", "org.example.App"],
        &["history"],
        &["revoke", "devices", "camera", "org.example.App"],
        &["reset", "org.example.App"],
        &[
            "grant",
            "devices",
            "camera",
            "org.example.App",
            "yes",
            "--expires-in",
            "1h",
        ],
    ] {
        let r = permctl(&bus, args);
        assert_eq!(r.code, 4, "{args:?}: {}{}", r.out, r.err);
        assert_eq!(
            r.err,
            "permctl: the permission store on the session bus is not Porthole's \
             (no org.porthole.PermissionStore1); stop it or use --db PATH\n",
            "{args:?}"
        );
    }
    // Nothing was changed by the refused commands.
    assert_eq!(
        ps.get_permission("devices", "camera", "org.example.App")
            .await
            .unwrap(),
        vec!["yes"]
    );
    // SetPermission is upstream's: a plain grant works through that store.
    let r = permctl(&bus, &["grant", "devices", "mic", "org.example.App", "yes"]);
    assert_eq!(r.code, 0, "{}", r.err);
    assert_eq!(
        ps.get_permission("devices", "mic", "org.example.App")
            .await
            .unwrap(),
        vec!["yes"]
    );
}

// ---- 5: hostile strings ----------------------------------------------------

/// Ids, apps and permissions come from whoever called SetPermission. In a
/// table they are escaped (one row stays one line, no escape sequence
/// reaches the terminal, "" is visible); JSON keeps them exact.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_strings_are_escaped_for_humans_and_exact_in_json() {
    let bus = Bus::start();
    let _store = start_store(&bus).await;
    let conn = bus.connection().await;
    let ps = PermissionStoreProxy::new(&conn).await.unwrap();
    let id = "cam\nforged  row\u{1b}[2J";
    let app = "org.evil.App\u{1b}]0;title\u{7}";
    ps.set_permission("devices", true, id, app, &["yes\u{1b}[8m"])
        .await
        .unwrap();
    ps.set_permission("devices", true, id, "", &["no"])
        .await
        .unwrap();

    let r = permctl(&bus, &["list", "devices"]);
    assert_eq!(r.code, 0, "{}", r.err);
    assert!(
        !r.out.contains('\u{1b}') && !r.out.contains('\u{7}'),
        "{:?}",
        r.out
    );
    let lines: Vec<&str> = r.out.lines().collect();
    assert_eq!(lines.len(), 3, "header and one line per grant: {:?}", r.out);
    // A string that needs escaping is shown quoted, backslashes and quotes
    // escaped too, so it cannot pass for one that holds a backslash.
    assert!(
        lines[1].starts_with("\"cam\\nforged  row\\x1b[2J\"  \"\"  "),
        "{:?}",
        lines[1]
    );
    assert!(
        lines[2].starts_with(
            "\"cam\\nforged  row\\x1b[2J\"  \"org.evil.App\\x1b]0;title\\x07\"  \"yes\\x1b[8m\""
        ),
        "{:?}",
        lines[2]
    );

    for args in [&["show", app][..], &["history"], &["tables"]] {
        let r = permctl(&bus, args);
        assert_eq!(r.code, 0, "{args:?}: {}", r.err);
        assert!(
            !r.out.contains('\u{1b}') && !r.out.contains('\u{7}'),
            "{args:?}: {:?}",
            r.out
        );
    }
    let r = permctl(&bus, &["revoke", "devices", id, app]);
    assert_eq!(r.code, 0, "{}", r.err);
    assert!(!r.out.contains('\u{1b}'), "{:?}", r.out);
    assert_eq!(r.out.lines().count(), 1, "{:?}", r.out);

    let r = permctl(&bus, &["list", "devices", "--json"]);
    assert_eq!(r.code, 0, "{}", r.err);
    let v: serde_json::Value = serde_json::from_str(&r.out).unwrap();
    assert_eq!(v[0]["id"], id, "JSON keeps the id exact");
    assert_eq!(v[0]["apps"][""]["permissions"], serde_json::json!(["no"]));
}

/// An id holding a newline and one holding a backslash and an `n` are
/// different ids, and a human must see two: the one that needs escaping is
/// quoted, the other is shown as typed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_newline_and_a_typed_backslash_n_look_different() {
    let bus = Bus::start();
    let db = bus.root().join("p.db");
    let db = db.to_str().unwrap();
    let real = "a\nb";
    let typed = "a\\nb";
    for (id, perm) in [(real, "yes"), (typed, "no")] {
        let r = permctl(
            &bus,
            &["--db", db, "grant", "t", id, "org.example.App", perm],
        );
        assert_eq!(r.code, 0, "{}", r.err);
    }

    let r = permctl(&bus, &["--db", db, "list", "t"]);
    assert_eq!(r.code, 0, "{}", r.err);
    let rows: Vec<(&str, &str)> = r
        .out
        .lines()
        .skip(1)
        .map(|l| {
            let cells: Vec<&str> = l.split("  ").filter(|c| !c.is_empty()).collect();
            (cells[0].trim(), cells[2].trim())
        })
        .collect();
    assert_eq!(rows, [("\"a\\nb\"", "yes"), ("a\\nb", "no")], "{}", r.out);

    let r = permctl(&bus, &["--db", db, "show", "org.example.App"]);
    assert_eq!(r.code, 0, "{}", r.err);
    assert!(
        r.out.contains("t      \"a\\nb\"  yes") && r.out.contains("t      a\\nb    no"),
        "{}",
        r.out
    );

    let r = permctl(&bus, &["--db", db, "revoke", "t", real, "org.example.App"]);
    assert_eq!(
        (r.code, r.out.as_str()),
        (
            0,
            "revoked every permission of org.example.App on t/\"a\\nb\"\n"
        ),
        "{}",
        r.err
    );
    let r = permctl(&bus, &["--db", db, "revoke", "t", typed, "org.example.App"]);
    assert_eq!(
        (r.code, r.out.as_str()),
        (
            0,
            "revoked every permission of org.example.App on t/a\\nb\n"
        ),
        "{}",
        r.err
    );
}

// ---- 6: smaller ------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_empty_permission_is_refused_before_anything_is_opened() {
    let bus = Bus::start();
    let db = bus.root().join("new.db");
    let r = permctl(
        &bus,
        &[
            "--db",
            db.to_str().unwrap(),
            "grant",
            "t",
            "i",
            "org.example.App",
            "yes",
            "",
        ],
    );
    assert_eq!(r.code, 2, "{}", r.err);
    assert!(
        r.err.starts_with("permctl: empty permission string"),
        "{}",
        r.err
    );
    assert!(!db.exists(), "a refused grant created the database");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn times_say_utc() {
    let bus = Bus::start();
    let db = bus.root().join("p.db");
    let db = db.to_str().unwrap();
    let r = permctl(
        &bus,
        &[
            "--db",
            db,
            "grant",
            "t",
            "i",
            "org.example.App",
            "yes",
            "--expires-in",
            "1h",
        ],
    );
    assert_eq!(r.code, 0, "{}", r.err);
    assert!(r.out.trim_end().ends_with(" UTC"), "{}", r.out);
    for args in [
        &["list", "t"][..],
        &["show", "org.example.App"],
        &["history"],
    ] {
        let mut all = vec!["--db", db];
        all.extend_from_slice(args);
        let r = permctl(&bus, &all);
        assert_eq!(r.code, 0, "{args:?}: {}", r.err);
        let row = r.out.lines().nth(1).unwrap_or_default();
        assert!(
            row.contains(" UTC"),
            "{args:?}: every time says UTC: {}",
            r.out
        );
    }
}

#[test]
fn list_help_describes_its_arguments() {
    let bus = Bus::start();
    let r = permctl(&bus, &["list", "--help"]);
    assert_eq!(r.code, 0, "{}", r.err);
    let described = |arg: &str| {
        r.out.lines().any(|l| {
            let l = l.trim_start();
            l.starts_with(arg) && l[arg.len()..].trim().len() > 10
        })
    };
    assert!(described("<TABLE>"), "{}", r.out);
    assert!(described("[ID]"), "{}", r.out);
}

/// No man page ships with Porthole, so the systemd unit must not point to
/// one (`systemctl help` would fail on it).
#[test]
fn the_unit_documents_only_what_exists() {
    let path =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../data/porthole-permission-store.service");
    let unit = porthole_identity::KeyFile::parse(&std::fs::read_to_string(&path).unwrap()).unwrap();
    let doc = unit.get("Unit", "Documentation").unwrap_or_default();
    let pages: Vec<&str> = doc
        .split_whitespace()
        .filter(|d| d.starts_with("man:"))
        .collect();
    assert!(
        pages.is_empty(),
        "{}: Documentation names {pages:?}, which Porthole does not install",
        path.display()
    );
}
