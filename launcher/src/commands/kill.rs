//! `porthole kill [--signal SIG] INSTANCE`

use porthole_launcher::{enter, exit_code};

/// Stop a running sandbox (all its processes).
#[derive(Debug, clap::Args)]
#[command(
    after_help = "Exit status: 0 when signalled; 120 when no such instance runs, 121 for bad options."
)]
pub struct KillArgs {
    /// Signal for the sandbox's init: KILL (default) ends the whole sandbox
    /// at once; TERM and others are forwarded to the app.
    #[arg(long, short, default_value = "KILL")]
    signal: String,
    /// Instance id, or app id when only one instance of it runs.
    instance: String,
}

pub fn main(args: KillArgs) -> i32 {
    let name = args.signal.trim_start_matches("SIG").to_uppercase();
    let Ok(sig) = format!("SIG{name}").parse::<nix::sys::signal::Signal>() else {
        eprintln!("porthole: --signal={}: unknown signal", args.signal);
        return exit_code::USAGE;
    };
    let record = match super::find(&args.instance) {
        Ok(r) => r,
        Err(code) => return code,
    };
    match enter::signal(&record, sig) {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("porthole: {e}");
            exit_code::NO_SUCH_INSTANCE
        }
    }
}
