//! Benchmark: our document store against Debian's xdg-document-portal, in
//! the same run, each on its own private bus with our permission store
//! behind it (the same store binary for both, so only the document store
//! differs), on the real kernel FUSE mount. Run as root.
//!
//! Measured, alternating between the sides (and the direct path) round by
//! round so that the machine's drift falls on all of them alike:
//! - sequential reads of a FILE_MIB file (1 MiB reads) through the app's
//!   view `by-app/APP/ID/NAME`, warm (read once just before, so in the page
//!   cache), against reading the host file directly;
//! - a sequential write of the same size through the view (open with
//!   O_TRUNC, 1 MiB writes, close), against writing the host file directly;
//! - stat and open+close latency (medians of LAT_N calls per round);
//! - Add calls/s (sequential, host caller, one new file each) in blocks of
//!   ADD_BLOCK as the store grows to ADD_TOTAL documents.
//!
//! Run: `cargo build --release --workspace --bins &&
//!       cargo bench -p porthole-tests --bench documents`
//! Env: FILE_MIB (256), ROUNDS (5), LAT_N (5000), ADD_TOTAL (10000),
//!      ADD_BLOCK (1000).

use porthole_tests::bench::{env_num, median, require_root};
use std::io::{Read, Write};
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::time::Instant;

use porthole_tests::{Bus, Service, bin_dir};

const ANCHOR: &str = "/usr/libexec/xdg-document-portal";
const DOCUMENTS: &str = "org.freedesktop.portal.Documents";
const DOCUMENTS_PATH: &str = "/org/freedesktop/portal/documents";
const APP_ID: &str = "org.example.Bench";
const CHUNK: usize = 1 << 20;

/// One document store on its own bus.
struct Side {
    label: &'static str,
    // Field order is drop order: the client, the services, then the bus.
    conn: zbus::Connection,
    docs: Service,
    _store: Service,
    bus: Bus,
}

impl Side {
    async fn start(label: &'static str, program: &Path) -> Side {
        let bus = Bus::start();
        let (store, docs) = bus.start_document_store(program, false).await;
        let conn = bus.connection().await;
        Side {
            label,
            conn,
            docs,
            _store: store,
            bus,
        }
    }

    async fn add(&self, file: &Path) -> String {
        let f = std::fs::File::open(file).expect("open for Add");
        let reply = self
            .conn
            .call_method(
                Some(DOCUMENTS),
                DOCUMENTS_PATH,
                Some(DOCUMENTS),
                "Add",
                &(zvariant::Fd::from(f.as_fd()), true, true),
            )
            .await
            .unwrap_or_else(|e| panic!("{}: Add {}: {e}", self.label, file.display()));
        reply.body().deserialize::<String>().expect("doc id")
    }

    async fn grant(&self, id: &str) {
        self.conn
            .call_method(
                Some(DOCUMENTS),
                DOCUMENTS_PATH,
                Some(DOCUMENTS),
                "GrantPermissions",
                &(id, APP_ID, &["read", "write"][..]),
            )
            .await
            .unwrap_or_else(|e| panic!("{}: GrantPermissions: {e}", self.label));
    }

    fn view(&self, id: &str, name: &str) -> PathBuf {
        self.bus
            .runtime_dir()
            .join("doc/by-app")
            .join(APP_ID)
            .join(id)
            .join(name)
    }
}

fn read_all(p: &Path, buf: &mut [u8]) -> (f64, usize) {
    let mut f = std::fs::File::open(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
    let t = Instant::now();
    let mut n = 0;
    loop {
        let r = f.read(buf).expect("read");
        if r == 0 {
            break;
        }
        n += r;
    }
    (t.elapsed().as_secs_f64(), n)
}

fn write_all(p: &Path, data: &[u8], mib: usize) -> f64 {
    let t = Instant::now();
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .truncate(true)
        .open(p)
        .unwrap_or_else(|e| panic!("{}: {e}", p.display()));
    for _ in 0..mib {
        f.write_all(data).expect("write");
    }
    drop(f);
    t.elapsed().as_secs_f64()
}

fn latency(p: &Path, n: usize, open: bool) -> f64 {
    let mut v = Vec::with_capacity(n);
    for _ in 0..n {
        let t = Instant::now();
        if open {
            drop(std::fs::File::open(p).expect("open"));
        } else {
            std::fs::metadata(p).expect("stat");
        }
        v.push(t.elapsed().as_secs_f64() * 1e6);
    }
    median(v)
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    require_root("documents", "FUSE mounts of a private runtime dir");
    let mib = env_num("FILE_MIB", 256);
    let rounds = env_num("ROUNDS", 5);
    let lat_n = env_num("LAT_N", 5000);
    let add_total = env_num("ADD_TOTAL", 10_000);
    let add_block = env_num("ADD_BLOCK", 1000).max(1);

    let mut programs: Vec<(&'static str, PathBuf)> = Vec::new();
    if Path::new(ANCHOR).exists() {
        programs.push(("xdg-document-portal", ANCHOR.into()));
    } else {
        eprintln!("note: {ANCHOR} missing (package xdg-desktop-portal): ours alone");
    }
    let ours = bin_dir().join("porthole-documents");
    if ours.exists() {
        programs.push(("ours", ours));
    } else {
        eprintln!("note: {} not built: the anchor alone", ours.display());
    }
    let mut sides = Vec::new();
    for (label, program) in &programs {
        sides.push(Side::start(label, program).await);
    }

    // The big file, one host copy per side (each side's writes go to its own).
    let work = tempfile::Builder::new()
        .prefix("porthole-docbench-")
        .tempdir()
        .unwrap();
    let mut data = vec![0u8; CHUNK];
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    for b in data.iter_mut() {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        *b = x as u8;
    }
    let direct = work.path().join("direct.bin");
    write_all_new(&direct, &data, mib);
    let mut views = Vec::new();
    for (i, s) in sides.iter().enumerate() {
        let dir = work.path().join(format!("side{i}"));
        std::fs::create_dir(&dir).unwrap();
        let host = dir.join("big.bin");
        write_all_new(&host, &data, mib);
        let id = s.add(&host).await;
        s.grant(&id).await;
        views.push(s.view(&id, "big.bin"));
    }
    let labels: Vec<&str> = std::iter::once("direct")
        .chain(sides.iter().map(|s| s.label))
        .collect();
    let paths: Vec<PathBuf> = std::iter::once(direct.clone())
        .chain(views.iter().cloned())
        .collect();

    if let Ok(h) = std::env::var("HOLD") {
        for (s, v) in sides.iter().zip(&views) {
            eprintln!("HOLD {} pid {} view {}", s.label, s.docs.pid(), v.display());
        }
        eprintln!("HOLD direct {}", direct.display());
        std::thread::sleep(std::time::Duration::from_secs(h.parse().unwrap()));
    }
    let mut buf = vec![0u8; CHUNK];
    for p in &paths {
        let (_, n) = read_all(p, &mut buf);
        assert_eq!(n, mib * CHUNK, "{} has the wrong size", p.display());
    }
    let mut reads = vec![Vec::new(); paths.len()];
    let mut writes = vec![Vec::new(); paths.len()];
    let mut stats = vec![Vec::new(); paths.len()];
    let mut opens = vec![Vec::new(); paths.len()];
    for _ in 0..rounds {
        for (i, p) in paths.iter().enumerate() {
            // Warm: the round before wrote the file through the view, and
            // a store may drop the pages it then sees changed (ours does:
            // the kernel finds a new mtime); one read puts them back.
            read_all(p, &mut buf);
            let (t, _) = read_all(p, &mut buf);
            reads[i].push(mib as f64 / t);
        }
        if std::env::var_os("PER_ROUND").is_some() {
            let line: Vec<String> = labels
                .iter()
                .zip(&reads)
                .map(|(l, r)| format!("{l} {:.0}", r[r.len() - 1]))
                .collect();
            eprintln!("round reads MiB/s: {}", line.join(", "));
        }
        for (i, p) in paths.iter().enumerate() {
            stats[i].push(latency(p, lat_n, false));
            opens[i].push(latency(p, lat_n, true));
        }
        for (i, p) in paths.iter().enumerate() {
            writes[i].push(mib as f64 / write_all(p, &data, mib));
        }
    }
    let reads: Vec<f64> = reads.into_iter().map(median).collect();
    let writes: Vec<f64> = writes.into_iter().map(median).collect();
    let stats: Vec<f64> = stats.into_iter().map(median).collect();
    let opens: Vec<f64> = opens.into_iter().map(median).collect();
    println!(
        "{mib} MiB file, medians of {rounds} rounds (latency: median of {lat_n} calls, median over rounds)"
    );
    println!(
        "{:<22} {:>14} {:>9} {:>14} {:>9} {:>9} {:>14}",
        "", "warm read MiB/s", "/direct", "write MiB/s", "/direct", "stat us", "open+close us"
    );
    for (i, l) in labels.iter().enumerate() {
        println!(
            "{:<22} {:>14.0} {:>9.2} {:>14.0} {:>9.2} {:>9.2} {:>14.2}",
            l,
            reads[i],
            reads[i] / reads[0],
            writes[i],
            writes[i] / writes[0],
            stats[i],
            opens[i]
        );
    }
    if sides.len() == 2 {
        println!(
            "ours/anchor: warm read {:.2}x, write {:.2}x, stat latency {:.2}x, open+close latency {:.2}x",
            reads[2] / reads[1],
            writes[2] / writes[1],
            stats[2] / stats[1],
            opens[2] / opens[1]
        );
    }

    // Add as the store grows: the same new files for each side, a block at
    // a time, alternating.
    let small = work.path().join("small");
    std::fs::create_dir(&small).unwrap();
    let files: Vec<PathBuf> = (0..add_total)
        .map(|i| {
            let p = small.join(format!("f{i:05}.txt"));
            std::fs::write(&p, b"x").unwrap();
            p
        })
        .collect();
    let mut rates = vec![Vec::new(); sides.len()];
    for block in files.chunks(add_block) {
        for (i, s) in sides.iter().enumerate() {
            let t = Instant::now();
            for f in block {
                s.add(f).await;
            }
            rates[i].push(block.len() as f64 / t.elapsed().as_secs_f64());
        }
    }
    println!("Add calls/s per block of {add_block}, as each store grows to {add_total} documents:");
    for (i, s) in sides.iter().enumerate() {
        let r = &rates[i];
        println!(
            "{:<22} first {:>8.0}  last {:>8.0}  last/first {:.2}  all: {}",
            s.label,
            r[0],
            r[r.len() - 1],
            r[r.len() - 1] / r[0],
            r.iter()
                .map(|x| format!("{x:.0}"))
                .collect::<Vec<_>>()
                .join(" ")
        );
    }
    if sides.len() == 2 {
        let mean = |r: &Vec<f64>| r.iter().sum::<f64>() / r.len() as f64;
        println!(
            "ours/anchor Add: first block {:.2}x, last block {:.2}x, mean {:.2}x",
            rates[1][0] / rates[0][0],
            rates[1][rates[1].len() - 1] / rates[0][rates[0].len() - 1],
            mean(&rates[1]) / mean(&rates[0])
        );
    }
    for s in &mut sides {
        s.docs.stop();
    }
}

fn write_all_new(p: &Path, data: &[u8], mib: usize) {
    let mut f = std::fs::File::create(p).unwrap();
    for _ in 0..mib {
        f.write_all(data).unwrap();
    }
    f.sync_all().unwrap();
}
