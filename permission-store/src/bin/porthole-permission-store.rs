//! `porthole-permission-store`: owns org.freedesktop.impl.portal.PermissionStore
//! on the session bus, backed by SQLite.

use std::path::PathBuf;

use anyhow::{Context, bail};
use clap::Parser;
use futures_util::StreamExt;
use porthole_permission_store::service::{self, BUS_NAME, Shared};
use porthole_permission_store::{Store, StoreError, default_db_path};
use tokio::signal::unix::{SignalKind, signal};
use zbus::fdo::{DBusProxy, RequestNameFlags, RequestNameReply};

/// The permission store: remembers what the user approved, per table, id
/// and app, behind org.freedesktop.impl.portal.PermissionStore.
#[derive(Parser, Debug)]
#[command(
    version,
    about = "The permission store: remembers what the user approved, per table, id and app, behind org.freedesktop.impl.portal.PermissionStore on the session bus. Started by D-Bus activation or systemd --user; exits on SIGTERM or SIGHUP."
)]
struct Args {
    /// Replace a running instance that owns the bus name.
    #[arg(short, long)]
    replace: bool,
    /// Log debug messages (RUST_LOG overrides).
    #[arg(short, long)]
    verbose: bool,
    /// The SQLite database [default: $XDG_DATA_HOME/porthole/permissions.db].
    #[arg(long, env = "PORTHOLE_PERMISSIONS_DB", value_name = "PATH")]
    db: Option<PathBuf>,
}

fn main() -> std::process::ExitCode {
    let args = Args::parse();
    init_tracing(args.verbose);
    // One thread: the work per call is small and SQLite runs on sqlx's own
    // threads, so a single scheduler saves cross-thread wake-ups per call.
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("porthole-permission-store: cannot start the async runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let result = rt.block_on(run(args));
    // A caller's `.flatpak-info` read that never returns (a FUSE file) keeps
    // its blocking thread; exiting must not wait for it.
    rt.shutdown_timeout(std::time::Duration::from_millis(100));
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e:#}");
            eprintln!("porthole-permission-store: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn init_tracing(verbose: bool) {
    let default = if verbose { "debug" } else { "info" };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        // Colour codes only for a terminal, not for a log file or the journal.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
}

async fn run(args: Args) -> anyhow::Result<()> {
    // Before anything else: whoever sees our name on the bus may signal us
    // at once, and the default action would end us with no clean exit.
    let mut term = signal(SignalKind::terminate())?;
    let mut hup = signal(SignalKind::hangup())?;
    let mut int = signal(SignalKind::interrupt())?;
    let path = match args.db {
        Some(p) => p,
        None => default_db_path().context("neither XDG_DATA_HOME nor HOME is set; pass --db")?,
    };
    let store = match Store::open(&path).await {
        Ok(s) => s,
        Err(e @ StoreError::Corrupt { .. }) => {
            bail!("refusing to start: {e}. The next start begins with an empty store.")
        }
        Err(e) => return Err(e).context(format!("opening {}", path.display())),
    };
    tracing::info!(db = %path.display(), "store open");

    let conn = zbus::connection::Builder::session()
        .context("no session bus address")?
        .build()
        .await
        .context("connecting to the session bus")?;
    let store_for_cache = store.clone();
    let shared = Shared::new(store);
    service::export(&conn, shared.clone())
        .await
        .context("exporting the object")?;

    let dbus = DBusProxy::new(&conn).await?;
    let mut lost = dbus.receive_name_lost().await?;
    let mut flags = RequestNameFlags::AllowReplacement | RequestNameFlags::DoNotQueue;
    if args.replace {
        flags |= RequestNameFlags::ReplaceExisting;
    }
    match dbus.request_name(BUS_NAME.try_into()?, flags).await? {
        RequestNameReply::PrimaryOwner | RequestNameReply::AlreadyOwner => {}
        other => bail!("{BUS_NAME} is already owned ({other:?}); use --replace to take it over"),
    }
    tracing::info!("serving {BUS_NAME}");
    tokio::spawn(service::run_pruner(conn.clone(), shared));
    tokio::spawn(async move {
        match store_for_cache.warm_cache().await {
            Ok(n) => tracing::debug!(entries = n, "cache warmed"),
            Err(e) => tracing::warn!("warming the cache: {e}"),
        }
    });

    loop {
        tokio::select! {
            _ = term.recv() => { tracing::info!("SIGTERM: exiting"); break; }
            _ = hup.recv() => { tracing::info!("SIGHUP: exiting"); break; }
            _ = int.recv() => { tracing::info!("SIGINT: exiting"); break; }
            sig = lost.next() => match sig {
                Some(sig) if sig.args().map(|a| a.name == BUS_NAME).unwrap_or(false) => {
                    tracing::info!("lost {BUS_NAME} to another instance: exiting");
                    break;
                }
                Some(_) => {}
                None => {
                    tracing::info!("the bus connection closed: exiting");
                    break;
                }
            },
        }
    }
    Ok(())
}
