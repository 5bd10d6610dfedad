//! Our tables written back in xdg-permission-store's format: every table on
//! request (`permctl export`, so switching back loses nothing), and the
//! `documents` table kept current by the service (the mirror), because
//! upstream's xdg-document-portal reads `$XDG_DATA_HOME/flatpak/db/documents`
//! directly when it starts.
//!
//! A file is written whole to a temporary file in the same directory,
//! synced, then renamed over the table: a reader sees the old file or the
//! new one, never half of one. Grants with an expiry are left out: upstream
//! has no expiry and would keep them for ever.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use futures_util::StreamExt;
use serde::Serialize;

use crate::error::StoreError;
use crate::gvdb_import::TEMP_SUFFIX;
use crate::gvdb_table::{self, GvdbError};
use crate::store::Store;

/// The table upstream's document portal reads from disk.
pub const DOCUMENTS: &str = "documents";

/// How long the mirror waits after a change for more before writing, so a
/// burst of changes costs one write.
pub const MIRROR_DEBOUNCE: Duration = Duration::from_millis(100);

#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("table {table}: {source}")]
    Format { table: String, source: GvdbError },
    #[error("{op} {path}: {source}")]
    Io {
        op: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ExportedTable {
    pub table: String,
    pub ids: usize,
    pub grants: usize,
    pub path: PathBuf,
    /// Ids not written (see [`gvdb_table::Built::left_out`]).
    pub left_out: Vec<String>,
    /// Grants with an expiry, not written: upstream would keep them for
    /// ever.
    pub expiring_left_out: usize,
}

/// Writes every table that holds an id to `dir` (created if missing).
pub async fn export_all(store: &Store, dir: &Path) -> Result<Vec<ExportedTable>, ExportError> {
    let mut out = Vec::new();
    for (table, _) in store.tables().await? {
        out.push(export_table(store, &table, dir).await?);
    }
    Ok(out)
}

/// Writes one table to `dir/TABLE`, replacing it atomically.
pub async fn export_table(
    store: &Store,
    table: &str,
    dir: &Path,
) -> Result<ExportedTable, ExportError> {
    let mut entries = store.entries(table).await?;
    // Upstream has no expiry: a grant that was to lapse would become
    // permanent there, so it is left out (the app asks again).
    let mut expiring = 0;
    for (_, entry) in &mut entries {
        let before = entry.apps.len();
        entry.apps.retain(|_, g| g.expires.is_none());
        expiring += before - entry.apps.len();
    }
    let built =
        gvdb_table::build(entries.iter().map(|(id, e)| (id.as_str(), e))).map_err(|source| {
            ExportError::Format {
                table: table.to_owned(),
                source,
            }
        })?;
    for id in &built.left_out {
        tracing::warn!(table, id, "an id the GVDB writer cannot hold was left out");
    }
    let bytes = built.bytes;
    let path = dir.join(table);
    let dir = dir.to_owned();
    let (t, p) = (table.to_owned(), path.clone());
    tokio::task::spawn_blocking(move || replace_file(&dir, &t, &bytes))
        .await
        .map_err(|e| ExportError::Io {
            op: "writing",
            path: p,
            source: std::io::Error::other(e.to_string()),
        })??;
    Ok(ExportedTable {
        table: table.to_owned(),
        ids: entries.len() - built.left_out.len(),
        left_out: built.left_out,
        expiring_left_out: expiring,
        grants: entries.iter().map(|(_, e)| e.apps.len()).sum(),
        path,
    })
}

fn replace_file(dir: &Path, table: &str, bytes: &[u8]) -> Result<(), ExportError> {
    let io = |op, path: &Path| {
        let path = path.to_owned();
        move |source| ExportError::Io { op, path, source }
    };
    std::fs::create_dir_all(dir).map_err(io("creating", dir))?;
    let target = dir.join(table);
    let temp = dir.join(format!(".{table}{TEMP_SUFFIX}"));
    let mut file = std::fs::File::create(&temp).map_err(io("creating", &temp))?;
    file.write_all(bytes).map_err(io("writing", &temp))?;
    file.sync_all().map_err(io("syncing", &temp))?;
    drop(file);
    if let Err(e) = std::fs::rename(&temp, &target) {
        let _ = std::fs::remove_file(&temp);
        return Err(io("renaming into place", &target)(e));
    }
    Ok(())
}

/// Keeps `dir/documents` equal to our documents table while the service
/// runs: rewritten after each burst of `Changed` signals for that table
/// (the store's own, received on its own connection), and at start when
/// it differs ([`sync_documents`]). Never wakes while nothing changes.
pub async fn run_documents_mirror(conn: zbus::Connection, store: Store, dir: PathBuf) {
    let stream = match changes_stream(&conn).await {
        Ok(s) => s,
        Err(e) => {
            tracing::error!("the documents mirror cannot watch for changes: {e}");
            return;
        }
    };
    futures_util::pin_mut!(stream);
    sync_documents(&store, &dir).await;
    while stream.next().await.is_some() {
        tokio::time::sleep(MIRROR_DEBOUNCE).await;
        // Everything that arrived meanwhile is covered by this write.
        while let Some(Some(_)) = futures_util::FutureExt::now_or_never(stream.next()) {}
        mirror_once(&store, &dir).await;
    }
}

/// Brings `dir/documents` up to date when it differs from our table: at
/// the mirror's start and as the service's last act before it exits (a
/// change whose signal had not come back yet is written then). An
/// unreadable file is replaced only when we have documents to put there, so
/// a damaged file of upstream's is not silently swapped for an empty one.
pub async fn sync_documents(store: &Store, dir: &Path) {
    let ours = match store.entries(DOCUMENTS).await {
        Ok(e) => e,
        Err(e) => {
            tracing::warn!("documents mirror: {e}");
            return;
        }
    };
    let on_disk = std::fs::read(dir.join(DOCUMENTS))
        .ok()
        .and_then(|b| gvdb_table::parse(&b).ok());
    let current = match on_disk {
        Some(theirs) => theirs == ours,
        None => ours.is_empty(),
    };
    if !current {
        mirror_once(store, dir).await;
    }
}

async fn mirror_once(store: &Store, dir: &Path) {
    match export_table(store, DOCUMENTS, dir).await {
        Ok(t) => tracing::debug!(ids = t.ids, path = %t.path.display(), "documents mirrored"),
        Err(e) => tracing::error!("mirroring the documents table: {e}"),
    }
}

async fn changes_stream(conn: &zbus::Connection) -> zbus::Result<zbus::MessageStream> {
    let mut rule = zbus::MatchRule::builder()
        .msg_type(zbus::message::Type::Signal)
        .interface(crate::service::INTERFACE)?
        .member("Changed")?
        .path(crate::service::OBJECT_PATH)?
        .arg(0, DOCUMENTS)?;
    if let Some(me) = conn.unique_name() {
        rule = rule.sender(me.to_owned())?;
    }
    zbus::MessageStream::for_match_rule(rule.build(), conn, Some(1024)).await
}
