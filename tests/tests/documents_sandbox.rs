//! The document store seen from inside `porthole run`: the launcher binds
//! the store's `by-app/APP_ID` view at `/run/user/UID/doc`, so an app reads
//! and writes the documents granted to it at `/run/user/UID/doc/ID/NAME`
//! and sees no other document. Run against each document store: upstream's
//! xdg-document-portal (the anchor, Debian's package) and ours; both on our
//! permission store, a private bus and the real kernel FUSE mount.

use std::io::Read;
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use porthole_tests::{Bus, bin, run_with_timeout};

const APP_ID: &str = "org.example.DocReader";
const OTHER_APP: &str = "org.example.Other";
const DOCUMENTS: &str = "org.freedesktop.portal.Documents";
const DOCUMENTS_PATH: &str = "/org/freedesktop/portal/documents";
const ANCHOR: &str = "/usr/libexec/xdg-document-portal";

/// The document stores to run against: ours, and the anchor when
/// installed (under CI its absence fails the test).
fn stores() -> Vec<(&'static str, PathBuf)> {
    let mut v = vec![("porthole-documents", bin("porthole-documents"))];
    if porthole_tests::anchor_present(ANCHOR, "xdg-desktop-portal") {
        v.push(("xdg-document-portal", PathBuf::from(ANCHOR)));
    }
    v
}

/// Exports `file` as the host would (Add with a readable fd) and returns
/// the document id.
async fn add(conn: &zbus::Connection, file: &Path) -> String {
    let f = std::fs::File::open(file).unwrap();
    let reply = conn
        .call_method(
            Some(DOCUMENTS),
            DOCUMENTS_PATH,
            Some(DOCUMENTS),
            "Add",
            &(zvariant::Fd::from(f.as_fd()), true, false),
        )
        .await
        .unwrap_or_else(|e| panic!("Add {}: {e}", file.display()));
    reply.body().deserialize::<String>().unwrap()
}

async fn grant(conn: &zbus::Connection, id: &str, app: &str, perms: &[&str]) {
    conn.call_method(
        Some(DOCUMENTS),
        DOCUMENTS_PATH,
        Some(DOCUMENTS),
        "GrantPermissions",
        &(id, app, perms),
    )
    .await
    .unwrap_or_else(|e| panic!("GrantPermissions {id} {app}: {e}"));
}

/// Runs `script` under /bin/sh inside `porthole run APP_ID`; returns its
/// exit status and stdout, and stderr for messages.
fn sandboxed(bus: &Bus, extra: &[&str], script: &str) -> (i32, String, String) {
    let mut cmd: Command = bus.command(bin("porthole"));
    cmd.args(["--log-level=info", "run"])
        .args(extra)
        .args([APP_ID, "--", "/bin/sh", "-c", script]);
    let (status, out, err) = run_with_timeout(&mut cmd, Duration::from_secs(30));
    (status.code().unwrap_or(-1), out, err)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_app_sees_its_granted_documents_at_run_user_doc_and_no_other() {
    if let Some(why) = porthole_tests::skip::sandbox_with_fuse_missing() {
        porthole_tests::skipped(&format!("documents_sandbox: {why}"));
        return;
    }
    for (label, program) in stores() {
        let bus = Bus::start();
        let (_store, mut docs) = bus.start_document_store(&program, true).await;
        let conn = bus.connection().await;

        let host = bus.root().join("host");
        std::fs::create_dir_all(&host).unwrap();
        let mine = host.join("mine.txt");
        let theirs = host.join("theirs.txt");
        std::fs::write(&mine, "granted to the app\n").unwrap();
        std::fs::write(&theirs, "granted to another app\n").unwrap();
        let mine_id = add(&conn, &mine).await;
        let theirs_id = add(&conn, &theirs).await;
        grant(&conn, &mine_id, APP_ID, &["read", "write"]).await;
        grant(&conn, &theirs_id, OTHER_APP, &["read"]).await;

        // SAFETY: getuid has no preconditions.
        let uid = unsafe { libc::getuid() };
        let doc = format!("/run/user/{uid}/doc");
        let script = format!(
            "cat {doc}/{mine_id}/mine.txt && echo listing: $(ls {doc}) && \
             echo written-inside > {doc}/{mine_id}/mine.txt && \
             if cat {doc}/{theirs_id}/theirs.txt 2>/dev/null; then echo LEAK; fi"
        );
        let (code, out, err) = sandboxed(&bus, &[], &script);
        assert_eq!(code, 0, "{label}: {out}\n{err}\n{}", docs.log_text());
        assert!(
            out.starts_with("granted to the app\n"),
            "{label}: the app did not read its document: {out}\n{err}"
        );
        assert!(
            out.contains(&format!("listing: {mine_id}\n")),
            "{label}: the app's doc dir should list only {mine_id}: {out}"
        );
        assert!(
            !out.contains("LEAK"),
            "{label}: read another app's document"
        );
        let mut on_host = String::new();
        std::fs::File::open(&mine)
            .unwrap()
            .read_to_string(&mut on_host)
            .unwrap();
        assert_eq!(
            on_host, "written-inside\n",
            "{label}: the write inside did not reach the host file"
        );

        // Without the store's view: no doc directory at all.
        let (code, out, err) = sandboxed(
            &bus,
            &["--no-documents-portal"],
            &format!("test -e {doc} && echo PRESENT || echo ABSENT"),
        );
        assert_eq!(code, 0, "{label}: {err}");
        assert_eq!(out.trim(), "ABSENT", "{label}: --no-documents-portal");
        docs.stop();
    }
}
