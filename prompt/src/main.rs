//! `porthole-prompt`: the dialog backend (scripted or terminal mode).

use std::path::PathBuf;

use anyhow::Context;
use clap::Parser;
use porthole_prompt::dialog::Answers;
use porthole_prompt::settings::Settings;
use porthole_prompt::terminal::Terminal;
use porthole_prompt::{BUS_NAME, Dialogs, OBJECT_PATH, Record, Script, dialog};
use porthole_service::{CommonArgs, Daemon};
use tokio::signal::unix::{Signal, SignalKind, signal};

/// Our dialog backend for the portal frontend: answers FileChooser and
/// Access dialogs and AppChooser (org.freedesktop.impl.portal.*) from a script or at its
/// terminal (--terminal), and
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
    /// response, uris, choices, current_filter, writable, choice, delay_ms, hold
    /// [default: $XDG_CONFIG_HOME/porthole/prompt-script.jsonl].
    #[arg(long, env = "PORTHOLE_PROMPT_SCRIPT", value_name = "FILE")]
    script: Option<PathBuf>,
    /// Terminal mode: show each dialog on standard output and read the
    /// answer from standard input, one dialog at a time.
    #[arg(long, conflicts_with = "script")]
    terminal: bool,
    /// Append one JSON line per dialog (what was asked, what was answered)
    /// to this file. Every dialog is also logged at info level.
    #[arg(long, env = "PORTHOLE_PROMPT_RECORD", value_name = "FILE")]
    record: Option<PathBuf>,
    /// The appearance settings served (key file, group
    /// [org.freedesktop.appearance]: color-scheme, contrast, accent-color,
    /// reduced-motion); SIGUSR1 re-reads it [default:
    /// $XDG_CONFIG_HOME/porthole/settings.ini when it exists, else "no
    /// preference"].
    #[arg(long, env = "PORTHOLE_PROMPT_SETTINGS", value_name = "FILE")]
    settings: Option<PathBuf>,
}

fn main() -> std::process::ExitCode {
    let args = Args::parse();
    porthole_service::logging::init(args.common.verbose);
    porthole_service::block_on(run(args))
}

/// `$XDG_CONFIG_HOME/porthole/NAME`, when it exists (the files an
/// activated backend reads).
fn config_file(name: &str) -> Option<PathBuf> {
    let config = std::env::var_os("XDG_CONFIG_HOME")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".config")))?;
    let path = config.join("porthole").join(name);
    path.exists().then_some(path)
}

async fn run(args: Args) -> anyhow::Result<()> {
    let daemon = Daemon::start(BUS_NAME, &args.common)?;
    let answers = if args.terminal {
        tracing::info!("terminal mode");
        Answers::Terminal(Terminal::stdio())
    } else {
        let script_path = match args.script {
            Some(path) => path,
            None => config_file("prompt-script.jsonl")
                .context("no script: pass --script FILE, or --terminal")?,
        };
        let script = Script::load(&script_path)?;
        tracing::info!(script = %script_path.display(), "scripted mode");
        Answers::Script(script)
    };
    let record = match &args.record {
        Some(path) => Record::to_file(path)
            .with_context(|| format!("opening the record file {}", path.display()))?,
        None => Record::default(),
    };
    let settings = Settings::new(args.settings.or_else(|| config_file("settings.ini")))?;
    // Installed before the name is visible, like the lifecycle's signals.
    let reload = signal(SignalKind::user_defined1()).context("installing the SIGUSR1 handler")?;
    let bus = daemon.connect().await?;
    dialog::export(bus.connection(), Dialogs::new(answers, record))
        .await
        .context("exporting the backend's interfaces")?;
    bus.connection()
        .object_server()
        .at(OBJECT_PATH, settings)
        .await
        .context("exporting the settings")?;
    bus.serve(|conn| {
        tokio::spawn(reload_on_sigusr1(conn.clone(), reload));
    })
    .await?;
    Ok(())
}

/// Re-reads the settings file on each SIGUSR1 and announces what changed.
async fn reload_on_sigusr1(conn: zbus::Connection, mut reload: Signal) {
    while reload.recv().await.is_some() {
        let iface = match conn
            .object_server()
            .interface::<_, Settings>(OBJECT_PATH)
            .await
        {
            Ok(iface) => iface,
            Err(e) => {
                tracing::error!("the settings object is gone: {e}");
                return;
            }
        };
        let changed = iface.get().await.reload();
        tracing::info!(changed = changed.len(), "settings re-read");
        for (namespace, key, value) in changed {
            let emitted = Settings::setting_changed(
                iface.signal_emitter(),
                &namespace,
                &key,
                value.to_value().into(),
            )
            .await;
            if let Err(e) = emitted {
                tracing::warn!("emitting SettingChanged: {e}");
            }
        }
    }
}
