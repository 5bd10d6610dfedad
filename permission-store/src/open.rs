//! Opening the database file: location, pragmas, migrations, and what to do
//! with a file that is not a healthy SQLite database.
//!
//! A corrupt file is never wiped: it is renamed aside with a timestamp (its
//! `-wal` and `-shm` companions with it) and the open fails with an error
//! naming both paths. The next start then begins with an empty store while the
//! old bytes stay available for recovery.

use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{ConnectOptions, Connection, SqliteConnection, SqlitePool};

use crate::error::StoreError;

/// `$XDG_DATA_HOME/porthole/permissions.db` (with `~/.local/share` when
/// XDG_DATA_HOME is unset), as in DESIGN.md.
pub fn default_db_path() -> Option<PathBuf> {
    let base = match std::env::var_os("XDG_DATA_HOME").filter(|v| !v.is_empty()) {
        Some(d) => PathBuf::from(d),
        None => {
            PathBuf::from(std::env::var_os("HOME").filter(|v| !v.is_empty())?).join(".local/share")
        }
    };
    Some(base.join("porthole").join("permissions.db"))
}

/// How long a connection waits for another process's lock (permctl writing
/// directly while a service starts, say) before it reports "busy".
const BUSY_TIMEOUT: Duration = Duration::from_secs(10);

/// Read connections: enough for concurrent Lookups on two cores.
const READERS: u32 = 4;

fn io_err<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(std::io::Error) -> StoreError + 'a {
    move |source| StoreError::Io {
        op,
        path: path.to_owned(),
        source,
    }
}

fn options(path: &Path) -> SqliteConnectOptions {
    SqliteConnectOptions::new()
        .filename(path)
        .journal_mode(SqliteJournalMode::Wal)
        // FULL: a write is on disk before its reply, like upstream's
        // fsync-then-reply; the writer commits queued writes together so the
        // fsync is shared.
        .synchronous(SqliteSynchronous::Full)
        .busy_timeout(BUSY_TIMEOUT)
        .foreign_keys(true)
        .disable_statement_logging()
}

/// SQLite's primary result codes that mean "this file is damaged".
fn corruption_reason(e: &sqlx::Error) -> Option<String> {
    let sqlx::Error::Database(db) = e else {
        return None;
    };
    let code = db.code().and_then(|c| i64::from_str(&c).ok())? & 0xff;
    // 11 SQLITE_CORRUPT, 26 SQLITE_NOTADB
    matches!(code, 11 | 26).then(|| db.message().to_owned())
}

/// Opens (creating if missing) the database at `path` and brings its schema
/// up to date. Returns the single write connection and the read pool.
pub async fn open(path: &Path) -> Result<(SqliteConnection, SqlitePool), StoreError> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        create_private_dir(dir)?;
    }
    create_private_file(path)?;
    let mut conn = match connect_checked(path).await {
        Ok(conn) => conn,
        Err(Checked::Corrupt(reason)) => return Err(move_aside(path, reason)),
        Err(Checked::Other(e)) => return Err(e),
    };
    sqlx::migrate!("./migrations").run(&mut conn).await?;
    let read = SqlitePoolOptions::new()
        .max_connections(READERS)
        // The default pings each connection on checkout: a second round
        // trip to the SQLite thread for every Lookup.
        .test_before_acquire(false)
        .min_connections(1)
        .connect_with(options(path).read_only(true))
        .await?;
    Ok((conn, read))
}

enum Checked {
    Corrupt(String),
    Other(StoreError),
}

async fn connect_checked(path: &Path) -> Result<SqliteConnection, Checked> {
    let classify = |e: sqlx::Error| match corruption_reason(&e) {
        Some(reason) => Checked::Corrupt(reason),
        None => Checked::Other(e.into()),
    };
    let mut conn = options(path)
        .create_if_missing(true)
        .connect()
        .await
        .map_err(classify)?;
    // quick_check reads every page: O(size), a few ms at 100k grants, and the
    // only way to learn at start-up rather than at the first unlucky query.
    let rows: Vec<String> = sqlx::query_scalar("PRAGMA quick_check")
        .fetch_all(&mut conn)
        .await
        .map_err(classify)?;
    if rows.first().map(String::as_str) != Some("ok") {
        let _ = conn.close().await;
        return Err(Checked::Corrupt(rows.join("; ")));
    }
    Ok(conn)
}

fn move_aside(path: &Path, reason: String) -> StoreError {
    let stamp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or_default();
    let mut moved_to = PathBuf::from(format!("{}.corrupt-{stamp}", path.display()));
    let mut n = 1;
    while moved_to.exists() {
        moved_to = PathBuf::from(format!("{}.corrupt-{stamp}.{n}", path.display()));
        n += 1;
    }
    if let Err(error) = std::fs::rename(path, &moved_to) {
        return StoreError::CorruptStuck {
            path: path.to_owned(),
            reason,
            error,
        };
    }
    for suffix in ["-wal", "-shm"] {
        let from = PathBuf::from(format!("{}{suffix}", path.display()));
        if from.exists() {
            let to = PathBuf::from(format!("{}{suffix}", moved_to.display()));
            if let Err(e) = std::fs::rename(&from, &to) {
                tracing::warn!(from = %from.display(), to = %to.display(), "could not move companion file: {e}");
            }
        }
    }
    StoreError::Corrupt {
        path: path.to_owned(),
        reason,
        moved_to,
    }
}

fn create_private_dir(dir: &Path) -> Result<(), StoreError> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(io_err("creating directory", dir))
}

/// Grants are private: create the file 0600 before SQLite does (it would use
/// the umask, usually 0644). Its -wal and -shm take the main file's mode.
fn create_private_file(path: &Path) -> Result<(), StoreError> {
    use std::os::unix::fs::OpenOptionsExt;
    match std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
    {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(StoreError::Io {
            op: "creating",
            path: path.to_owned(),
            source: e,
        }),
    }
}
