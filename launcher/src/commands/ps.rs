//! `porthole ps [--json]`: running instances of this user, each with its
//! cgroup directories (the `cgroups` field of the JSON records).

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
        "{:<11} {:>8} {:<32} {:<40} COMMAND",
        "INSTANCE", "PID", "APPLICATION", "CGROUP"
    );
    for r in records {
        println!(
            "{:<11} {:>8} {:<32} {:<40} {}",
            r.instance,
            r.pid,
            r.app_id,
            cgroup_column(&r.cgroups),
            r.command.join(" ")
        );
    }
    0
}

/// The CGROUP column: the instance's cgroup directories (its systemd scope's,
/// its v2 one, or one per v1 hierarchy), comma-separated; "-" when it has
/// none and runs in its caller's.
fn cgroup_column(cgroups: &[String]) -> String {
    if cgroups.is_empty() {
        "-".to_owned()
    } else {
        cgroups.join(",")
    }
}
