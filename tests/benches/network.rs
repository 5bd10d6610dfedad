//! Benchmark: network grants (issue 12). A connection to an approved
//! destination through the granted fd (`NetworkAccess1.Connect`) and
//! through the sandbox's SOCKS5 endpoint, against a direct connection, in
//! the same run.
//!
//! Two servers on the host's 127.0.0.1: one writes a byte on accept (set-up
//! time: connect until that byte has arrived), one writes BULK_MIB MiB and
//! closes (throughput: read to end of stream with 1 MiB reads). The client
//! is `porthole-probe net-bench` inside `porthole run`: `direct` with
//! `--share=network` (the host's network, a plain connect), `fd` and
//! `socks` in a sandbox of its own network namespace with both
//! destinations pre-approved through `permctl` (no dialog). The three run
//! in turn, ROUNDS times; printed: the best median set-up and the best
//! throughput of each, and the median over rounds of each path against
//! direct in the same round.
//!
//! Run: `cargo build --release --workspace --bins &&
//!       cargo bench -p porthole-tests --bench network`
//! Env: SETUPS (set-ups per run, 300), ROUNDS (3), BULK_MIB (256).

use porthole_tests::bench::env_num;
use std::io::Write;
use std::net::TcpListener;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use porthole_tests::{Bus, bin, run_with_timeout};

const APP: &str = "org.example.NetBench";

/// Writes one byte to each connection, then closes it.
fn first_byte_server() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for c in l.incoming().flatten() {
            let _ = c.set_nodelay(true);
            let _ = (&c).write_all(b"!");
        }
    });
    port
}

/// Writes `bytes` to each connection, then closes it.
fn bulk_server(bytes: u64) -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    std::thread::spawn(move || {
        let chunk = vec![0x5au8; 1 << 20];
        for c in l.incoming().flatten() {
            let mut left = bytes;
            while left > 0 {
                let n = left.min(chunk.len() as u64) as usize;
                if (&c).write_all(&chunk[..n]).is_err() {
                    break;
                }
                left -= n as u64;
            }
        }
    });
    port
}

#[derive(Debug, Clone, Copy)]
struct Sample {
    setup_us: f64,
    mib_s: f64,
}

fn run_probe(bus: &Bus, app_dir: &Path, mode: &str, ports: (u16, u16), setups: u64) -> Sample {
    let mut cmd: Command = bus.command(bin("porthole"));
    cmd.args(["run", &format!("--app-dir={}", app_dir.display())]);
    if mode == "direct" {
        cmd.arg("--share=network");
    }
    cmd.args([
        APP,
        "--",
        "porthole-probe",
        "net-bench",
        mode,
        "127.0.0.1",
        &ports.0.to_string(),
        &setups.to_string(),
        &ports.1.to_string(),
    ]);
    let (status, out, err) = run_with_timeout(&mut cmd, Duration::from_secs(300));
    assert!(status.success(), "{mode}: {out}\n{err}");
    let v: serde_json::Value = serde_json::from_str(out.trim())
        .unwrap_or_else(|e| panic!("{mode}: {e}: {out}\n{err}\n{}", bus.logs()));
    assert_eq!(v["result"], "OK", "{mode}: {v}\n{err}\n{}", bus.logs());
    Sample {
        setup_us: v["setup_median_us"].as_f64().unwrap(),
        mib_s: v["bulk_mib_s"].as_f64().unwrap(),
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let setups = env_num("SETUPS", 300);
    let rounds = env_num("ROUNDS", 3).max(1);
    let bulk_mib = env_num("BULK_MIB", 256);
    let bus = Bus::start();
    let _store = bus
        .spawn_owning(
            "permission-store",
            bus.command(bin("porthole-permission-store")),
            "org.freedesktop.impl.portal.PermissionStore",
        )
        .await;
    // No dialog backend: every destination used here is pre-approved.
    let portals_dir = bus.root().join("portals");
    std::fs::create_dir_all(&portals_dir).unwrap();
    let mut cmd = bus.command(bin("porthole-portals"));
    cmd.env("XDG_DESKTOP_PORTAL_DIR", &portals_dir);
    let _portals = bus
        .spawn_owning("portals", cmd, "org.freedesktop.portal.Desktop")
        .await;
    let app_dir = bus.root().join("app");
    std::fs::create_dir_all(app_dir.join("bin")).unwrap();
    std::fs::copy(bin("porthole-probe"), app_dir.join("bin/porthole-probe")).unwrap();

    let ports = (first_byte_server(), bulk_server(bulk_mib << 20));
    for port in [ports.0, ports.1] {
        let mut cmd = bus.command(bin("permctl"));
        cmd.args(["grant", "network", &format!("127.0.0.1:{port}"), APP, "yes"]);
        let (status, out, err) = run_with_timeout(&mut cmd, Duration::from_secs(30));
        assert!(status.success(), "permctl: {out}{err}");
    }

    let modes = ["direct", "fd", "socks"];
    let mut best: Vec<Option<Sample>> = vec![None; modes.len()];
    // Per round, each path against direct in that round: the machine's
    // drift over the run falls on both sides of each ratio.
    let mut ratios: Vec<Vec<(f64, f64)>> = vec![Vec::new(); modes.len()];
    for round in 0..rounds {
        let mut this_round = Vec::new();
        for (i, mode) in modes.iter().enumerate() {
            let s = run_probe(&bus, &app_dir, mode, ports, setups);
            this_round.push(s);
            eprintln!(
                "round {round} {mode:>6}: set-up median {:>7.1} us, bulk {:>7.0} MiB/s",
                s.setup_us, s.mib_s
            );
            best[i] = Some(match best[i] {
                None => s,
                Some(b) => Sample {
                    setup_us: b.setup_us.min(s.setup_us),
                    mib_s: b.mib_s.max(s.mib_s),
                },
            });
        }
        for (i, s) in this_round.iter().enumerate() {
            ratios[i].push((
                s.setup_us - this_round[0].setup_us,
                s.mib_s / this_round[0].mib_s,
            ));
        }
    }
    let median = |mut v: Vec<f64>| -> f64 {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let best: Vec<Sample> = best.into_iter().map(Option::unwrap).collect();
    let direct = best[0];
    println!(
        "network grants: {setups} set-ups per run, {bulk_mib} MiB bulk, best of {rounds} rounds"
    );
    println!(
        "{:>7}  {:>12}  {:>10}  {:>12}  {:>10}  {:>22}  {:>19}",
        "path",
        "best set-up",
        "over best",
        "best MiB/s",
        "best ratio",
        "median round +set-up",
        "median round ratio"
    );
    for (i, (mode, s)) in modes.iter().zip(&best).enumerate() {
        println!(
            "{:>7}  {:>9.1} us  {:>7.1} us  {:>12.0}  {:>9.2}x  {:>19.1} us  {:>18.2}x",
            mode,
            s.setup_us,
            s.setup_us - direct.setup_us,
            s.mib_s,
            s.mib_s / direct.mib_s,
            median(ratios[i].iter().map(|r| r.0).collect()),
            median(ratios[i].iter().map(|r| r.1).collect()),
        );
    }
}
