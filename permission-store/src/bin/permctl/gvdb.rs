//! `permctl import` and `permctl export`: moving grants between
//! xdg-permission-store's GVDB files and our database.
//!
//! Both work on the database file directly, whether or not a service runs:
//! SQLite lets the import write beside the service (which notices the
//! change), and the export reads one consistent snapshot.

use std::path::{Path, PathBuf};

use porthole_permission_store::gvdb_export;
use porthole_permission_store::gvdb_import::{self, default_gvdb_dir};
use porthole_permission_store::{Store, default_db_path};

use crate::backend::CliError;
use crate::exit;
use crate::output::{self, shown};

fn db_path(db: Option<&Path>) -> Result<PathBuf, CliError> {
    db.map(Path::to_owned)
        .or_else(default_db_path)
        .ok_or_else(|| {
            CliError::new(
                exit::UNAVAILABLE,
                "neither XDG_DATA_HOME nor HOME is set; pass --db",
            )
        })
}

fn gvdb_dir(dir: Option<PathBuf>) -> Result<PathBuf, CliError> {
    dir.or_else(default_gvdb_dir).ok_or_else(|| {
        CliError::new(
            exit::USAGE,
            "neither XDG_DATA_HOME nor HOME is set; pass --dir",
        )
    })
}

/// Imports every table file of `dir`; a file that cannot be read is named
/// and skipped, the others imported, and the exit status is then 1.
pub async fn import(db: Option<&Path>, dir: Option<PathBuf>, json: bool) -> Result<(), CliError> {
    let db = db_path(db)?;
    let dir = gvdb_dir(dir)?;
    let report = gvdb_import::import_dir(&db, &dir).await.map_err(|e| {
        let code = match e {
            gvdb_import::ImportError::Open(_) => exit::UNAVAILABLE,
            _ => exit::FAILURE,
        };
        CliError::new(code, format!("importing {}: {e}", dir.display()))
    })?;
    if json {
        let text = serde_json::to_string_pretty(&report)
            .map_err(|e| CliError::new(exit::FAILURE, e.to_string()))?;
        output::line(&text);
    } else {
        for t in &report.tables {
            output::line(&format!(
                "{}: {} ids, {} grants ({} ids changed)",
                shown(&t.table),
                t.ids,
                t.grants,
                t.changed_ids
            ));
        }
        output::line(&format!(
            "imported {} tables from {}: {} ids, {} grants; {} ids changed",
            report.tables.len(),
            dir.display(),
            report.ids(),
            report.grants(),
            report.changed_ids()
        ));
    }
    for s in &report.skipped {
        output::warn(&format!(
            "skipped {}: {}",
            shown(&s.path.display().to_string()),
            s.reason
        ));
    }
    if report.skipped.is_empty() {
        Ok(())
    } else {
        Err(CliError::new(
            exit::FAILURE,
            format!("{} file(s) could not be imported", report.skipped.len()),
        ))
    }
}

/// Writes every table as a GVDB file xdg-permission-store reads.
pub async fn export(db: Option<&Path>, dir: Option<PathBuf>, json: bool) -> Result<(), CliError> {
    let db = db_path(db)?;
    let dir = gvdb_dir(dir)?;
    let store = Store::open_read_only(&db).await?;
    let tables = gvdb_export::export_all(&store, &dir).await.map_err(|e| {
        CliError::new(
            exit::FAILURE,
            format!("exporting to {}: {e}", dir.display()),
        )
    })?;
    if json {
        let text = serde_json::to_string_pretty(&tables)
            .map_err(|e| CliError::new(exit::FAILURE, e.to_string()))?;
        output::line(&text);
    } else {
        for t in &tables {
            output::line(&format!(
                "{}: {} ids, {} grants -> {}",
                shown(&t.table),
                t.ids,
                t.grants,
                t.path.display()
            ));
            if t.expiring_left_out > 0 {
                output::warn(&format!(
                    "{}: {} grant(s) with an expiry left out (xdg-permission-store would keep them for ever)",
                    shown(&t.table),
                    t.expiring_left_out
                ));
            }
            for id in &t.left_out {
                output::warn(&format!(
                    "{}: id {} left out (the GVDB writer cannot hold it)",
                    shown(&t.table),
                    shown(id)
                ));
            }
        }
        output::line(&format!(
            "exported {} tables to {}",
            tables.len(),
            dir.display()
        ));
    }
    Ok(())
}
