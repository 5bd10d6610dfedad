//! One tracing set-up for every daemon.
//!
//! Daemons log to stderr, which D-Bus activation and systemd hand to the
//! journal: colour codes there are noise, so they are used only when stderr
//! is a terminal.

/// Installs the global subscriber: `info` by default, `debug` with
/// `verbose`; `RUST_LOG` overrides both. A second call does nothing (tests
/// may set up several services in one process).
pub fn init(verbose: bool) {
    let default = if verbose { "debug" } else { "info" };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    let _already_set = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .try_init();
}
