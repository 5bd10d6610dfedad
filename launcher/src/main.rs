//! `porthole`: parses the command line, sets up logging, calls the library.
//! One file per subcommand under `commands/`.

mod commands;

use clap::{Parser, Subcommand};
use porthole_launcher::exit_code;

/// Run desktop apps in a sandbox; list, stop and enter running instances.
#[derive(Debug, Parser)]
#[command(name = "porthole", version, about, propagate_version = true)]
struct Cli {
    /// Log level (error, warn, info, debug, trace); RUST_LOG overrides.
    #[arg(long, global = true, default_value = "warn")]
    log_level: String,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    Run(Box<commands::run::RunArgs>),
    Ps(commands::ps::PsArgs),
    Kill(commands::kill::KillArgs),
    Enter(commands::enter::EnterArgs),
}

fn setup_logging(level: &str) {
    // RUST_LOG gets the full filter syntax; otherwise a plain level, which
    // keeps start-up cheap (no directive parsing on every launch).
    if std::env::var_os("RUST_LOG").is_some() {
        let filter = tracing_subscriber::EnvFilter::try_from_default_env()
            .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
        tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_writer(std::io::stderr)
            .without_time()
            .init();
        return;
    }
    let level = level
        .parse::<tracing::Level>()
        .unwrap_or(tracing::Level::WARN);
    tracing_subscriber::fmt()
        .with_max_level(level)
        .with_writer(std::io::stderr)
        .without_time()
        .init();
}

/// clap's message, reduced to its first line: one clear line on stderr.
fn usage_error(err: &clap::Error) -> ! {
    let text = err.render().to_string();
    let first = text.lines().next().unwrap_or("invalid arguments");
    let first = first.strip_prefix("error: ").unwrap_or(first);
    eprintln!("porthole: {first} (see --help)");
    std::process::exit(exit_code::USAGE)
}

fn main() {
    // Before anything else: --die-with-parent compares against this parent.
    porthole_launcher::init::record_parent();
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(err) => match err.kind() {
            clap::error::ErrorKind::DisplayHelp | clap::error::ErrorKind::DisplayVersion => {
                let _ = err.print();
                std::process::exit(0)
            }
            clap::error::ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand => {
                let _ = err.print();
                std::process::exit(exit_code::USAGE)
            }
            _ => usage_error(&err),
        },
    };
    setup_logging(&cli.log_level);
    let code = match cli.command {
        Command::Run(args) => commands::run::main(*args),
        Command::Ps(args) => commands::ps::main(args),
        Command::Kill(args) => commands::kill::main(args),
        Command::Enter(args) => commands::enter::main(args),
    };
    std::process::exit(code)
}
