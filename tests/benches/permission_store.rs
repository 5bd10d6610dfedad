//! Benchmark: ours against Debian's xdg-permission-store, each on its own
//! private bus, in the same run.
//!
//! For each size: start both stores and load N ids into each (pipelined Set
//! calls, 2048 in flight, so the anchor can coalesce its whole-file
//! rewrites); time sequential Lookups of random ids in blocks that alternate
//! between the two; then sequential SetPermission on random existing ids,
//! and read each service's peak RSS (VmHWM). Prints calls/s and ours/anchor.
//!
//! Run: `cargo build --release --workspace --bins &&
//!       cargo bench -p porthole-tests --bench permission_store`
//! Env: SIZES (default "100,10000,100000"), LOOKUPS (3000, per side, in
//!      ROUNDS (6) alternating blocks), PROBES (300),
//!      PROBE_CAP_S (20: a probe loop stops after this many seconds),
//!      BENCH_PING=1 (time Peer.Ping instead of Lookup: the D-Bus floor).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use porthole_permission_store_client::BUS_NAME;
use porthole_permission_store_client::PermissionStoreProxy;
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

/// One store on its own private bus, loaded with the size's ids.
struct Loaded {
    // Field order is drop order: the client, the service, then its bus.
    ps: PermissionStoreProxy<'static>,
    conn: zbus::Connection,
    service: porthole_tests::Service,
    _bus: Bus,
    load_s: f64,
}

async fn start_loaded(anchor: bool, size: u64) -> Loaded {
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
    drop(calls);
    Loaded {
        load_s: start.elapsed().as_secs_f64(),
        ps,
        conn,
        service,
        _bus: bus,
    }
}

/// Times `n` sequential Lookups (or Pings) of random ids; returns how many
/// were made and the seconds they took.
async fn lookup_block(s: &Loaded, size: u64, n: u64, rng: &mut Lcg) -> (u64, f64) {
    let start = Instant::now();
    for _ in 0..n {
        let id = format!("id-{:07}", rng.next(size));
        if std::env::var_os("BENCH_PING").is_some() {
            s.conn
                .call_method(
                    Some(BUS_NAME),
                    "/org/freedesktop/impl/portal/PermissionStore",
                    Some("org.freedesktop.DBus.Peer"),
                    "Ping",
                    &(),
                )
                .await
                .expect("Ping");
        } else {
            s.ps.lookup("bench", &id).await.expect("Lookup");
        }
    }
    (n, start.elapsed().as_secs_f64())
}

/// Sequential SetPermission on random existing ids, stopping after `cap`.
async fn setperm_probe(s: &Loaded, size: u64, probes: u64, cap: Duration) -> (usize, f64) {
    let mut rng = Lcg(2);
    let start = Instant::now();
    let mut done = 0;
    for n in 0..probes {
        let id = format!("id-{:07}", rng.next(size));
        let perm = format!("p{n}");
        s.ps.set_permission("bench", false, &id, "org.example.Probe", &[perm.as_str()])
            .await
            .expect("SetPermission");
        done += 1;
        if start.elapsed() > cap {
            break;
        }
    }
    (done, done as f64 / start.elapsed().as_secs_f64())
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
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
    let lookups = env_num("LOOKUPS", 3000);
    let rounds = env_num("ROUNDS", 6).max(1);
    let probes = env_num("PROBES", 300);
    let cap = Duration::from_secs(env_num("PROBE_CAP_S", 20));
    println!(
        "{:>7}  {:<6}  {:>8}  {:>10}  {:>13}  {:>9}",
        "entries", "store", "load s", "Lookup/s", "SetPerm/s", "peak RSS"
    );
    let mut summary = Vec::new();
    for &size in &sizes {
        let theirs = start_loaded(true, size).await;
        let ours = start_loaded(false, size).await;
        // Lookups in alternating blocks (the order turning each round), so
        // that the machine's drift over the run falls on both sides alike;
        // each side's rate is over all its blocks, the ratio the median of
        // the rounds' ratios.
        let block = (lookups / rounds).max(1);
        let mut totals = [(0u64, 0f64); 2];
        let mut ratios = Vec::new();
        let mut rng = [Lcg(1), Lcg(1)];
        for round in 0..rounds {
            let mut rate = [0f64; 2];
            for k in 0..2 {
                let side = (k + round as usize) % 2;
                let s = if side == 0 { &theirs } else { &ours };
                let (n, secs) = lookup_block(s, size, block, &mut rng[side]).await;
                totals[side].0 += n;
                totals[side].1 += secs;
                rate[side] = n as f64 / secs;
            }
            ratios.push(rate[1] / rate[0]);
        }
        let lookup_per_s = totals.map(|(n, secs)| n as f64 / secs);
        let (their_n, their_set) = setperm_probe(&theirs, size, probes, cap).await;
        let (our_n, our_set) = setperm_probe(&ours, size, probes, cap).await;
        let rss = [&theirs, &ours].map(|s| rss_kib(s.service.pid(), "VmHWM:"));
        for (k, (name, s, n, set)) in [
            ("anchor", &theirs, their_n, their_set),
            ("ours", &ours, our_n, our_set),
        ]
        .into_iter()
        .enumerate()
        {
            println!(
                "{size:>7}  {name:<6}  {:>8.2}  {:>10.0}  {:>8.1} ({:>3})  {:>6.1} MiB",
                s.load_s,
                lookup_per_s[k],
                set,
                n,
                rss[k] as f64 / 1024.0
            );
        }
        summary.push(format!(
            "{size:>7}  Lookup {:.2}x (median of {rounds} rounds {:.2}x)  SetPermission {:.1}x  peak RSS {:.3}x",
            lookup_per_s[1] / lookup_per_s[0],
            median(ratios),
            our_set / their_set,
            rss[1] as f64 / rss[0].max(1) as f64
        ));
    }
    println!("\nours/anchor (calls/s: higher is better; RSS: lower is better)");
    for line in summary {
        println!("{line}");
    }
}
