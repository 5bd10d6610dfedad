//! `porthole enter INSTANCE -- COMMAND [ARGS...]`

use std::ffi::OsString;

use porthole_launcher::{enter, exit_code};

/// Run COMMAND inside a running sandbox (same namespaces, seccomp filter and
/// capability drop as the app).
#[derive(Debug, clap::Args)]
#[command(
    after_help = "Exit status: COMMAND's own status; 120 when no such instance runs, 121 for bad options, 123 without COMMAND, 125 when joining fails."
)]
pub struct EnterArgs {
    /// Instance id, or app id when only one instance of it runs.
    instance: String,
    /// The command and its arguments.
    #[arg(
        value_name = "COMMAND",
        trailing_var_arg = true,
        allow_hyphen_values = true,
        required = false
    )]
    command: Vec<OsString>,
}

pub fn main(args: EnterArgs) -> i32 {
    if args.command.is_empty() {
        eprintln!(
            "porthole: missing COMMAND (usage: porthole enter INSTANCE -- COMMAND [ARGS...])"
        );
        return exit_code::MISSING_COMMAND;
    }
    let record = match super::find(&args.instance) {
        Ok(r) => r,
        Err(code) => return code,
    };
    match enter::enter(&record, &args.command) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("porthole: {e}");
            e.exit_code()
        }
    }
}
