//! `porthole-documents`: owns org.freedesktop.portal.Documents on the
//! session bus and serves the documents at `$XDG_RUNTIME_DIR/doc` through
//! FUSE. The life on the bus (signals, the name, `--replace`, exit) is
//! `porthole_service::lifecycle`'s; the documents live in the permission
//! store, reached over D-Bus.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use clap::Parser;
use porthole_documents::backing::{self, Watch, Writer};
use porthole_documents::portal::{Documents, State, StoreSync};
use porthole_documents::transfer::{self, FileTransfer, Transfers};
use porthole_documents::{BUS_NAME, OBJECT_PATH, SharedTable, Table, fs};
use porthole_service::{CommonArgs, Daemon, Strict};

/// The document store: files the user chose, shown to the apps it gave
/// them to.
#[derive(Parser, Debug)]
#[command(
    version,
    about = "The document store: org.freedesktop.portal.Documents on the session bus and the FUSE file system at $XDG_RUNTIME_DIR/doc that shows each app only the files it was given. Started by D-Bus activation or systemd --user; unmounts and exits on SIGTERM, SIGHUP or SIGINT, or when another instance takes the name over (--replace)."
)]
struct Args {
    #[command(flatten)]
    common: CommonArgs,
    /// Never let the kernel cache a file document's entry or attributes
    /// (upstream's behaviour): every stat and open asks the service, so a
    /// file removed or replaced on the host is gone from the views in the
    /// same instant rather than tens of microseconds later, at the price of
    /// a round trip each (see document-fuse/README.md).
    #[arg(long, env = "PORTHOLE_DOCUMENTS_NO_FILE_CACHE", value_parser = clap::builder::BoolishValueParser::new())]
    no_file_cache: bool,
}

fn main() -> std::process::ExitCode {
    let args = Args::parse();
    porthole_service::logging::init(args.common.verbose);
    porthole_service::block_on(run(args))
}

async fn run(args: Args) -> anyhow::Result<()> {
    let daemon = Daemon::start(BUS_NAME, &args.common)?;
    let runtime = std::env::var_os("XDG_RUNTIME_DIR")
        .filter(|d| !d.is_empty())
        .map(PathBuf::from)
        .context("XDG_RUNTIME_DIR is not set: nowhere to mount the documents")?;
    let mountpoint = runtime.join("doc");

    let bus = daemon.connect().await?;
    let conn = bus.connection().clone();
    // Subscribed before the table is read, so no change in between is lost.
    let watch = Watch::subscribe(&conn)
        .await
        .context("watching the permission store")?;
    let (docs, store_absent) = match backing::load(&conn).await {
        Ok(docs) => (docs, false),
        // Upstream's document portal runs without a store on the bus (its
        // test harness starts it alone); the documents are loaded once the
        // store appears, and writes meanwhile only reach memory.
        Err(e) if e.store_absent() => {
            tracing::warn!("no permission store on the bus yet: starting empty ({e})");
            (Vec::new(), true)
        }
        Err(e) => return Err(e).context("reading the documents from the permission store"),
    };
    tracing::info!(documents = docs.len(), "documents loaded");
    let mut table = Table::default();
    for (id, doc) in docs {
        table.insert(id, doc);
    }
    let shared = fs::Shared {
        table: SharedTable::new(table),
        ..Default::default()
    };
    let caching = if args.no_file_cache {
        fs::FileCaching::Off
    } else {
        fs::FileCaching::Watched
    };
    let mounted = {
        let (mp, sh) = (mountpoint.clone(), shared.clone());
        tokio::task::spawn_blocking(move || fs::mount(&mp, sh, caching))
            .await
            .context("mounting")??
    };
    let sync = Arc::new(StoreSync {
        table: shared.table.clone(),
        invalidator: mounted.invalidator.clone(),
    });
    let writer = Writer::start(&conn, sync.clone());
    let writer_at_exit = writer.clone();
    let state = State {
        table: shared.table.clone(),
        inodes: shared.inodes.clone(),
        writer: writer.clone(),
        callers: Arc::default(),
        invalidator: mounted.invalidator.clone(),
        mountpoint: mountpoint.clone(),
        fuse_dev: mounted.dev,
    };
    let transfers = Transfers::default();
    conn.object_server()
        .at(OBJECT_PATH, Strict::new(Documents(state.clone())))
        .await
        .context("exporting the object")?;
    conn.object_server()
        .at(
            OBJECT_PATH,
            Strict::new(FileTransfer {
                state,
                transfers: transfers.clone(),
            }),
        )
        .await
        .context("exporting FileTransfer")?;
    let served = bus
        .serve(|conn| {
            if store_absent {
                let (conn, sync) = (conn.clone(), sync.clone());
                tokio::spawn(async move {
                    match backing::load_when_present(conn).await {
                        Ok(docs) => {
                            tracing::info!(documents = docs.len(), "permission store appeared");
                            sync.merge_loaded(docs);
                        }
                        Err(e) => tracing::warn!("loading from the permission store: {e}"),
                    }
                });
            }
            tokio::spawn(watch.run(writer, sync));
            tokio::spawn(transfer::watch_peers(conn.clone(), transfers));
        })
        .await;
    // Writes still queued reach the store before we go (bounded: the exit
    // must stay within a second of the signal).
    let flushed = tokio::time::timeout(
        std::time::Duration::from_millis(500),
        backing::written(writer_at_exit.flush()),
    )
    .await;
    if !matches!(flushed, Ok(Ok(()))) {
        tracing::warn!("some writes to the permission store may not have been sent");
    }
    // Unmount whatever ended the service, before exiting.
    let _ = tokio::task::spawn_blocking(move || mounted.unmount()).await;
    served?;
    Ok(())
}
