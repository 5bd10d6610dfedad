//! One of the hundred apps of `tests/tests/load.rs`: run inside
//! `porthole run` (so every call goes through its instance's filtered bus
//! proxy), it makes `CALLS` calls to one service, one after the other as an
//! app does, checks each answer for what it must say, and prints one JSON
//! line: `{"ok": N, "failed": N, "errors": [the first few]}`.
//!
//! `load_app store CALLS APP_ID`: the permission store: Lookup of the
//!   entry this app keeps setting, every tenth call a SetPermission of it;
//!   each Lookup must show this app's grant.
//! `load_app documents CALLS DOC_ID NAME`: the document store: in turn
//!   GetMountPoint, Add of the app's own document through its fd (must give
//!   back the same id), GetHostPaths of it; every tenth call the file is
//!   also read through the FUSE view and must hold what the test wrote.
//! `load_app portals CALLS PORT EXPECTED`: the portal frontend: every tenth
//!   call a FileChooser OpenFile through ashpd (the scripted backend picks
//!   a file; the app reads EXPECTED from the document path it gets), every
//!   twentieth (offset 5) `org.porthole.NetworkAccess1.Connect` to
//!   127.0.0.1:PORT (pre-approved; the server's first bytes must come
//!   through the fd), the rest Settings reads through ashpd.

use std::collections::HashMap;
use std::io::Read;
use std::os::fd::OwnedFd;

use ashpd::desktop::file_chooser::SelectedFiles;
use ashpd::desktop::settings::Settings;
use serde_json::json;
use zbus::Connection;
use zvariant::{OwnedFd as ZOwnedFd, OwnedValue, Value};

const STORE: &str = "org.freedesktop.impl.portal.PermissionStore";
const STORE_PATH: &str = "/org/freedesktop/impl/portal/PermissionStore";
const DOCUMENTS: &str = "org.freedesktop.portal.Documents";
const DOCUMENTS_PATH: &str = "/org/freedesktop/portal/documents";
const DESKTOP: &str = "org.freedesktop.portal.Desktop";
const DESKTOP_PATH: &str = "/org/freedesktop/portal/desktop";
const TABLE: &str = "porthole-load";
/// Errors kept for the report; the rest are only counted.
const KEEP: usize = 5;

#[derive(Default)]
struct Tally {
    ok: u64,
    failed: u64,
    errors: Vec<String>,
}

impl Tally {
    fn record(&mut self, call: u64, result: Result<(), String>) {
        match result {
            Ok(()) => self.ok += 1,
            Err(e) => {
                self.failed += 1;
                if self.errors.len() < KEEP {
                    self.errors.push(format!("call {call}: {e}"));
                }
            }
        }
    }
}

fn usage() -> ! {
    eprintln!(
        "usage: load_app store CALLS APP_ID | documents CALLS DOC_ID NAME | portals CALLS PORT EXPECTED"
    );
    std::process::exit(2);
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.len() < 3 {
        usage();
    }
    let calls: u64 = args[1].parse().unwrap_or_else(|_| usage());
    let tally = match (args[0].as_str(), &args[2..]) {
        ("store", [app]) => store(calls, app).await,
        ("documents", [id, name]) => documents(calls, id, name).await,
        ("portals", [port, expected]) => {
            portals(calls, port.parse().unwrap_or_else(|_| usage()), expected).await
        }
        _ => usage(),
    };
    println!(
        "{}",
        json!({"ok": tally.ok, "failed": tally.failed, "errors": tally.errors})
    );
}

async fn session() -> Connection {
    match Connection::session().await {
        Ok(c) => c,
        Err(e) => {
            println!(
                "{}",
                json!({"ok": 0, "failed": 0, "errors": [format!("no bus: {e}")]})
            );
            std::process::exit(1);
        }
    }
}

async fn store(calls: u64, app: &str) -> Tally {
    let conn = session().await;
    let id = format!("entry-{app}");
    let mut tally = Tally::default();
    for i in 0..calls {
        let result = if i % 10 == 0 {
            conn.call_method(
                Some(STORE),
                STORE_PATH,
                Some(STORE),
                "SetPermission",
                &(TABLE, true, id.as_str(), app, vec![format!("round-{i}")]),
            )
            .await
            .map(drop)
            .map_err(|e| format!("SetPermission: {e}"))
        } else {
            lookup(&conn, &id, app, i - i % 10).await
        };
        tally.record(i, result);
    }
    tally
}

/// Lookup must show the grant this app set last (at call `set`).
async fn lookup(conn: &Connection, id: &str, app: &str, set: u64) -> Result<(), String> {
    let reply = conn
        .call_method(Some(STORE), STORE_PATH, Some(STORE), "Lookup", &(TABLE, id))
        .await
        .map_err(|e| format!("Lookup: {e}"))?;
    let (perms, _data): (HashMap<String, Vec<String>>, OwnedValue) = reply
        .body()
        .deserialize()
        .map_err(|e| format!("Lookup's reply: {e}"))?;
    let want = vec![format!("round-{set}")];
    match perms.get(app) {
        Some(p) if *p == want => Ok(()),
        other => Err(format!(
            "Lookup gave {other:?} for {app}, expected {want:?}"
        )),
    }
}

async fn documents(calls: u64, id: &str, name: &str) -> Tally {
    let conn = session().await;
    // SAFETY: getuid has no preconditions.
    let uid = unsafe { libc::getuid() };
    let path = format!("/run/user/{uid}/doc/{id}/{name}");
    let expected = std::fs::read(&path);
    let mut tally = Tally::default();
    let expected = match expected {
        Ok(bytes) => bytes,
        Err(e) => {
            tally.record(0, Err(format!("{path}: {e}")));
            return tally;
        }
    };
    for i in 0..calls {
        let result = match i % 3 {
            0 => mount_point(&conn).await,
            1 => add_again(&conn, &path, id).await,
            _ => host_paths(&conn, id).await,
        };
        let result = result.and_then(|()| {
            if i % 10 != 0 {
                return Ok(());
            }
            match std::fs::read(&path) {
                Ok(bytes) if bytes == expected => Ok(()),
                Ok(_) => Err(format!("{path} changed under the app")),
                Err(e) => Err(format!("reading {path}: {e}")),
            }
        });
        tally.record(i, result);
    }
    tally
}

async fn mount_point(conn: &Connection) -> Result<(), String> {
    let reply = conn
        .call_method(
            Some(DOCUMENTS),
            DOCUMENTS_PATH,
            Some(DOCUMENTS),
            "GetMountPoint",
            &(),
        )
        .await
        .map_err(|e| format!("GetMountPoint: {e}"))?;
    let point: Vec<u8> = reply
        .body()
        .deserialize()
        .map_err(|e| format!("GetMountPoint's reply: {e}"))?;
    if point.is_empty() {
        return Err("GetMountPoint gave an empty path".into());
    }
    Ok(())
}

/// Add of the document's own file (reuse_existing) names the same document.
async fn add_again(conn: &Connection, path: &str, id: &str) -> Result<(), String> {
    let file = std::fs::File::open(path).map_err(|e| format!("opening {path}: {e}"))?;
    let fd = ZOwnedFd::from(OwnedFd::from(file));
    let reply = conn
        .call_method(
            Some(DOCUMENTS),
            DOCUMENTS_PATH,
            Some(DOCUMENTS),
            "Add",
            &(fd, true, true),
        )
        .await
        .map_err(|e| format!("Add: {e}"))?;
    let got: String = reply
        .body()
        .deserialize()
        .map_err(|e| format!("Add's reply: {e}"))?;
    if got != id {
        return Err(format!("Add gave {got}, expected {id}"));
    }
    Ok(())
}

async fn host_paths(conn: &Connection, id: &str) -> Result<(), String> {
    let reply = conn
        .call_method(
            Some(DOCUMENTS),
            DOCUMENTS_PATH,
            Some(DOCUMENTS),
            "GetHostPaths",
            &(vec![id],),
        )
        .await
        .map_err(|e| format!("GetHostPaths: {e}"))?;
    let paths: HashMap<String, Vec<u8>> = reply
        .body()
        .deserialize()
        .map_err(|e| format!("GetHostPaths' reply: {e}"))?;
    match paths.get(id) {
        Some(p) if !p.is_empty() => Ok(()),
        other => Err(format!("GetHostPaths gave {other:?} for {id}")),
    }
}

async fn portals(calls: u64, port: u16, expected: &str) -> Tally {
    let conn = session().await;
    let mut tally = Tally::default();
    let settings = match Settings::new().await {
        Ok(s) => s,
        Err(e) => {
            tally.record(0, Err(format!("Settings: {e}")));
            return tally;
        }
    };
    for i in 0..calls {
        let result = if i % 10 == 0 {
            open_file(expected).await
        } else if i % 20 == 5 {
            connect(&conn, port).await
        } else {
            settings
                .color_scheme()
                .await
                .map(drop)
                .map_err(|e| format!("Settings: {e}"))
        };
        tally.record(i, result);
    }
    tally
}

/// OpenFile answered by the scripted backend: the app reads `expected`
/// from the document path it gets.
async fn open_file(expected: &str) -> Result<(), String> {
    let files = SelectedFiles::open_file()
        .title("Pick a file")
        .send()
        .await
        .map_err(|e| format!("OpenFile: {e}"))?
        .response()
        .map_err(|e| format!("OpenFile's response: {e}"))?;
    let [uri] = files.uris() else {
        return Err(format!("OpenFile gave {} URIs", files.uris().len()));
    };
    let path = porthole_tests::portal::file_uri_path(uri.as_str())
        .ok_or_else(|| format!("not a file URI: {uri}"))?;
    match std::fs::read_to_string(&path) {
        Ok(text) if text == expected => Ok(()),
        Ok(text) => Err(format!("{} holds {text:?}", path.display())),
        Err(e) => Err(format!("reading {}: {e}", path.display())),
    }
}

/// NetworkAccess1.Connect to the pre-approved 127.0.0.1:PORT: the fd is
/// the connection, and the server's greeting comes through it.
async fn connect(conn: &Connection, port: u16) -> Result<(), String> {
    let options: HashMap<&str, Value<'_>> = HashMap::new();
    let reply = conn
        .call_method(
            Some(DESKTOP),
            DESKTOP_PATH,
            Some("org.porthole.NetworkAccess1"),
            "Connect",
            &("127.0.0.1", port, options),
        )
        .await
        .map_err(|e| format!("Connect: {e}"))?;
    let fd: ZOwnedFd = reply
        .body()
        .deserialize()
        .map_err(|e| format!("Connect's reply: {e}"))?;
    let mut stream = std::net::TcpStream::from(OwnedFd::from(fd));
    let mut greeting = Vec::new();
    stream
        .read_to_end(&mut greeting)
        .map_err(|e| format!("reading the connection: {e}"))?;
    if greeting != b"hello\n" {
        return Err(format!("the server said {greeting:?}"));
    }
    Ok(())
}
