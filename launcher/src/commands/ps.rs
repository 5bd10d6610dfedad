//! `porthole ps [--json]`: running instances of this user.

use porthole_launcher::instance;

/// List running sandboxes.
#[derive(Debug, clap::Args)]
pub struct PsArgs {
    /// Machine-readable output: a JSON array of instance records.
    #[arg(long)]
    json: bool,
}

pub fn main(args: PsArgs) -> i32 {
    let records = match super::instances().and_then(|d| instance::list(&d)) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("porthole: {e}");
            return porthole_launcher::exit_code::SETUP_FAILED;
        }
    };
    if args.json {
        match serde_json::to_string_pretty(&records) {
            Ok(s) => println!("{s}"),
            Err(e) => {
                eprintln!("porthole: {e}");
                return 1;
            }
        }
        return 0;
    }
    println!(
        "{:<11} {:>8} {:<32} COMMAND",
        "INSTANCE", "PID", "APPLICATION"
    );
    for r in records {
        println!(
            "{:<11} {:>8} {:<32} {}",
            r.instance,
            r.pid,
            r.app_id,
            r.command.join(" ")
        );
    }
    0
}
