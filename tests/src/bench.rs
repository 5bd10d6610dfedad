//! What every benchmark in `benches/` reads its settings with and sums its
//! rounds up by.

use std::str::FromStr;

/// A setting from the environment (`ROUNDS=3`), else `default`.
pub fn env_num<T: FromStr>(key: &str, default: T) -> T {
    std::env::var(key)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// The median of `v` (the upper one of an even count).
pub fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// Ends the benchmark with status 2 unless it runs as root, saying why it
/// needs root.
pub fn require_root(bench: &str, why: &str) {
    // SAFETY: geteuid(2) takes no arguments and cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("{bench} bench: run as root ({why})");
        std::process::exit(2);
    }
}
