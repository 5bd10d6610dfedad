//! `porthole-permission-store`: owns org.freedesktop.impl.portal.PermissionStore
//! on the session bus, backed by SQLite. The life on the bus (signals, the
//! name, `--replace`, exit) is `porthole_service::lifecycle`'s.

use std::path::PathBuf;

use anyhow::{Context, bail};
use clap::Parser;
use porthole_permission_store::gvdb_export;
use porthole_permission_store::gvdb_import::{self, default_gvdb_dir};
use porthole_permission_store::service::{self, BUS_NAME, Shared};
use porthole_permission_store::{Store, StoreError, default_db_path};
use porthole_service::{CommonArgs, Daemon};

/// The permission store: remembers what the user approved, per table, id
/// and app, behind org.freedesktop.impl.portal.PermissionStore.
#[derive(Parser, Debug)]
#[command(
    version,
    about = "The permission store: remembers what the user approved, per table, id and app, behind org.freedesktop.impl.portal.PermissionStore on the session bus. Started by D-Bus activation or systemd --user; exits on SIGTERM, SIGHUP or SIGINT, or when another instance takes the name over (--replace)."
)]
struct Args {
    #[command(flatten)]
    common: CommonArgs,
    /// The SQLite database [default: $XDG_DATA_HOME/porthole/permissions.db].
    #[arg(long, env = "PORTHOLE_PERMISSIONS_DB", value_name = "PATH")]
    db: Option<PathBuf>,
    /// xdg-permission-store's tables: imported when the database does not
    /// exist yet; `documents` there is kept current for upstream's document
    /// portal [default: $XDG_DATA_HOME/flatpak/db].
    #[arg(long, env = "PORTHOLE_FLATPAK_DB_DIR", value_name = "DIR")]
    flatpak_db: Option<PathBuf>,
}

fn main() -> std::process::ExitCode {
    let args = Args::parse();
    porthole_service::logging::init(args.common.verbose);
    porthole_service::block_on(run(args))
}

async fn run(args: Args) -> anyhow::Result<()> {
    let daemon = Daemon::start(BUS_NAME, &args.common)?;
    let path = match args.db {
        Some(p) => p,
        None => default_db_path().context("neither XDG_DATA_HOME nor HOME is set; pass --db")?,
    };
    let gvdb_dir = args.flatpak_db.or_else(default_gvdb_dir);
    if let Some(dir) = gvdb_dir.as_deref().filter(|_| !path.exists()) {
        import_first(&path, dir).await;
    }
    let store = match Store::open(&path).await {
        Ok(s) => s,
        Err(e @ StoreError::Corrupt { .. }) => {
            bail!("refusing to start: {e}. The next start begins with an empty store.")
        }
        Err(e) => return Err(e).context(format!("opening {}", path.display())),
    };
    tracing::info!(db = %path.display(), "store open");

    let bus = daemon.connect().await?;
    let shared = Shared::new(store.clone());
    service::export(bus.connection(), shared.clone())
        .await
        .context("exporting the object")?;
    let mirror_store = store.clone();
    let final_store = store.clone();
    bus.serve(|conn| {
        tokio::spawn(service::run_pruner(conn.clone(), shared));
        if let Some(dir) = gvdb_dir.clone() {
            tokio::spawn(gvdb_export::run_documents_mirror(
                conn.clone(),
                mirror_store,
                dir,
            ));
        }
        tokio::spawn(async move {
            match store.warm_cache().await {
                Ok(n) => tracing::debug!(entries = n, "cache warmed"),
                Err(e) => tracing::warn!("warming the cache: {e}"),
            }
        });
    })
    .await?;
    // A change in the last debounce interval before the exit is written
    // now, so upstream's document portal never starts from a stale file.
    if let Some(dir) = gvdb_dir {
        gvdb_export::sync_documents(&final_store, &dir).await;
    }
    Ok(())
}

/// First start: bring over what xdg-permission-store held. A failure is
/// logged and the service starts anyway (with what was imported), as an
/// empty store is what it would have started with before.
async fn import_first(db: &std::path::Path, dir: &std::path::Path) {
    match gvdb_import::import_dir(db, dir).await {
        Ok(report) => {
            for s in &report.skipped {
                tracing::warn!(file = %s.path.display(), "not imported: {}", s.reason);
            }
            tracing::info!(
                dir = %dir.display(),
                tables = report.tables.len(),
                ids = report.ids(),
                grants = report.grants(),
                skipped = report.skipped.len(),
                "imported xdg-permission-store's tables"
            );
        }
        Err(e) => {
            tracing::error!(dir = %dir.display(), "importing xdg-permission-store's tables: {e}")
        }
    }
}
