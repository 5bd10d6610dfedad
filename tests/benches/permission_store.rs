//! Benchmark: ours against Debian's xdg-permission-store, each on its own
//! private bus, in the same run.
//!
//! For each size: start both stores and load N ids into each (pipelined Set
//! calls, 2048 in flight, so the anchor can coalesce its whole-file
//! rewrites); time sequential Lookups of random ids in blocks that alternate
//! between the two; then sequential SetPermission on random existing ids,
//! and read each service's peak RSS (VmHWM). Prints calls/s and ours/anchor.
//!
//! Before that, per size, the pipelined load alone: LOAD_ROUNDS rounds, each
//! loading N new ids into a fresh store of every kind (the anchor, ours, and
//! with BASE_BIN an older build of ours, for before/after in one run), the
//! order turning each round. Prints each kind's median Set/s and the
//! medians of the per-round ratios.
//!
//! Run: `cargo build --release --workspace --bins &&
//!       cargo bench -p porthole-tests --bench permission_store`
//! Env: SIZES (default "100,10000,100000"), LOOKUPS (3000, per side, in
//!      ROUNDS (6) alternating blocks), PROBES (300),
//!      PROBE_CAP_S (20: a probe loop stops after this many seconds),
//!      BENCH_PING=1 (time Peer.Ping instead of Lookup: the D-Bus floor),
//!      LOAD_ROUNDS (3; 0 skips the pipelined comparison),
//!      BASE_BIN (a porthole-permission-store built from an older commit),
//!      PIPELINED_ONLY=1 (only the pipelined comparison).

use porthole_tests::bench::{env_num, median};
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use porthole_permission_store_client::BUS_NAME;
use porthole_permission_store_client::PermissionStoreProxy;
use porthole_tests::{Bus, bin};
use zvariant::Value;

const ANCHOR: &str = "/usr/libexec/xdg-permission-store";
const WINDOW: usize = 2048;

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

/// Which store a measurement runs.
#[derive(Clone)]
enum Kind {
    Anchor,
    Ours,
    /// An older build of ours (BASE_BIN).
    Base(std::path::PathBuf),
}

impl Kind {
    fn name(&self) -> &'static str {
        match self {
            Kind::Anchor => "anchor",
            Kind::Ours => "ours",
            Kind::Base(_) => "base",
        }
    }
}

async fn start_loaded(kind: &Kind, size: u64) -> Loaded {
    let bus = Bus::start();
    let mut cmd = match kind {
        Kind::Anchor => bus.command(ANCHOR),
        Kind::Ours => bus.command(bin("porthole-permission-store")),
        Kind::Base(path) => bus.command(path),
    };
    cmd.arg("--replace");
    let service = bus.spawn_owning(kind.name(), cmd, BUS_NAME).await;
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

/// The pipelined load alone: `rounds` rounds of loading `size` new ids into
/// a fresh store of each kind, the order turning each round. Returns the
/// summary line.
async fn pipelined(size: u64, rounds: u64, kinds: &[Kind]) -> String {
    let mut rates: Vec<Vec<f64>> = vec![Vec::new(); kinds.len()];
    for round in 0..rounds as usize {
        for k in 0..kinds.len() {
            let side = (k + round) % kinds.len();
            let s = start_loaded(&kinds[side], size).await;
            let rate = size as f64 / s.load_s;
            eprintln!("  round {round} {:<6} {rate:.0} Set/s", kinds[side].name());
            rates[side].push(rate);
        }
    }
    let per_round =
        |a: usize, b: usize| median(rates[a].iter().zip(&rates[b]).map(|(x, y)| x / y).collect());
    let mut line = format!("{size:>7}  pipelined Set/s (median of {rounds} loads):");
    for (k, kind) in kinds.iter().enumerate() {
        line += &format!("  {} {:.0}", kind.name(), median(rates[k].clone()));
    }
    // kinds[0] is the anchor, kinds[1] ours, kinds[2] the base if given.
    line += &format!("  ours/anchor {:.2}x", per_round(1, 0));
    if kinds.len() > 2 {
        line += &format!("  ours/base {:.2}x", per_round(1, 2));
        line += &format!("  base/anchor {:.2}x", per_round(2, 0));
    }
    line
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
    let load_rounds = env_num("LOAD_ROUNDS", 3);
    let mut kinds = vec![Kind::Anchor, Kind::Ours];
    if let Some(base) = std::env::var_os("BASE_BIN") {
        kinds.push(Kind::Base(base.into()));
    }
    if load_rounds > 0 {
        println!(
            "Pipelined Set: {WINDOW} in flight, loading new ids (calls/s; ratios: median of per-round ratios)"
        );
        for &size in &sizes {
            println!("{}", pipelined(size, load_rounds, &kinds).await);
        }
        println!();
    }
    if std::env::var_os("PIPELINED_ONLY").is_some() {
        return;
    }
    println!(
        "{:>7}  {:<6}  {:>8}  {:>10}  {:>13}  {:>9}",
        "entries", "store", "load s", "Lookup/s", "SetPerm/s", "peak RSS"
    );
    let mut summary = Vec::new();
    for &size in &sizes {
        let theirs = start_loaded(&Kind::Anchor, size).await;
        let ours = start_loaded(&Kind::Ours, size).await;
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
