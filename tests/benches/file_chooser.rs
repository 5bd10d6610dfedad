//! Benchmark: a FileChooser.OpenFile round trip of a sandboxed app, our
//! frontend and document store against Debian's xdg-desktop-portal 1.16
//! with xdg-document-portal, in the same run. Each side has its own private
//! bus with the SAME backend (our scripted porthole-prompt, answering with
//! one host file) and the same permission store (ours); the third side,
//! xdg-desktop-portal with our document store, separates the frontend's
//! share from the document store's. The client (examples/
//! file_chooser_client.rs) runs inside `porthole run` (our bus proxy on
//! every side) and times each call from OpenFile to its Response, which
//! carries the file exported to the document store for the app.
//!
//! Measured, alternating between the sides round by round: the median
//! round trip (median of each round's median, and the mean), and the CPU
//! time (user+system, from /proc/PID/stat) each service spent per round
//! trip. Also the backend alone: the prompt's impl OpenFile called
//! directly from the host, to show how much of a round trip is the
//! prompt's.
//!
//! Run (as root: FUSE mounts and `porthole run`):
//!   `cargo build --release --workspace --bins &&
//!    cargo build --release -p porthole-tests --examples &&
//!    cargo bench -p porthole-tests --bench file_chooser`
//! Env: CALLS (200 per round), ROUNDS (5).

use porthole_tests::bench::{env_num, median, require_root};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use porthole_tests::{Bus, Service, bin, bin_dir, run_with_timeout};
use zvariant::{OwnedObjectPath, OwnedValue};

const XDP: &str = "/usr/libexec/xdg-desktop-portal";
const XDG_DOCUMENT_PORTAL: &str = "/usr/libexec/xdg-document-portal";
const DESKTOP: &str = "org.freedesktop.portal.Desktop";
const PROMPT: &str = "org.freedesktop.impl.portal.desktop.porthole";
const APP_ID: &str = "org.example.ChooserBench";

/// User+system CPU seconds of a live process so far.
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name's closing parenthesis; utime and
    // stime are fields 14 and 15 (11 and 12 after it).
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    (ticks(11) + ticks(12)) / hz
}

/// One portal stack on its own bus.
struct Side {
    label: &'static str,
    // Field order is drop order: the services, then the bus.
    frontend: Service,
    prompt: Service,
    docs: Service,
    store: Service,
    bus: Bus,
}

impl Side {
    async fn start(label: &'static str, frontend: &Path, documents: &Path) -> Side {
        let bus = Bus::start();
        let (store, docs) = bus.start_document_store(documents, false).await;
        let script = bus.picked_file_script("picked on the host\n");
        let mut cmd = bus.command(bin("porthole-prompt"));
        cmd.arg("--script").arg(&script);
        let prompt = bus.spawn_owning("prompt", cmd, PROMPT).await;
        // The backend as each frontend finds it: upstream 1.16 by UseIn
        // and XDG_CURRENT_DESKTOP, ours by portals.conf.
        let portals = bus.porthole_portal_dir();
        let mut cmd = bus.command(frontend);
        cmd.env("XDG_DESKTOP_PORTAL_DIR", &portals)
            .env("XDG_CURRENT_DESKTOP", "porthole");
        let frontend = bus.spawn_owning("frontend", cmd, DESKTOP).await;
        Side {
            label,
            frontend,
            prompt,
            docs,
            store,
            bus,
        }
    }

    fn pids(&self) -> [u32; 4] {
        [
            self.frontend.pid(),
            self.docs.pid(),
            self.store.pid(),
            self.prompt.pid(),
        ]
    }

    /// One round: the client inside `porthole run`, `calls` round trips.
    /// Returns the round trip times (us) and each service's CPU seconds.
    fn round(&self, client: &Path, calls: usize) -> (Vec<f64>, [f64; 4]) {
        let before = self.pids().map(cpu_seconds);
        let mut cmd: Command = self.bus.command(bin("porthole"));
        cmd.args(["run", "--app-dir"])
            .arg(client.parent().unwrap())
            .args([APP_ID, "--"])
            .arg(Path::new("/app").join(client.file_name().unwrap()))
            .arg(calls.to_string());
        let (status, out, err) = run_with_timeout(&mut cmd, Duration::from_secs(600));
        let after = self.pids().map(cpu_seconds);
        assert!(
            status.success(),
            "{}: the client failed ({status}): {out}{err}\n{}",
            self.label,
            self.bus.logs()
        );
        let seen: serde_json::Value = serde_json::from_str(out.trim())
            .unwrap_or_else(|e| panic!("{}: {e}: {out}{err}", self.label));
        assert_eq!(
            seen["read"], "picked on the host\n",
            "{}: the app reads its document",
            self.label
        );
        let times: Vec<f64> = serde_json::from_value(seen["times_us"].clone()).unwrap();
        let mut cpu = [0.0; 4];
        for i in 0..4 {
            cpu[i] = after[i] - before[i];
        }
        (times, cpu)
    }
}

/// The backend alone: impl FileChooser.OpenFile on the prompt from the
/// host, `calls` times; the median time in us.
async fn backend_alone(side: &Side, calls: usize) -> f64 {
    let conn = side.bus.connection().await;
    let mut times = Vec::with_capacity(calls);
    for i in 0..calls {
        let handle = OwnedObjectPath::try_from(format!(
            "/org/freedesktop/portal/desktop/request/bench/direct_{i}"
        ))
        .unwrap();
        let options: HashMap<String, OwnedValue> = HashMap::new();
        let t = Instant::now();
        let reply = conn
            .call_method(
                Some(PROMPT),
                "/org/freedesktop/portal/desktop",
                Some("org.freedesktop.impl.portal.FileChooser"),
                "OpenFile",
                &(handle, APP_ID, "", "Bench", options),
            )
            .await
            .expect("the prompt's OpenFile");
        times.push(t.elapsed().as_secs_f64() * 1e6);
        let (code, _): (u32, HashMap<String, OwnedValue>) = reply.body().deserialize().unwrap();
        assert_eq!(code, 0);
    }
    median(times)
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    require_root("file_chooser", "FUSE mounts, porthole run");
    let calls = env_num("CALLS", 200);
    let rounds = env_num("ROUNDS", 5);
    let client: PathBuf = bin_dir().join("examples/file_chooser_client");
    assert!(
        client.exists(),
        "{} is not built: cargo build --release -p porthole-tests --examples",
        client.display()
    );
    let ours_portals = bin("porthole-portals");
    let ours_docs = bin("porthole-documents");
    let mut sides = vec![Side::start("ours (portals+documents)", &ours_portals, &ours_docs).await];
    if Path::new(XDP).exists() && Path::new(XDG_DOCUMENT_PORTAL).exists() {
        sides.push(
            Side::start(
                "xdg-desktop-portal+xdg-document-portal",
                Path::new(XDP),
                Path::new(XDG_DOCUMENT_PORTAL),
            )
            .await,
        );
        sides.push(
            Side::start(
                "xdg-desktop-portal+our documents",
                Path::new(XDP),
                &ours_docs,
            )
            .await,
        );
    } else {
        eprintln!(
            "note: {XDP} or {XDG_DOCUMENT_PORTAL} missing (package xdg-desktop-portal): ours alone"
        );
    }

    // A warm-up round each (first documents created, caches filled).
    for s in &sides {
        s.round(&client, 10);
    }
    let mut medians = vec![Vec::new(); sides.len()];
    let mut means = vec![Vec::new(); sides.len()];
    let mut cpu = vec![[0.0f64; 4]; sides.len()];
    for _ in 0..rounds {
        for (i, s) in sides.iter().enumerate() {
            let (times, used) = s.round(&client, calls);
            means[i].push(times.iter().sum::<f64>() / times.len() as f64);
            medians[i].push(median(times));
            for k in 0..4 {
                cpu[i][k] += used[k];
            }
        }
    }
    let total = (calls * rounds) as f64;
    println!(
        "FileChooser.OpenFile round trip from an app inside porthole run, scripted porthole-prompt \
         as the backend; {rounds} rounds of {calls} calls, sides alternating"
    );
    println!(
        "{:<40} {:>10} {:>10}   {:>9} {:>9} {:>9} {:>9} {:>9}",
        "", "median us", "mean us", "frontend", "documents", "perm.store", "prompt", "services"
    );
    println!("{:<40} {:>10} {:>10}   CPU us per round trip", "", "", "");
    let mut services = Vec::new();
    for (i, s) in sides.iter().enumerate() {
        let per = cpu[i].map(|c| c / total * 1e6);
        let all = per[0] + per[1] + per[2];
        services.push(all);
        println!(
            "{:<40} {:>10.0} {:>10.0}   {:>9.0} {:>9.0} {:>9.0} {:>9.0} {:>9.0}",
            s.label,
            median(medians[i].clone()),
            means[i].iter().sum::<f64>() / means[i].len() as f64,
            per[0],
            per[1],
            per[2],
            per[3],
            all
        );
    }
    let alone = backend_alone(&sides[0], calls).await;
    println!("the backend alone (the prompt's impl OpenFile from the host): median {alone:.0} us");
    for j in 1..sides.len() {
        println!(
            "ours / {}: round trip {:.2}x (median), {:.2}x (mean); CPU of frontend+documents+store {:.2}x",
            sides[j].label,
            median(medians[0].clone()) / median(medians[j].clone()),
            means[0].iter().sum::<f64>() / means[j].iter().sum::<f64>(),
            services[0] / services[j]
        );
    }
}
