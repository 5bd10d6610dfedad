//! `porthole-prompt`: the dialog backend, scripted mode.

use std::path::PathBuf;

use anyhow::Context;
use clap::Parser;
use porthole_prompt::{BUS_NAME, Dialogs, Record, Script, dialog};
use porthole_service::{CommonArgs, Daemon};

/// Our dialog backend for the portal frontend: answers FileChooser and
/// Access dialogs (org.freedesktop.impl.portal.*) from a script, and
/// records each dialog it was asked. Owns
/// org.freedesktop.impl.portal.desktop.porthole; found by the frontend
/// through porthole.portal. Exits on SIGTERM, SIGHUP or SIGINT.
#[derive(Parser, Debug)]
#[command(version)]
struct Args {
    #[command(flatten)]
    common: CommonArgs,
    /// The answers: one JSON object per line, e.g.
    /// {"method": "OpenFile", "uris": ["file:///tmp/a.txt"]}; keys method,
    /// response, uris, choices, current_filter, writable, delay_ms, hold
    /// [default: $XDG_CONFIG_HOME/porthole/prompt-script.jsonl].
    #[arg(long, env = "PORTHOLE_PROMPT_SCRIPT", value_name = "FILE")]
    script: Option<PathBuf>,
    /// Append one JSON line per dialog (what was asked, what was answered)
    /// to this file. Every dialog is also logged at info level.
    #[arg(long, env = "PORTHOLE_PROMPT_RECORD", value_name = "FILE")]
    record: Option<PathBuf>,
}

fn main() -> std::process::ExitCode {
    let args = Args::parse();
    porthole_service::logging::init(args.common.verbose);
    porthole_service::block_on(run(args))
}

/// `$XDG_CONFIG_HOME/porthole/prompt-script.jsonl`, when it exists (the
/// file an activated backend reads).
fn default_script() -> Option<PathBuf> {
    let config = std::env::var_os("XDG_CONFIG_HOME")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".config")))?;
    let path = config.join("porthole/prompt-script.jsonl");
    path.exists().then_some(path)
}

async fn run(args: Args) -> anyhow::Result<()> {
    let daemon = Daemon::start(BUS_NAME, &args.common)?;
    let script_path = match args.script {
        Some(path) => path,
        None => default_script()
            .context("no script: pass --script FILE (the terminal mode is not built yet)")?,
    };
    let script = Script::load(&script_path)?;
    tracing::info!(script = %script_path.display(), "scripted mode");
    let record = match &args.record {
        Some(path) => Record::to_file(path)
            .with_context(|| format!("opening the record file {}", path.display()))?,
        None => Record::default(),
    };
    let bus = daemon.connect().await?;
    dialog::export(bus.connection(), Dialogs::new(script, record))
        .await
        .context("exporting the backend's interfaces")?;
    bus.serve(|_| {}).await?;
    Ok(())
}
