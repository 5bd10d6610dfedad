//! Import of a large xdg-permission-store table: time and peak memory of
//! `permctl import` (a fresh database, then the same files again), and of
//! `permctl export` back to GVDB.
//!
//! The table is made with the gvdb crate's writer in upstream's layout: N
//! ids (default 100,000) in `documents`, each with a data value like the
//! document portal's (`(ayuu)`) and one to three apps. Each command runs as
//! its own process; its peak RSS is the kernel's (wait4's rusage).
//!
//! Run: `cargo build --release -p porthole-permission-store --bins --examples &&
//!       target/release/examples/gvdb_import [N [KEEP_DIR]]`

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use porthole_permission_store::gvdb_table;
use porthole_permission_store::{Data, Entry, Grant};
use zvariant::Value;

/// Runs permctl ARGS; prints its wall time and its own peak RSS (from
/// wait4's rusage for that one process).
// The child is reaped by wait4 below, which std's Child does not see.
#[allow(clippy::zombie_processes)]
fn run(label: &str, permctl: &Path, args: &[&str]) {
    use std::io::Read;
    let t = Instant::now();
    let mut child = Command::new(permctl)
        .args(args)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("running permctl");
    let mut stdout = String::new();
    child
        .stdout
        .take()
        .expect("piped")
        .read_to_string(&mut stdout)
        .expect("reading permctl's output");
    let mut status = 0;
    // SAFETY: wait4 reaps our own child (std's handle is not used to wait
    // afterwards) and writes into the zeroed rusage and status we own.
    let usage = unsafe {
        let mut u: libc::rusage = std::mem::zeroed();
        let r = libc::wait4(child.id() as libc::pid_t, &mut status, 0, &mut u);
        assert_eq!(r, child.id() as libc::pid_t, "wait4");
        u
    };
    let secs = t.elapsed().as_secs_f64();
    assert!(
        libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
        "{label} failed: {stdout}"
    );
    let last = stdout.lines().last().unwrap_or_default().to_owned();
    println!(
        "{label:<16} {secs:>7.2} s   peak RSS {:>6.1} MiB   ({last})",
        usage.ru_maxrss as f64 / 1024.0
    );
}

/// Writes the table file: run in a child process, so the parent stays
/// small (a child's peak RSS counts its parent's memory at fork).
fn make(n: usize, gvdb: &Path) {
    let t = Instant::now();
    let mut entries: Vec<(String, Entry)> = Vec::with_capacity(n);
    for i in 0..n {
        let path = format!("/home/user/Documents/folder {}/file-{i}.txt\0", i % 97);
        let data = Value::from((path.into_bytes(), 0u32, 1u32));
        let mut e = Entry::new(Data::from_value(&data).unwrap());
        let apps: BTreeMap<String, Grant> = (0..1 + i % 3)
            .map(|a| {
                (
                    format!("org.example.App{}", (i + a) % 50),
                    Grant {
                        permissions: vec!["read".into(), "write".into()],
                        expires: None,
                    },
                )
            })
            .collect();
        e.apps = apps;
        entries.push((format!("{i:08x}"), e));
    }
    let grants: usize = entries.iter().map(|(_, e)| e.apps.len()).sum();
    let built = gvdb_table::build(entries.iter().map(|(i, e)| (i.as_str(), e))).unwrap();
    std::fs::create_dir_all(gvdb).unwrap();
    std::fs::write(gvdb.join("documents"), &built.bytes).unwrap();
    println!(
        "made documents: {n} ids, {grants} grants, {:.1} MiB GVDB in {:.2} s",
        built.bytes.len() as f64 / (1 << 20) as f64,
        t.elapsed().as_secs_f64()
    );
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("--make") {
        make(args[2].parse().unwrap(), Path::new(&args[3]));
        return;
    }
    let n: usize = args.get(1).and_then(|a| a.parse().ok()).unwrap_or(100_000);
    let me = std::env::current_exe().expect("own path");
    let permctl: PathBuf = me
        .parent()
        .and_then(Path::parent)
        .expect("target dir")
        .join("permctl");
    // A second argument: work in that directory and keep it.
    let tmp = tempfile::tempdir().expect("temp dir");
    let work: PathBuf = args
        .get(2)
        .map(PathBuf::from)
        .unwrap_or_else(|| tmp.path().to_owned());
    let gvdb = work.join("flatpak-db");
    let made = Command::new(&me)
        .args(["--make", &n.to_string(), gvdb.to_str().unwrap()])
        .status()
        .expect("making the table");
    assert!(made.success());

    let db = work.join("permissions.db");
    let (db, dir) = (db.to_str().unwrap(), gvdb.to_str().unwrap());
    let out = work.join("export");
    run(
        "import (new db)",
        &permctl,
        &["--db", db, "import", "--dir", dir],
    );
    run(
        "import again",
        &permctl,
        &["--db", db, "import", "--dir", dir],
    );
    run(
        "export",
        &permctl,
        &["--db", db, "export", "--dir", out.to_str().unwrap()],
    );
    let a = std::fs::read(gvdb.join("documents")).unwrap();
    let b = std::fs::read(out.join("documents")).unwrap();
    assert_eq!(
        gvdb_table::parse(&a).unwrap(),
        gvdb_table::parse(&b).unwrap(),
        "the export holds what was imported"
    );
    println!(
        "database: {:.1} MiB",
        std::fs::metadata(db).unwrap().len() as f64 / (1 << 20) as f64
    );
}
