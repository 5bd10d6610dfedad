//! Benchmark: ours against Debian's xdg-permission-store, each on its own
//! private bus, in the same run.
//!
//! For each size: load N ids (pipelined Set calls, 2048 in flight, so the
//! anchor can coalesce its whole-file rewrites), then time sequential Lookup
//! of random ids and sequential SetPermission on random existing ids, and
//! read the service's peak RSS (VmHWM). Prints calls/s and ours/anchor.
//!
//! Run: `cargo build --release --workspace --bins &&
//!       cargo bench -p porthole-tests --bench permission_store`
//! Env: SIZES (default "100,10000,100000"), LOOKUPS (3000), PROBES (300),
//!      PROBE_CAP_S (20: a probe loop stops after this many seconds),
//!      BENCH_PING=1 (time Peer.Ping instead of Lookup: the D-Bus floor).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use porthole_permission_store::client::PermissionStoreProxy;
use porthole_permission_store::service::BUS_NAME;
use porthole_tests::{Bus, bin};
use zvariant::Value;

const ANCHOR: &str = "/usr/libexec/xdg-permission-store";
const WINDOW: usize = 2048;

fn env_num(key: &str, default: u64) -> u64 {
    std::env::var(key)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn rss_kib(pid: u32, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(field))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

/// A tiny deterministic generator, so both sides see the same ids.
struct Lcg(u64);
impl Lcg {
    fn next(&mut self, n: u64) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (self.0 >> 33) % n
    }
}

struct Side {
    load_s: f64,
    lookup_per_s: f64,
    setperm_per_s: f64,
    setperm_n: usize,
    peak_rss_kib: u64,
}

async fn measure(anchor: bool, size: u64) -> Side {
    let bus = Bus::start();
    let mut cmd = if anchor {
        bus.command(ANCHOR)
    } else {
        bus.command(bin("porthole-permission-store"))
    };
    cmd.arg("--replace");
    let service = bus
        .spawn_owning(if anchor { "anchor" } else { "ours" }, cmd, BUS_NAME)
        .await;
    let pid = service.pid();
    let conn = bus.connection().await;
    let ps = PermissionStoreProxy::new(&conn).await.unwrap();

    let start = Instant::now();
    let mut calls = futures_util::stream::iter(0..size)
        .map(|i| {
            let ps = ps.clone();
            async move {
                let id = format!("id-{i:07}");
                let app = format!("org.example.App{}", i % 7);
                let apps: BTreeMap<&str, Vec<&str>> =
                    [(app.as_str(), vec!["read", "write"])].into();
                ps.set("bench", true, &id, apps, &Value::from(i as u32))
                    .await
            }
        })
        .buffer_unordered(WINDOW);
    while let Some(r) = calls.next().await {
        r.expect("load Set");
    }
    let load_s = start.elapsed().as_secs_f64();

    let lookups = env_num("LOOKUPS", 3000);
    let cap = Duration::from_secs(env_num("PROBE_CAP_S", 20));
    let mut rng = Lcg(1);
    let start = Instant::now();
    let mut done = 0;
    for _ in 0..lookups {
        let id = format!("id-{:07}", rng.next(size));
        if std::env::var_os("BENCH_PING").is_some() {
            conn.call_method(
                Some(BUS_NAME),
                "/org/freedesktop/impl/portal/PermissionStore",
                Some("org.freedesktop.DBus.Peer"),
                "Ping",
                &(),
            )
            .await
            .expect("Ping");
        } else {
            ps.lookup("bench", &id).await.expect("Lookup");
        }
        done += 1;
        if start.elapsed() > cap {
            break;
        }
    }
    let lookup_per_s = done as f64 / start.elapsed().as_secs_f64();

    let probes = env_num("PROBES", 300);
    let start = Instant::now();
    let mut setperm_n = 0;
    for n in 0..probes {
        let id = format!("id-{:07}", rng.next(size));
        let perm = format!("p{n}");
        ps.set_permission("bench", false, &id, "org.example.Probe", &[perm.as_str()])
            .await
            .expect("SetPermission");
        setperm_n += 1;
        if start.elapsed() > cap {
            break;
        }
    }
    let setperm_per_s = setperm_n as f64 / start.elapsed().as_secs_f64();
    let peak_rss_kib = rss_kib(pid, "VmHWM:");
    drop(service);
    Side {
        load_s,
        lookup_per_s,
        setperm_per_s,
        setperm_n,
        peak_rss_kib,
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    if !std::path::Path::new(ANCHOR).exists() {
        eprintln!("{ANCHOR} is missing: apt-get install xdg-desktop-portal");
        std::process::exit(1);
    }
    let sizes: Vec<u64> = std::env::var("SIZES")
        .unwrap_or_else(|_| "100,10000,100000".into())
        .split(',')
        .filter_map(|s| s.trim().parse().ok())
        .collect();
    println!(
        "{:>7}  {:<6}  {:>8}  {:>10}  {:>13}  {:>9}",
        "entries", "store", "load s", "Lookup/s", "SetPerm/s", "peak RSS"
    );
    let mut summary = Vec::new();
    for &size in &sizes {
        let theirs = measure(true, size).await;
        let ours = measure(false, size).await;
        for (name, s) in [("anchor", &theirs), ("ours", &ours)] {
            println!(
                "{size:>7}  {name:<6}  {:>8.2}  {:>10.0}  {:>8.1} ({:>3})  {:>6.1} MiB",
                s.load_s,
                s.lookup_per_s,
                s.setperm_per_s,
                s.setperm_n,
                s.peak_rss_kib as f64 / 1024.0
            );
        }
        summary.push(format!(
            "{size:>7}  Lookup {:.2}x  SetPermission {:.1}x  peak RSS {:.3}x",
            ours.lookup_per_s / theirs.lookup_per_s,
            ours.setperm_per_s / theirs.setperm_per_s,
            ours.peak_rss_kib as f64 / theirs.peak_rss_kib.max(1) as f64
        ));
    }
    println!("\nours/anchor (calls/s: higher is better; RSS: lower is better)");
    for line in summary {
        println!("{line}");
    }
}
