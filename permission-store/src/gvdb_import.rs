//! Import of xdg-permission-store's tables (`$XDG_DATA_HOME/flatpak/db`)
//! into our database, so installing Porthole keeps every grant the user
//! already gave.
//!
//! For each table file, each id's data value and each app's permissions in
//! the file are written to the database where they differ from what it
//! holds; apps and ids the file does not name are left as they are. So a
//! second import of the same files changes nothing and records nothing.
//! Each change is one `import` row in the audit history. A file that cannot
//! be read or parsed is named in the report and skipped; the other tables
//! are imported.
//!
//! The import writes through its own connection in one transaction per
//! table: it runs before the service's store opens (first start), or from
//! permctl while a service may run (which notices the foreign write).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use futures_util::TryStreamExt;
use serde::Serialize;
use sqlx::{Connection, QueryBuilder, Row, Sqlite, SqliteConnection};

use crate::data::Data;
use crate::error::StoreError;
use crate::gvdb_table;
use crate::model::{Entry, validate_table};
use crate::open::OpenError;
use crate::writer::now_us;

/// Suffix of the temporary files our export and mirror write beside the
/// tables; never a table.
pub const TEMP_SUFFIX: &str = ".porthole-tmp";

/// Upstream's table directory: `$XDG_DATA_HOME/flatpak/db` (GLib's
/// `g_get_user_data_dir`: XDG_DATA_HOME when set and not empty, else
/// `$HOME/.local/share`).
pub fn default_gvdb_dir() -> Option<PathBuf> {
    let data = match std::env::var_os("XDG_DATA_HOME").filter(|v| !v.is_empty()) {
        Some(d) => PathBuf::from(d),
        None => {
            PathBuf::from(std::env::var_os("HOME").filter(|v| !v.is_empty())?).join(".local/share")
        }
    };
    Some(data.join("flatpak").join("db"))
}

#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    #[error(transparent)]
    Open(#[from] OpenError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("reading the directory {path}: {source}")]
    ReadDir {
        path: PathBuf,
        source: std::io::Error,
    },
}

impl From<sqlx::Error> for ImportError {
    fn from(e: sqlx::Error) -> Self {
        Self::Store(e.into())
    }
}

/// What one table file held and what the import changed.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct TableReport {
    pub table: String,
    /// Ids in the file.
    pub ids: usize,
    /// (id, app) grants in the file.
    pub grants: usize,
    /// Ids whose data or grants were written (0 on a repeated import).
    pub changed_ids: usize,
}

/// A file that was skipped, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Skipped {
    pub path: PathBuf,
    pub reason: String,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ImportReport {
    pub dir: PathBuf,
    pub tables: Vec<TableReport>,
    pub skipped: Vec<Skipped>,
}

impl ImportReport {
    pub fn ids(&self) -> usize {
        self.tables.iter().map(|t| t.ids).sum()
    }
    pub fn grants(&self) -> usize {
        self.tables.iter().map(|t| t.grants).sum()
    }
    pub fn changed_ids(&self) -> usize {
        self.tables.iter().map(|t| t.changed_ids).sum()
    }
}

/// Imports every table file in `dir` into the database at `db` (created
/// when missing; a damaged database is left alone and the import fails).
/// A missing `dir` imports nothing.
pub async fn import_dir(db: &Path, dir: &Path) -> Result<ImportReport, ImportError> {
    let mut report = ImportReport {
        dir: dir.to_owned(),
        ..Default::default()
    };
    let files = match table_files(dir) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(report),
        Err(source) => {
            return Err(ImportError::ReadDir {
                path: dir.to_owned(),
                source,
            });
        }
    };
    let (mut conn, pool) = crate::open::open_leaving_corrupt(db).await?;
    pool.close().await;
    for (table, path) in files {
        let skip = |reason: String| Skipped {
            path: path.clone(),
            reason,
        };
        if let Err(e) = validate_table(&table) {
            report.skipped.push(skip(e.to_string()));
            continue;
        }
        let bytes = match std::fs::read(&path) {
            Ok(b) => b,
            Err(e) => {
                report.skipped.push(skip(e.to_string()));
                continue;
            }
        };
        let entries = match gvdb_table::parse(&bytes) {
            Ok(e) => e,
            Err(e) => {
                tracing::warn!(file = %path.display(), "skipping a table file: {e}");
                report.skipped.push(skip(e.to_string()));
                continue;
            }
        };
        drop(bytes);
        let changed_ids = import_table(&mut conn, &table, &entries).await?;
        report.tables.push(TableReport {
            table,
            ids: entries.len(),
            grants: entries.iter().map(|(_, e)| e.apps.len()).sum(),
            changed_ids,
        });
    }
    let _ = conn.close().await;
    Ok(report)
}

/// Regular files in `dir`, by name, without our own temporary files.
fn table_files(dir: &Path) -> std::io::Result<Vec<(String, PathBuf)>> {
    let mut out = Vec::new();
    for item in std::fs::read_dir(dir)? {
        let item = item?;
        if !item.file_type()?.is_file() {
            continue;
        }
        let Ok(name) = item.file_name().into_string() else {
            continue;
        };
        if name.ends_with(TEMP_SUFFIX) {
            continue;
        }
        out.push((name, item.path()));
    }
    out.sort();
    Ok(out)
}

/// Writes what differs, in one transaction; returns how many ids changed.
async fn import_table(
    conn: &mut SqliteConnection,
    table: &str,
    entries: &[(String, Entry)],
) -> Result<usize, ImportError> {
    let mut tx = conn.begin().await?;
    // What the table holds now, in two queries rather than two per id.
    let mut have: BTreeMap<String, Entry> = BTreeMap::new();
    // Streamed: a table's rows all at once would cost far more than the map.
    {
        let mut rows = sqlx::query("SELECT id, data FROM entries WHERE tbl = ?")
            .bind(table)
            .fetch(&mut *tx);
        while let Some(row) = rows.try_next().await? {
            have.insert(row.get(0), Entry::new(Data::from_bytes(row.get(1))));
        }
    }
    let mut rows = sqlx::query("SELECT id, app, perms, expires FROM grants WHERE tbl = ?")
        .bind(table)
        .fetch(&mut *tx);
    while let Some(row) = rows.try_next().await? {
        let id: String = row.get(0);
        let perms: String = row.get(2);
        if let Some(e) = have.get_mut(&id) {
            e.apps.insert(
                row.get(1),
                crate::model::Grant {
                    permissions: serde_json::from_str(&perms).unwrap_or_default(),
                    expires: row.get(3),
                },
            );
        }
    }
    drop(rows);
    // What differs, then written in a few multi-row statements: one
    // statement per row would cost a round trip to sqlx's worker each.
    let mut data_rows: Vec<(&str, &[u8])> = Vec::new();
    let mut grant_rows: Vec<(&str, &str, String)> = Vec::new();
    let mut history_rows: Vec<HistoryRow<'_>> = Vec::new();
    let mut changed = 0;
    for (id, entry) in entries {
        let old = have.get(id);
        let mut touched = false;
        if old.map(|o| &o.data) != Some(&entry.data) {
            data_rows.push((id, entry.data.as_bytes()));
            history_rows.push((id, None, None, None));
            touched = true;
        }
        for (app, grant) in &entry.apps {
            let old_grant = old.and_then(|o| o.apps.get(app));
            if old_grant == Some(grant) {
                continue;
            }
            let new = json(&grant.permissions);
            grant_rows.push((id, app, new.clone()));
            history_rows.push((
                id,
                Some(app),
                old_grant.map(|g| json(&g.permissions)),
                Some(new),
            ));
            touched = true;
        }
        changed += usize::from(touched);
    }
    for chunk in data_rows.chunks(ROWS_PER_STATEMENT) {
        let mut q = QueryBuilder::<Sqlite>::new("INSERT INTO entries (tbl, id, data) ");
        q.push_values(chunk, |mut row, (id, data)| {
            row.push_bind(table).push_bind(*id).push_bind(*data);
        });
        q.push(" ON CONFLICT (tbl, id) DO UPDATE SET data = excluded.data");
        q.build().execute(&mut *tx).await?;
    }
    for chunk in grant_rows.chunks(ROWS_PER_STATEMENT) {
        let mut q =
            QueryBuilder::<Sqlite>::new("INSERT INTO grants (tbl, id, app, perms, expires) ");
        q.push_values(chunk, |mut row, (id, app, perms)| {
            row.push_bind(table)
                .push_bind(*id)
                .push_bind(*app)
                .push_bind(perms.as_str())
                .push("NULL");
        });
        q.push(" ON CONFLICT (tbl, id, app) DO UPDATE SET perms = excluded.perms, expires = NULL");
        q.build().execute(&mut *tx).await?;
    }
    let now = now_us();
    for chunk in history_rows.chunks(ROWS_PER_STATEMENT) {
        let mut q = QueryBuilder::<Sqlite>::new(
            "INSERT INTO history (time_us, action, tbl, id, app, old, new, caller) ",
        );
        q.push_values(chunk, |mut row, (id, app, old, new)| {
            row.push_bind(now)
                .push("'import'")
                .push_bind(table)
                .push_bind(*id)
                .push_bind(*app)
                .push_bind(old.as_deref())
                .push_bind(new.as_deref())
                .push("''");
        });
        q.build().execute(&mut *tx).await?;
    }
    tx.commit().await?;
    Ok(changed)
}

/// Rows per multi-row INSERT: at most 6 bound values each, well below
/// SQLite's limit of 32766 per statement.
const ROWS_PER_STATEMENT: usize = 2000;

/// One history record: id, app (None: the data value), old and new
/// permissions as JSON.
type HistoryRow<'a> = (&'a str, Option<&'a str>, Option<String>, Option<String>);

fn json(permissions: &[String]) -> String {
    serde_json::to_string(permissions).expect("strings serialise")
}
