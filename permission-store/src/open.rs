//! Opening the database file: location, pragmas, migrations, and what to do
//! with a file that is not a healthy SQLite database.
//!
//! A corrupt file is never wiped. The service ([`open`]) renames it aside
//! with a timestamp (its `-wal` and `-shm` companions with it) and fails with
//! an error naming both paths; its next start then begins with an empty store
//! while the old bytes stay available for recovery. Tools such as permctl
//! ([`open_leaving_corrupt`], [`open_existing`], [`open_read_only`]) never
//! move the user's file: a command that only looks must not change what it
//! looks at, and deciding to start over belongs to the service, at its start.

use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{ConnectOptions, Connection, SqliteConnection, SqlitePool};

use crate::error::StoreError;

/// The schema every open brings the file up to (the service and permctl's
/// writes), and that a read-only open requires.
static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

/// Why a tool could not open a database without moving it aside.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error("no database at {}", path.display())]
    Missing { path: PathBuf },
    #[error("{} is a directory, not a database file", path.display())]
    IsDirectory { path: PathBuf },
    #[error(
        "{} is not a directory, so {} cannot be a database file",
        parent.display(),
        path.display()
    )]
    ParentNotDirectory { path: PathBuf, parent: PathBuf },
    #[error(
        "the database {} is damaged ({reason}) and was left as it is; the permission store service moves it aside when it starts (and then begins empty), or move it away yourself",
        path.display()
    )]
    Corrupt { path: PathBuf, reason: String },
    #[error(
        "the database {} has no schema yet or an older one; starting the permission store service (or one change with permctl) brings it up to date",
        path.display()
    )]
    OldSchema { path: PathBuf },
    #[error("opening {} read-only: {source}", path.display())]
    ReadOnly { path: PathBuf, source: sqlx::Error },
    #[error(transparent)]
    Store(#[from] StoreError),
}

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
        // FULL, not NORMAL: in WAL mode NORMAL skips the fsync at commit, so
        // an acknowledged write would survive `kill -9` of the store (the
        // WAL is in the page cache) but not a power loss or a kernel crash.
        // A permission the user revoked must stay revoked, so a write is on
        // disk before its reply, like upstream's fsync-then-reply. The
        // writer commits queued writes together (group commit), so one
        // fsync serves a whole batch: under a pipelined load the fsyncs are
        // not what limits the rate (see writer.rs).
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
/// up to date; a corrupt file is moved aside. Returns the single write
/// connection and the read pool. This is the service's open.
pub async fn open(path: &Path) -> Result<(SqliteConnection, SqlitePool), StoreError> {
    match open_writable(path, Create::Yes, Check::Pages).await {
        Ok(opened) => Ok(opened),
        Err(Checked::Corrupt(reason)) => Err(move_aside(path, reason)),
        Err(Checked::Other(e)) => Err(e),
    }
}

/// Like [`open`], but a corrupt file stays where it is, byte for byte, and
/// the open fails with [`OpenError::Corrupt`]: for tools that write (permctl
/// with `--db`, or with no service running). A missing file is created.
pub async fn open_leaving_corrupt(
    path: &Path,
) -> Result<(SqliteConnection, SqlitePool), OpenError> {
    // Check an existing file read-only first: the write connection's
    // `journal_mode=WAL` could rewrite the header of a damaged file that is
    // not yet in WAL mode. A file created now has no pages to check.
    if exists_as_file(path)? {
        let (conn, _) = connect_read_only(path).await?;
        let _ = conn.close().await;
    }
    open_writable(path, Create::Yes, Check::Done)
        .await
        .map_err(leaving_corrupt(path))
}

/// Like [`open_leaving_corrupt`], but a missing file is
/// [`OpenError::Missing`] and nothing is created (neither the file nor its
/// directory): for tools whose change only removes (permctl's revoke and
/// reset), where a missing database already answers "not found".
pub async fn open_existing(path: &Path) -> Result<(SqliteConnection, SqlitePool), OpenError> {
    let (conn, _) = connect_read_only(path).await?;
    let _ = conn.close().await;
    open_writable(path, Create::No, Check::Done)
        .await
        .map_err(leaving_corrupt(path))
}

fn leaving_corrupt(path: &Path) -> impl FnOnce(Checked) -> OpenError + '_ {
    move |e| match e {
        Checked::Corrupt(reason) => OpenError::Corrupt {
            path: path.to_owned(),
            reason,
        },
        Checked::Other(e) => e.into(),
    }
}

/// Whether `path` names an existing file, with the two mistakes a user
/// makes with `--db` told apart from an I/O failure: a directory given as
/// the file (SQLite would say "disk I/O error"), and a path that runs
/// through a file ("Not a directory").
fn exists_as_file(path: &Path) -> Result<bool, OpenError> {
    match std::fs::metadata(path) {
        Ok(m) if m.is_dir() => Err(OpenError::IsDirectory {
            path: path.to_owned(),
        }),
        Ok(_) => Ok(true),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(e) if e.kind() == std::io::ErrorKind::NotADirectory => {
            // The nearest ancestor that exists is the file in the way.
            let parent = path
                .ancestors()
                .skip(1)
                .find(|a| std::fs::metadata(a).is_ok_and(|m| !m.is_dir()));
            Err(match parent {
                Some(parent) => OpenError::ParentNotDirectory {
                    path: path.to_owned(),
                    parent: parent.to_owned(),
                },
                None => io_err("opening", path)(e).into(),
            })
        }
        Err(source) => Err(io_err("opening", path)(source).into()),
    }
}

/// Opens an existing database for reading only: nothing is created,
/// migrated or moved, and a damaged file is reported, not touched. SQLite may
/// still create the `-shm` and `-wal` companions of a WAL database, which
/// its readers need.
pub async fn open_read_only(path: &Path) -> Result<SqlitePool, OpenError> {
    let (mut conn, options) = connect_read_only(path).await?;
    let schema_ok = schema_is_current(&mut conn).await;
    let _ = conn.close().await;
    let sqlx_err = |source| OpenError::ReadOnly {
        path: path.to_owned(),
        source,
    };
    if !schema_ok.map_err(sqlx_err)? {
        return Err(OpenError::OldSchema {
            path: path.to_owned(),
        });
    }
    SqlitePoolOptions::new()
        .max_connections(READERS)
        .test_before_acquire(false)
        .connect_with(options)
        .await
        .map_err(sqlx_err)
}

/// One read-only connection to an existing, healthy file, and the options
/// that made it.
async fn connect_read_only(
    path: &Path,
) -> Result<(SqliteConnection, SqliteConnectOptions), OpenError> {
    if !exists_as_file(path)? {
        return Err(OpenError::Missing {
            path: path.to_owned(),
        });
    }
    // No journal_mode or other writing pragma: a WAL file stays WAL, any
    // other stays as it is.
    let options = SqliteConnectOptions::new()
        .filename(path)
        .read_only(true)
        .create_if_missing(false)
        .busy_timeout(BUSY_TIMEOUT)
        .disable_statement_logging();
    let classify = |e: Checked| match e {
        Checked::Corrupt(reason) => OpenError::Corrupt {
            path: path.to_owned(),
            reason,
        },
        Checked::Other(StoreError::Database(source)) => OpenError::ReadOnly {
            path: path.to_owned(),
            source,
        },
        Checked::Other(e) => e.into(),
    };
    // A read-only connection to a file whose header says WAL creates the
    // `-wal` and `-shm` companions, even when the pages turn out damaged.
    // With no `-wal` the main file holds everything, so look at it alone
    // first ("immutable": no companions, no locks) and leave a damaged file
    // without new neighbours.
    let conn = if companion(path, "-wal").exists() {
        connect_checked(options.clone(), Check::Pages)
            .await
            .map_err(classify)?
    } else {
        let conn = connect_checked(options.clone().immutable(true), Check::Pages)
            .await
            .map_err(classify)?;
        let _ = conn.close().await;
        connect_checked(options.clone(), Check::Done)
            .await
            .map_err(classify)?
    };
    Ok((conn, options))
}

/// `path` with `suffix` appended to its last component (`-wal`,
/// `.corrupt-STAMP`), byte for byte: `display()` would mangle a file name
/// that is not UTF-8.
fn companion(path: &Path, suffix: &str) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(suffix);
    PathBuf::from(name)
}

/// Whether every migration has been applied: a read-only open cannot apply
/// them, and the queries assume the current schema.
async fn schema_is_current(conn: &mut SqliteConnection) -> Result<bool, sqlx::Error> {
    let has_table: i64 = sqlx::query_scalar(
        "SELECT COUNT(*) FROM sqlite_master WHERE type = 'table' AND name = '_sqlx_migrations'",
    )
    .fetch_one(&mut *conn)
    .await?;
    if has_table == 0 {
        return Ok(false);
    }
    let applied: Vec<i64> =
        sqlx::query_scalar("SELECT version FROM _sqlx_migrations WHERE success")
            .fetch_all(&mut *conn)
            .await?;
    Ok(MIGRATOR.iter().all(|m| applied.contains(&m.version)))
}

/// Whether [`open_writable`] may create a missing file and its directory.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Create {
    Yes,
    No,
}

/// Whether a connection should read every page first (`PRAGMA
/// quick_check`), or a connection made just before already did.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Check {
    Pages,
    Done,
}

/// Creates the directory and file if needed (and allowed), checks the file
/// (unless `check` says that was done) and migrates it. A damaged file is reported as [`Checked::Corrupt`] for
/// the caller to decide about.
async fn open_writable(
    path: &Path,
    create: Create,
    check: Check,
) -> Result<(SqliteConnection, SqlitePool), Checked> {
    if create == Create::Yes {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            create_private_dir(dir).map_err(Checked::Other)?;
        }
        create_private_file(path).map_err(Checked::Other)?;
    }
    let mut conn = connect_checked(
        options(path).create_if_missing(create == Create::Yes),
        check,
    )
    .await?;
    let other = |e: StoreError| Checked::Other(e);
    MIGRATOR.run(&mut conn).await.map_err(|e| other(e.into()))?;
    let read = SqlitePoolOptions::new()
        .max_connections(READERS)
        // The default pings each connection on checkout: a second round
        // trip to the SQLite thread for every Lookup.
        .test_before_acquire(false)
        .min_connections(1)
        // sqlx's defaults (close after 10 min idle, replace after 30 min)
        // run a reaper task that would wake an idle service for nothing.
        .idle_timeout(None)
        .max_lifetime(None)
        .connect_with(options(path).read_only(true))
        .await
        .map_err(|e| other(e.into()))?;
    Ok((conn, read))
}

enum Checked {
    Corrupt(String),
    Other(StoreError),
}

async fn connect_checked(
    options: SqliteConnectOptions,
    check: Check,
) -> Result<SqliteConnection, Checked> {
    let classify = |e: sqlx::Error| match corruption_reason(&e) {
        Some(reason) => Checked::Corrupt(reason),
        None => Checked::Other(e.into()),
    };
    let mut conn = options.connect().await.map_err(classify)?;
    if check == Check::Done {
        return Ok(conn);
    }
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

/// What a damaged database's name gets after it: `.corrupt-STAMP` (Unix
/// seconds), then `.N` if that name is taken.
const MOVED_ASIDE: &str = ".corrupt-";

/// The files [`open`] moved aside from `db` (not their -wal and -shm),
/// oldest first: for tools that explain a service that would not start.
pub fn moved_aside(db: &Path) -> Vec<PathBuf> {
    let (Some(dir), Some(name)) = (db.parent(), db.file_name()) else {
        return Vec::new();
    };
    let mut prefix = name.to_owned();
    prefix.push(MOVED_ASIDE);
    let prefix = prefix.as_encoded_bytes();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut found: Vec<PathBuf> = entries
        .flatten()
        .map(|e| e.file_name())
        .filter(|n| {
            let n = n.as_encoded_bytes();
            n.starts_with(prefix) && !n.ends_with(b"-wal") && !n.ends_with(b"-shm")
        })
        .map(|n| dir.join(n))
        .collect();
    found.sort();
    found
}

fn move_aside(path: &Path, reason: String) -> StoreError {
    let stamp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or_default();
    let mut moved_to = companion(path, &format!("{MOVED_ASIDE}{stamp}"));
    let mut n = 1;
    while moved_to.exists() {
        moved_to = companion(path, &format!("{MOVED_ASIDE}{stamp}.{n}"));
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
        let from = companion(path, suffix);
        if from.exists() {
            let to = companion(&moved_to, suffix);
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
