//! The store's API: reads straight from the read pool, writes through the
//! writer task.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use porthole_permission_store_client::{HistoryFilter, HistoryRecord};
use sqlx::{Row, SqliteConnection, SqlitePool};
use tokio::sync::{mpsc, oneshot};

use crate::cache::Cache;
use crate::data::Data;
use crate::error::StoreError;
use crate::model::{Change, Entry, Grant, validate_table};
use crate::open::OpenError;
use crate::writer::{self, Activity, Author, Op, Reply, Request, now_secs};

/// A handle to an open store. Cheap to clone; the writer stops when the last
/// handle is dropped.
#[derive(Clone)]
pub struct Store {
    read: SqlitePool,
    cache: Arc<Cache>,
    writer: mpsc::UnboundedSender<Request>,
    /// Requests queued and not yet answered; while any are, reads go through
    /// the queue too.
    pending: Arc<AtomicUsize>,
    activity: Arc<Activity>,
    path: PathBuf,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").field("path", &self.path).finish()
    }
}

/// Reads one entry with its live (unexpired) grants, in one query: Lookup is
/// the hot path, and each statement costs a round trip to sqlx's worker.
pub(crate) async fn load_entry(
    conn: &mut SqliteConnection,
    table: &str,
    id: &str,
    now: i64,
) -> Result<Option<Entry>, StoreError> {
    let rows = sqlx::query(
        "SELECT e.data, g.app, g.perms, g.expires FROM entries e \
         LEFT JOIN grants g ON g.tbl = e.tbl AND g.id = e.id AND (g.expires IS NULL OR g.expires > ?3) \
         WHERE e.tbl = ?1 AND e.id = ?2",
    )
    .bind(table)
    .bind(id)
    .bind(now)
    .fetch_all(&mut *conn)
    .await?;
    let Some(first) = rows.first() else {
        return Ok(None);
    };
    let mut entry = Entry::new(Data::from_bytes(first.get(0)));
    for row in &rows {
        if let Some(app) = row.get::<Option<String>, _>(1) {
            entry.apps.insert(app, grant_from(row.get(2), row.get(3))?);
        }
    }
    Ok(Some(entry))
}

pub(crate) fn grant_from(perms: String, expires: Option<i64>) -> Result<Grant, StoreError> {
    let permissions = serde_json::from_str(&perms).map_err(|e| {
        StoreError::BadData(format!("stored permissions are not a string list: {e}"))
    })?;
    Ok(Grant {
        permissions,
        expires,
    })
}

impl Store {
    /// Opens the database at `path` and starts its writer task (on the
    /// current tokio runtime).
    pub async fn open(path: &Path) -> Result<Self, StoreError> {
        let (conn, read) = crate::open::open(path).await?;
        Ok(Self::start(path, conn, read))
    }

    /// Like [`Store::open`], but a damaged file is left where it is and the
    /// open fails: for tools (permctl) that write without the service. Only
    /// the service moves a database aside, at its start.
    pub async fn open_leaving_corrupt(path: &Path) -> Result<Self, OpenError> {
        let (conn, read) = crate::open::open_leaving_corrupt(path).await?;
        Ok(Self::start(path, conn, read))
    }

    /// Like [`Store::open_leaving_corrupt`], but a missing file is
    /// [`OpenError::Missing`] and nothing is created: for permctl's revoke
    /// and reset, which have nothing to remove from a store that does not
    /// exist.
    pub async fn open_existing(path: &Path) -> Result<Self, OpenError> {
        let (conn, read) = crate::open::open_existing(path).await?;
        Ok(Self::start(path, conn, read))
    }

    /// Opens an existing database for reading only, as permctl's read
    /// commands do: nothing is created, migrated or moved. There is no
    /// writer; a write fails with [`StoreError::WriterGone`].
    pub async fn open_read_only(path: &Path) -> Result<Self, OpenError> {
        let read = crate::open::open_read_only(path).await?;
        // The receiver is dropped at once, so a write fails instead of
        // waiting for a writer that never comes.
        let (writer, _) = mpsc::unbounded_channel();
        Ok(Self {
            read,
            cache: Arc::new(Cache::default()),
            writer,
            pending: Arc::new(AtomicUsize::new(0)),
            activity: Arc::new(Activity::default()),
            path: path.to_owned(),
        })
    }

    fn start(path: &Path, conn: SqliteConnection, read: SqlitePool) -> Self {
        // Unbounded so that queueing never awaits (order is decided at the
        // send); the bus bounds a client's outstanding calls.
        let (tx, rx) = mpsc::unbounded_channel();
        let cache = Arc::new(Cache::default());
        let pending = Arc::new(AtomicUsize::new(0));
        let activity = Arc::new(Activity::default());
        activity.touch();
        tokio::spawn(writer::run(
            conn,
            rx,
            cache.clone(),
            pending.clone(),
            activity.clone(),
        ));
        Self {
            read,
            cache,
            writer: tx,
            pending,
            activity,
            path: path.to_owned(),
        }
    }

    /// Resolves when another process has changed the database (noticed
    /// while the store is in use).
    pub async fn changed_elsewhere(&self) {
        self.activity.foreign_change.notified().await
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Queues a request without awaiting anything, so requests queue in
    /// the order the calls arrived.
    fn submit(&self, op: Op, caller: Author) -> oneshot::Receiver<Result<Reply, StoreError>> {
        let (reply, rx) = oneshot::channel();
        self.activity.touch();
        self.pending.fetch_add(1, Ordering::SeqCst);
        if self.writer.send(Request { op, caller, reply }).is_err() {
            self.pending.fetch_sub(1, Ordering::SeqCst);
        }
        rx
    }

    async fn ask(&self, op: Op, caller: Author) -> Result<Reply, StoreError> {
        let rx = self.submit(op, caller);
        rx.await.map_err(|_| StoreError::WriterGone)?
    }

    async fn write(&self, op: Op, caller: impl Into<Author>) -> Result<Vec<Change>, StoreError> {
        match self.ask(op, caller.into()).await? {
            Reply::Changes(c) => Ok(c),
            other => unreachable!("a write answered {other:?}"),
        }
    }

    fn queue_busy(&self) -> bool {
        self.pending.load(Ordering::SeqCst) > 0
    }

    async fn one(&self, op: Op, caller: impl Into<Author>) -> Result<Change, StoreError> {
        let mut changes = self.write(op, caller).await?;
        Ok(changes
            .pop()
            .expect("single-id writes report exactly one change"))
    }

    // ---- reads ----------------------------------------------------------

    /// Upstream `Lookup`: NotFound for a missing id.
    pub async fn lookup(&self, table: &str, id: &str) -> Result<Entry, StoreError> {
        validate_table(table)?;
        let now = now_secs();
        self.activity.touch();
        if self.queue_busy() {
            return match self
                .ask(
                    Op::Lookup {
                        table: table.into(),
                        id: id.into(),
                    },
                    Author::from(""),
                )
                .await?
            {
                Reply::Entry(Some(e)) => Ok(e),
                Reply::Entry(None) => Err(StoreError::NoEntry(id.to_owned())),
                other => unreachable!("Lookup answered {other:?}"),
            };
        }
        let entry = match self.cache.get(table, id) {
            Ok(entry) => entry,
            Err(generation) => {
                let mut conn = self.read.acquire().await?;
                let entry = load_entry(&mut conn, table, id, now)
                    .await?
                    .ok_or_else(|| StoreError::NoEntry(id.to_owned()))?;
                let entry = Arc::new(entry);
                self.cache
                    .insert_if_current(generation, table, id, entry.clone());
                entry
            }
        };
        let mut entry = Entry::clone(&entry);
        entry
            .apps
            .retain(|_, g| g.expires.is_none_or(|at| at > now));
        Ok(entry)
    }

    /// Reads entries into the cache in id order until it is full, so
    /// Lookups are answered from memory from the start. Runs beside normal
    /// service; a page that raced a write is read again. Returns how many
    /// entries were cached.
    pub async fn warm_cache(&self) -> Result<usize, StoreError> {
        const PAGE: i64 = 512;
        let mut after = (String::new(), String::new());
        let mut cached = 0;
        loop {
            let generation = self.cache.generation();
            let rows = sqlx::query(
                "WITH page AS (SELECT tbl, id, data FROM entries WHERE (tbl, id) > (?1, ?2) ORDER BY tbl, id LIMIT ?3) \
                 SELECT p.tbl, p.id, p.data, g.app, g.perms, g.expires FROM page p \
                 LEFT JOIN grants g ON g.tbl = p.tbl AND g.id = p.id AND (g.expires IS NULL OR g.expires > ?4) \
                 ORDER BY p.tbl, p.id",
            )
            .bind(&after.0)
            .bind(&after.1)
            .bind(PAGE)
            .bind(now_secs())
            .fetch_all(&self.read)
            .await?;
            if rows.is_empty() {
                return Ok(cached);
            }
            let mut page: Vec<(String, String, Entry)> = Vec::new();
            for row in &rows {
                let (table, id): (String, String) = (row.get(0), row.get(1));
                if page.last().is_none_or(|(t, i, _)| *t != table || *i != id) {
                    page.push((table, id, Entry::new(Data::from_bytes(row.get(2)))));
                }
                if let Some(app) = row.get::<Option<String>, _>(3) {
                    let entry = &mut page.last_mut().expect("pushed above").2;
                    entry.apps.insert(app, grant_from(row.get(4), row.get(5))?);
                }
            }
            let last = page
                .last()
                .map(|(t, i, _)| (t.clone(), i.clone()))
                .expect("rows were not empty");
            let n = page.len();
            let page = page
                .into_iter()
                .map(|(t, i, e)| (t, i, Arc::new(e)))
                .collect();
            match self.cache.insert_page(generation, page) {
                Ok(()) => {
                    cached += n;
                    after = last;
                }
                Err(true) => continue,
                Err(false) => return Ok(cached),
            }
        }
    }

    /// Upstream `GetPermission`: `[]` for an app without a grant.
    pub async fn get_permission(
        &self,
        table: &str,
        id: &str,
        app: &str,
    ) -> Result<Vec<String>, StoreError> {
        let entry = self.lookup(table, id).await?;
        Ok(entry
            .apps
            .get(app)
            .map(|g| g.permissions.clone())
            .unwrap_or_default())
    }

    /// Upstream `List`: ids of a table, empty for a table never used.
    pub async fn list(&self, table: &str) -> Result<Vec<String>, StoreError> {
        validate_table(table)?;
        if self.queue_busy() {
            return match self
                .ask(
                    Op::List {
                        table: table.into(),
                    },
                    Author::from(""),
                )
                .await?
            {
                Reply::Ids(ids) => Ok(ids),
                other => unreachable!("List answered {other:?}"),
            };
        }
        let mut conn = self.read.acquire().await?;
        writer::list_ids(&mut conn, table).await
    }

    /// Every table that holds at least one id, with its number of ids.
    pub async fn tables(&self) -> Result<Vec<(String, u32)>, StoreError> {
        let rows: Vec<(String, i64)> =
            sqlx::query_as("SELECT tbl, COUNT(*) FROM entries GROUP BY tbl ORDER BY tbl")
                .fetch_all(&self.read)
                .await?;
        Ok(rows.into_iter().map(|(t, n)| (t, n as u32)).collect())
    }

    /// All entries of a table with their grants, ordered by id.
    pub async fn entries(&self, table: &str) -> Result<Vec<(String, Entry)>, StoreError> {
        validate_table(table)?;
        let ids = sqlx::query("SELECT id, data FROM entries WHERE tbl = ? ORDER BY id")
            .bind(table)
            .fetch_all(&self.read)
            .await?;
        let grants = sqlx::query(
            "SELECT id, app, perms, expires FROM grants WHERE tbl = ? AND (expires IS NULL OR expires > ?)",
        )
        .bind(table)
        .bind(now_secs())
        .fetch_all(&self.read)
        .await?;
        let mut out: BTreeMap<String, Entry> = ids
            .into_iter()
            .map(|r| {
                (
                    r.get::<String, _>(0),
                    Entry::new(Data::from_bytes(r.get(1))),
                )
            })
            .collect();
        for r in grants {
            let id: String = r.get(0);
            if let Some(e) = out.get_mut(&id) {
                e.apps.insert(r.get(1), grant_from(r.get(2), r.get(3))?);
            }
        }
        Ok(out.into_iter().collect())
    }

    /// Every live grant of one app across all tables: (table, id, grant).
    pub async fn app_grants(&self, app: &str) -> Result<Vec<(String, String, Grant)>, StoreError> {
        let rows = sqlx::query(
            "SELECT tbl, id, perms, expires FROM grants WHERE app = ? AND (expires IS NULL OR expires > ?) ORDER BY tbl, id",
        )
        .bind(app)
        .bind(now_secs())
        .fetch_all(&self.read)
        .await?;
        rows.into_iter()
            .map(|r| Ok((r.get(0), r.get(1), grant_from(r.get(2), r.get(3))?)))
            .collect()
    }

    /// Whether any table ever held a grant for `app` (live or in history).
    pub async fn app_known(&self, app: &str) -> Result<bool, StoreError> {
        let n: i64 = sqlx::query_scalar(
            "SELECT (SELECT COUNT(*) FROM grants WHERE app = ?1) + (SELECT COUNT(*) FROM history WHERE app = ?1)",
        )
        .bind(app)
        .fetch_one(&self.read)
        .await?;
        Ok(n > 0)
    }

    /// The audit history, newest first. An absent limit, or 0, returns
    /// every record that passes the filter.
    pub async fn history(&self, q: &HistoryFilter) -> Result<Vec<HistoryRecord>, StoreError> {
        let limit = match q.limit {
            None => i64::MAX,
            Some(l) if l.0 == 0 => i64::MAX,
            Some(l) => i64::from(l.0),
        };
        let rows = sqlx::query(
            "SELECT seq, time_us, action, tbl, id, app, old, new, caller FROM history \
             WHERE (?1 IS NULL OR tbl = ?1) AND (?2 IS NULL OR app = ?2) ORDER BY seq DESC LIMIT ?3",
        )
        .bind(&q.table)
        .bind(&q.app)
        .bind(limit)
        .fetch_all(&self.read)
        .await?;
        let list = |s: Option<String>| s.and_then(|s| serde_json::from_str::<Vec<String>>(&s).ok());
        Ok(rows
            .into_iter()
            .map(|r| HistoryRecord {
                seq: r.get(0),
                time: r.get(1),
                action: r.get(2),
                table: r.get(3),
                id: r.get(4),
                app: r.get(5),
                old: list(r.get(6)),
                new: list(r.get(7)),
                caller: r.get(8),
            })
            .collect())
    }

    /// The earliest expiry still pending, so the service knows when to prune.
    pub async fn next_expiry(&self) -> Result<Option<i64>, StoreError> {
        Ok(
            sqlx::query_scalar("SELECT MIN(expires) FROM grants WHERE expires IS NOT NULL")
                .fetch_one(&self.read)
                .await?,
        )
    }

    // ---- writes (each answers after its commit) -------------------------

    /// Upstream `Set`: replaces data and every app's grant.
    pub async fn set(
        &self,
        table: &str,
        create: bool,
        id: &str,
        apps: BTreeMap<String, Vec<String>>,
        data: Data,
        caller: impl Into<Author>,
    ) -> Result<Change, StoreError> {
        validate_table(table)?;
        self.one(
            Op::Set {
                table: table.into(),
                id: id.into(),
                create,
                apps,
                data,
            },
            caller,
        )
        .await
    }

    /// Upstream `SetValue`: replaces only the data.
    pub async fn set_value(
        &self,
        table: &str,
        create: bool,
        id: &str,
        data: Data,
        caller: impl Into<Author>,
    ) -> Result<Change, StoreError> {
        validate_table(table)?;
        self.one(
            Op::SetValue {
                table: table.into(),
                id: id.into(),
                create,
                data,
            },
            caller,
        )
        .await
    }

    /// Upstream `SetPermission`, with an optional expiry (Unix seconds).
    #[allow(clippy::too_many_arguments)]
    pub async fn set_permission(
        &self,
        table: &str,
        create: bool,
        id: &str,
        app: &str,
        permissions: Vec<String>,
        expires: Option<i64>,
        caller: impl Into<Author>,
    ) -> Result<Change, StoreError> {
        validate_table(table)?;
        let grant = Grant {
            permissions,
            expires,
        };
        self.one(
            Op::SetPermission {
                table: table.into(),
                id: id.into(),
                create,
                app: app.into(),
                grant,
            },
            caller,
        )
        .await
    }

    /// Upstream `DeletePermission`: the id stays, possibly with no apps.
    pub async fn delete_permission(
        &self,
        table: &str,
        id: &str,
        app: &str,
        caller: impl Into<Author>,
    ) -> Result<Change, StoreError> {
        validate_table(table)?;
        self.one(
            Op::DeletePermission {
                table: table.into(),
                id: id.into(),
                app: app.into(),
            },
            caller,
        )
        .await
    }

    /// Takes `permissions` (all of them, or with an empty list the whole
    /// grant) away from `app` on `id` as one write. Fails with
    /// [`StoreError::NotFound`], changing nothing,
    /// when the id, the grant or one of the permissions is missing.
    pub async fn revoke_permissions(
        &self,
        table: &str,
        id: &str,
        app: &str,
        permissions: Vec<String>,
        caller: impl Into<Author>,
    ) -> Result<Change, StoreError> {
        validate_table(table)?;
        self.one(
            Op::RevokePermissions {
                table: table.into(),
                id: id.into(),
                app: app.into(),
                permissions,
            },
            caller,
        )
        .await
    }

    /// Upstream `Delete`.
    pub async fn delete(
        &self,
        table: &str,
        id: &str,
        caller: impl Into<Author>,
    ) -> Result<Change, StoreError> {
        validate_table(table)?;
        self.one(
            Op::Delete {
                table: table.into(),
                id: id.into(),
            },
            caller,
        )
        .await
    }

    /// Removes every grant of `app` in every table (`flatpak permission-reset`).
    pub async fn reset_app(
        &self,
        app: &str,
        caller: impl Into<Author>,
    ) -> Result<Vec<Change>, StoreError> {
        self.write(Op::ResetApp { app: app.into() }, caller).await
    }

    /// Deletes grants whose expiry has passed; returns the ids touched.
    pub async fn prune_expired(&self) -> Result<Vec<Change>, StoreError> {
        self.write(Op::PruneExpired, Author::from("")).await
    }
}
