//! The writer task: the only code that changes the database.
//!
//! Requests queue on a channel. The task takes whatever is queued (up to
//! [`BATCH`]) and applies it as one transaction (group commit): one query
//! reads every id the batch names, each write changes that in-memory copy
//! ([`crate::overlay`]), a few statements write the changed ids and the
//! history rows back, and one COMMIT makes them durable. With
//! `synchronous=FULL` a burst of writes shares one fsync, and each caller
//! hears back only after the commit, so only after its write is on disk.
//! One writer also gives upstream's ordering: writes apply in arrival order.

use std::collections::BTreeMap;

use sqlx::query::Query;
use sqlx::sqlite::SqliteArguments;
use sqlx::{Row, Sqlite, SqliteConnection};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicUsize, Ordering};

use tokio::sync::{Notify, mpsc, oneshot};

use crate::cache::Cache;
use crate::overlay::{HistoryRow, Overlay, Slot, perms_json};

use crate::data::Data;
use crate::error::StoreError;
use crate::model::{Change, Entry, Grant};

/// Most writes committed in one transaction.
const BATCH: usize = 256;

#[derive(Debug)]
pub(crate) enum Op {
    Set {
        table: String,
        id: String,
        create: bool,
        apps: BTreeMap<String, Vec<String>>,
        data: Data,
    },
    SetValue {
        table: String,
        id: String,
        create: bool,
        data: Data,
    },
    SetPermission {
        table: String,
        id: String,
        create: bool,
        app: String,
        grant: Grant,
    },
    DeletePermission {
        table: String,
        id: String,
        app: String,
    },
    Delete {
        table: String,
        id: String,
    },
    RevokePermissions {
        table: String,
        id: String,
        app: String,
        permissions: Vec<String>,
    },
    /// Reads that arrive while writes are queued go through the queue, so a
    /// client that sent a write and then a read sees its write (upstream
    /// answers everything in arrival order).
    Lookup {
        table: String,
        id: String,
    },
    List {
        table: String,
    },
    ResetApp {
        app: String,
    },
    PruneExpired,
}

impl Op {
    /// The one id this request reads or writes, if it names one.
    fn key(&self) -> Option<(&str, &str)> {
        match self {
            Op::Set { table, id, .. }
            | Op::SetValue { table, id, .. }
            | Op::SetPermission { table, id, .. }
            | Op::DeletePermission { table, id, .. }
            | Op::Delete { table, id }
            | Op::RevokePermissions { table, id, .. }
            | Op::Lookup { table, id } => Some((table, id)),
            Op::List { .. } | Op::ResetApp { .. } | Op::PruneExpired => None,
        }
    }
}

pub(crate) struct Request {
    pub op: Op,
    pub caller: Author,
    pub reply: oneshot::Sender<Result<Reply, StoreError>>,
}

/// What the writer answers.
#[derive(Debug)]
pub(crate) enum Reply {
    Changes(Vec<Change>),
    Entry(Option<Entry>),
    Ids(Vec<String>),
}

/// Who asked for a write, as the history records it: an app id, empty for
/// the host; or the promise of it.
///
/// A D-Bus handler must queue its write before it awaits anything, or two
/// calls from one client could reach the queue in the wrong order; so a
/// caller not yet identified is looked up beside the queue, and the writer
/// waits for the answer only when it applies that write. A caller that
/// cannot be identified has its write refused ([`StoreError::Unidentified`]):
/// nothing is written in its name.
#[derive(Debug)]
pub enum Author {
    Known(String),
    Pending(porthole_service::PendingCaller),
    Refused {
        sender: Option<String>,
        reason: String,
    },
}

impl From<&str> for Author {
    fn from(s: &str) -> Self {
        Author::Known(s.to_owned())
    }
}

impl Author {
    async fn resolve(&mut self) -> Result<String, StoreError> {
        if let Author::Pending(_) = self {
            let Author::Pending(pending) = std::mem::replace(self, Author::Known(String::new()))
            else {
                unreachable!("matched above")
            };
            *self = match pending.resolve().await {
                porthole_service::Caller::Host => Author::Known(String::new()),
                porthole_service::Caller::App { app_id, .. } => Author::Known(app_id.to_string()),
                porthole_service::Caller::Unidentified { sender, reason } => {
                    Author::Refused { sender, reason }
                }
            };
        }
        match self {
            Author::Known(s) => Ok(s.clone()),
            Author::Refused { sender, reason } => Err(StoreError::Unidentified {
                sender: sender.clone(),
                reason: reason.clone(),
            }),
            Author::Pending(_) => unreachable!("resolved above"),
        }
    }
}

pub(crate) fn now_secs() -> i64 {
    now_us() / 1_000_000
}

pub(crate) fn now_us() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_micros() as i64)
        .unwrap_or_default()
}

/// How often the writer asks SQLite whether another process committed,
/// while the store is in use.
const FOREIGN_WRITE_CHECK: std::time::Duration = std::time::Duration::from_secs(1);

/// Seconds without a call after which the store counts as idle: the cache is
/// dropped and nothing wakes the process until the next call.
const IDLE_AFTER: i64 = 10;

/// When the store was last used. A desktop daemon should not wake up while
/// nobody uses it, so the foreign-write check runs only while calls come in;
/// going idle empties the cache, so nothing stale can be served after a
/// foreign write made while we slept.
#[derive(Default)]
pub(crate) struct Activity {
    last: AtomicI64,
    idle: AtomicBool,
    wake: Notify,
    /// Signalled when another process changed the database.
    pub foreign_change: Notify,
}

impl Activity {
    /// Records a call; wakes the writer if it was idle. Called before a
    /// call reads the cache, so a read never fills the cache unwatched.
    pub fn touch(&self) {
        self.last.store(now_secs(), Ordering::SeqCst);
        if self.idle.swap(false, Ordering::SeqCst) {
            self.wake.notify_one();
        }
    }

    fn quiet(&self) -> bool {
        now_secs() - self.last.load(Ordering::SeqCst) > IDLE_AFTER
    }
}

pub(crate) async fn run(
    mut conn: SqliteConnection,
    mut rx: mpsc::UnboundedReceiver<Request>,
    cache: Arc<Cache>,
    pending: Arc<AtomicUsize>,
    activity: Arc<Activity>,
) {
    let mut batch = Vec::with_capacity(BATCH);
    // data_version on this connection moves only when another connection
    // (another process: our readers never write) commits.
    let mut version = data_version(&mut conn).await;
    let mut check_foreign = async |conn: &mut SqliteConnection| {
        let now = data_version(conn).await;
        if now != version {
            tracing::info!("another process changed the database; dropping cached entries");
            cache.clear();
            activity.foreign_change.notify_one();
            version = now;
        }
    };
    // One clock for the whole loop: a sleep made anew each turn would be
    // put off for as long as writes kept coming less than a second apart,
    // and the cache would serve another process's revoked grants meanwhile.
    let mut tick = tokio::time::interval(FOREIGN_WRITE_CHECK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let idle = activity.idle.load(Ordering::SeqCst);
        tokio::select! {
            n = rx.recv_many(&mut batch, BATCH) => {
                if n == 0 {
                    break;
                }
                commit_batch(&mut conn, &mut batch, &cache, &pending).await;
            }
            _ = tick.tick(), if !idle => {
                check_foreign(&mut conn).await;
                if activity.quiet() {
                    activity.idle.store(true, Ordering::SeqCst);
                    // A call that came in meanwhile either saw idle=true and
                    // woke us, or moved `last` so that we stay awake.
                    if activity.quiet() {
                        cache.clear();
                    } else {
                        activity.idle.store(false, Ordering::SeqCst);
                    }
                }
            }
            _ = activity.wake.notified(), if idle => check_foreign(&mut conn).await,
        }
    }
    tracing::debug!("writer: all senders gone, closing");
    let _ = sqlx::Connection::close(conn).await;
}

async fn data_version(conn: &mut SqliteConnection) -> i64 {
    sqlx::query_scalar("PRAGMA data_version")
        .fetch_one(&mut *conn)
        .await
        .unwrap_or(-1)
}

async fn commit_batch(
    conn: &mut SqliteConnection,
    batch: &mut Vec<Request>,
    cache: &Cache,
    pending: &AtomicUsize,
) {
    let mut results: Vec<Result<Reply, StoreError>> = Vec::with_capacity(batch.len());
    // Who made each write is settled before the database lock is taken: a
    // caller slow to identify (at most the service's identification
    // deadline) holds up the writes queued here behind its own, but never
    // other processes writing to the file.
    for req in batch.iter_mut() {
        if !matches!(req.op, Op::Lookup { .. } | Op::List { .. }) {
            let _settled_here = req.caller.resolve().await;
        }
    }
    let begin = sqlx::query("BEGIN IMMEDIATE").execute(&mut *conn).await;
    if let Err(e) = begin {
        let msg = e.to_string();
        for req in batch.drain(..) {
            pending.fetch_sub(1, Ordering::SeqCst);
            let _ = req.reply.send(Err(StoreError::CommitFailed(msg.clone())));
        }
        return;
    }
    let now = now_secs();
    let mut overlay = Overlay::default();
    // Every id the batch names, read in one query (a failure here is
    // reported by the first write that needs the id).
    let _read_on_demand = overlay
        .read(&mut *conn, batch.iter().filter_map(|r| r.op.key()))
        .await;
    // Set when writing the batch back failed part-way: the transaction
    // holds part of the batch, so nothing of it may commit.
    let mut broken: Option<String> = None;
    for req in batch.iter_mut() {
        if let Some(e) = &broken {
            results.push(Err(StoreError::CommitFailed(e.clone())));
            continue;
        }
        let result = match &req.op {
            // Reads inside the transaction see the writes queued before them.
            Op::Lookup { table, id } => overlay
                .visible(&mut *conn, table, id, now)
                .await
                .map(Reply::Entry),
            Op::List { table } => match overlay.flush(&mut *conn).await {
                Ok(()) => list_ids(conn, table).await.map(Reply::Ids),
                Err(e) => {
                    broken = Some(e.to_string());
                    Err(StoreError::CommitFailed(e.to_string()))
                }
            },
            op => match req.caller.resolve().await {
                Ok(caller) => {
                    let mut tx = Tx {
                        conn: &mut *conn,
                        overlay: &mut overlay,
                        caller: &caller,
                        now_us: now_us(),
                        broken: &mut broken,
                    };
                    apply(&mut tx, op).await.map(Reply::Changes)
                }
                Err(refused) => Err(refused),
            },
        };
        results.push(result);
    }
    let commit = match broken {
        Some(e) => Err(e),
        None => match overlay.flush(&mut *conn).await {
            Ok(()) => sqlx::query("COMMIT")
                .execute(&mut *conn)
                .await
                .map(drop)
                .map_err(|e| e.to_string()),
            Err(e) => Err(e.to_string()),
        },
    };
    if let Err(e) = &commit {
        tracing::error!("commit failed: {e}");
        let _ = sqlx::query("ROLLBACK").execute(&mut *conn).await;
    }
    // The cache learns of the commit before any caller hears of it.
    match &commit {
        Ok(()) => {
            let changes: Vec<Change> = results
                .iter()
                .filter_map(|r| match r {
                    Ok(Reply::Changes(c)) => Some(c.iter().cloned()),
                    _ => None,
                })
                .flatten()
                .collect();
            cache.apply(&changes);
        }
        Err(_) => cache.clear(),
    }
    for (req, result) in batch.drain(..).zip(results) {
        let result = match (&commit, result) {
            (Err(e), Ok(_)) => Err(StoreError::CommitFailed(e.clone())),
            (_, r) => r,
        };
        pending.fetch_sub(1, Ordering::SeqCst);
        let _ = req.reply.send(result);
    }
}

pub(crate) async fn list_ids(
    conn: &mut SqliteConnection,
    table: &str,
) -> Result<Vec<String>, StoreError> {
    Ok(
        sqlx::query_scalar("SELECT id FROM entries WHERE tbl = ? ORDER BY id")
            .bind(table)
            .fetch_all(&mut *conn)
            .await?,
    )
}

/// Applies one write to the batch's copy of the rows. A write that fails
/// (an id not found, say) has changed nothing: every check comes before the
/// first change.
async fn apply(tx: &mut Tx<'_>, op: &Op) -> Result<Vec<Change>, StoreError> {
    match op {
        Op::Lookup { .. } | Op::List { .. } => unreachable!("reads are answered in commit_batch"),
        Op::Set {
            table,
            id,
            create,
            apps,
            data,
        } => {
            let old = tx.load(table, id).await?;
            if old.is_none() && !create {
                return Err(StoreError::IdNotFound(id.clone()));
            }
            let old = old.unwrap_or_else(|| Entry::new(Data::empty()));
            tx.put_data(table, id, data, Some(&old.data)).await?;
            // An empty list is no grant at all, as upstream stores it.
            let apps: BTreeMap<&String, &Vec<String>> =
                apps.iter().filter(|(_, p)| !p.is_empty()).collect();
            for (app, grant) in &old.apps {
                if !apps.contains_key(app) {
                    tx.remove_grant(table, id, app, Some(grant), "revoke")
                        .await?;
                }
            }
            let mut entry = Entry::new(data.clone());
            for (app, perms) in apps {
                let grant = Grant {
                    permissions: perms.clone(),
                    expires: None,
                };
                tx.put_grant(table, id, app, &grant, old.apps.get(app))
                    .await?;
                entry.apps.insert(app.clone(), grant);
            }
            Ok(vec![changed(table, id, entry)])
        }
        Op::SetValue {
            table,
            id,
            create,
            data,
        } => {
            let mut entry = match tx.load(table, id).await? {
                Some(e) => e,
                None if *create => Entry::new(Data::empty()),
                None => return Err(StoreError::IdNotFound(id.clone())),
            };
            tx.put_data(table, id, data, Some(&entry.data)).await?;
            entry.data = data.clone();
            Ok(vec![changed(table, id, entry)])
        }
        Op::SetPermission {
            table,
            id,
            create,
            app,
            grant,
        } => {
            let mut entry = match tx.load(table, id).await? {
                Some(e) => e,
                None if *create => {
                    let e = Entry::new(Data::empty());
                    // The default value is no data change worth a history row.
                    tx.put_data(table, id, &e.data, Some(&e.data)).await?;
                    e
                }
                None => return Err(StoreError::IdNotFound(id.clone())),
            };
            if grant.permissions.is_empty() {
                // Upstream drops an app whose list becomes empty.
                if let Some(old) = entry.apps.remove(app) {
                    tx.remove_grant(table, id, app, Some(&old), "revoke")
                        .await?;
                }
            } else {
                tx.put_grant(table, id, app, grant, entry.apps.get(app))
                    .await?;
                entry.apps.insert(app.clone(), grant.clone());
            }
            Ok(vec![changed(table, id, entry)])
        }
        Op::DeletePermission { table, id, app } => {
            let mut entry = tx
                .load(table, id)
                .await?
                .ok_or_else(|| StoreError::NoEntry(id.clone()))?;
            if let Some(old) = entry.apps.remove(app) {
                tx.remove_grant(table, id, app, Some(&old), "revoke")
                    .await?;
            }
            Ok(vec![changed(table, id, entry)])
        }
        Op::RevokePermissions {
            table,
            id,
            app,
            permissions,
        } => {
            let mut entry = tx
                .load(table, id)
                .await?
                .ok_or_else(|| StoreError::NotFound(format!("no id {id:?} in table {table:?}")))?;
            let no_grant = |what: String| {
                StoreError::NotFound(format!("{app:?} {what} on {id:?} in table {table:?}"))
            };
            let old = entry
                .apps
                .get(app)
                .cloned()
                .ok_or_else(|| no_grant("has no grant".into()))?;
            if let Some(p) = permissions.iter().find(|p| !old.permissions.contains(p)) {
                return Err(no_grant(format!("does not hold {p:?}")));
            }
            let kept: Vec<String> = old
                .permissions
                .iter()
                .filter(|p| !permissions.is_empty() && !permissions.contains(p))
                .cloned()
                .collect();
            if kept.is_empty() {
                entry.apps.remove(app);
                tx.remove_grant(table, id, app, Some(&old), "revoke")
                    .await?;
            } else {
                let grant = Grant {
                    permissions: kept,
                    expires: old.expires,
                };
                tx.put_grant(table, id, app, &grant, Some(&old)).await?;
                entry.apps.insert(app.clone(), grant);
            }
            Ok(vec![changed(table, id, entry)])
        }
        Op::Delete { table, id } => {
            let mut entry = tx
                .load(table, id)
                .await?
                .ok_or_else(|| StoreError::NoEntry(id.clone()))?;
            for (app, grant) in &entry.apps {
                tx.history(
                    "revoke",
                    table,
                    id,
                    Some(app),
                    Some(&grant.permissions),
                    None,
                )
                .await?;
            }
            *tx.slot(table, id).await?.change() = None;
            tx.history("delete", table, id, None, None, None).await?;
            entry.apps.clear();
            Ok(vec![Change {
                table: table.clone(),
                id: id.clone(),
                deleted: true,
                entry,
            }])
        }
        Op::ResetApp { app } => {
            let select = sqlx::query(
                "SELECT tbl, id, app, perms FROM grants WHERE app = ? ORDER BY tbl, id",
            )
            .bind(app);
            tx.drop_grants(select, "revoke").await
        }
        Op::PruneExpired => {
            let select = sqlx::query(
                "SELECT tbl, id, app, perms FROM grants WHERE expires <= ? ORDER BY tbl, id, app",
            )
            .bind(now_secs());
            tx.drop_grants(select, "expire").await
        }
    }
}

fn changed(table: &str, id: &str, entry: Entry) -> Change {
    Change {
        table: table.to_owned(),
        id: id.to_owned(),
        deleted: false,
        entry,
    }
}

/// One write applied to the batch's copy of the rows, with who made it and
/// when.
struct Tx<'c> {
    conn: &'c mut SqliteConnection,
    overlay: &'c mut Overlay,
    caller: &'c str,
    now_us: i64,
    /// Set when writing the batch back (before a query that needs the
    /// database current) failed: the whole batch then fails.
    broken: &'c mut Option<String>,
}

impl Tx<'_> {
    /// The entry as a caller sees it: expired grants are absent.
    async fn load(&mut self, table: &str, id: &str) -> Result<Option<Entry>, StoreError> {
        self.overlay
            .visible(&mut *self.conn, table, id, self.now_us / 1_000_000)
            .await
    }

    async fn slot(&mut self, table: &str, id: &str) -> Result<&mut Slot, StoreError> {
        self.overlay.slot(&mut *self.conn, table, id).await
    }

    async fn put_data(
        &mut self,
        table: &str,
        id: &str,
        data: &Data,
        old: Option<&Data>,
    ) -> Result<(), StoreError> {
        let slot = self.slot(table, id).await?;
        match slot.change() {
            Some(entry) => entry.data = data.clone(),
            stored @ None => *stored = Some(Entry::new(data.clone())),
        }
        if old != Some(data) {
            self.history("data", table, id, None, None, None).await?;
        }
        Ok(())
    }

    async fn put_grant(
        &mut self,
        table: &str,
        id: &str,
        app: &str,
        grant: &Grant,
        old: Option<&Grant>,
    ) -> Result<(), StoreError> {
        let slot = self.slot(table, id).await?;
        let Some(entry) = slot.change() else {
            // The writes create the id before they grant on it; the
            // database's foreign key would refuse this too.
            return Err(StoreError::NoEntry(id.to_owned()));
        };
        entry.apps.insert(app.to_owned(), grant.clone());
        if old != Some(grant) {
            // Taking some permissions away is a revocation, though a list
            // remains.
            let narrowed = old.is_some_and(|o| {
                grant.permissions.len() < o.permissions.len()
                    && grant.permissions.iter().all(|p| o.permissions.contains(p))
            });
            let action = if narrowed { "revoke" } else { "grant" };
            let old = old.map(|g| g.permissions.as_slice());
            self.history(action, table, id, Some(app), old, Some(&grant.permissions))
                .await?;
        }
        Ok(())
    }

    async fn remove_grant(
        &mut self,
        table: &str,
        id: &str,
        app: &str,
        old: Option<&Grant>,
        action: &'static str,
    ) -> Result<(), StoreError> {
        let slot = self.slot(table, id).await?;
        if let Some(entry) = slot.change() {
            entry.apps.remove(app);
        }
        self.history(
            action,
            table,
            id,
            Some(app),
            old.map(|g| g.permissions.as_slice()),
            None,
        )
        .await
    }

    /// Removes the grants that `select` yields (table, id, app, stored
    /// permissions, ordered by table and id; expired ones included, for
    /// pruning) and reports one change per touched id.
    async fn drop_grants<'q>(
        &mut self,
        select: Query<'q, Sqlite, SqliteArguments<'q>>,
        action: &'static str,
    ) -> Result<Vec<Change>, StoreError> {
        // The query reads the database, which must hold the batch so far.
        if let Err(e) = self.overlay.flush(&mut *self.conn).await {
            *self.broken = Some(e.to_string());
            return Err(StoreError::CommitFailed(e.to_string()));
        }
        let rows: Vec<(String, String, String, String)> = select
            .fetch_all(&mut *self.conn)
            .await?
            .iter()
            .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3)))
            .collect();
        // Every id read before the first change: a failed read then
        // leaves nothing half done.
        self.overlay
            .read(
                &mut *self.conn,
                rows.iter().map(|(t, i, _, _)| (t.as_str(), i.as_str())),
            )
            .await?;
        let mut touched: Vec<(String, String)> = Vec::new();
        for (table, id, app, perms) in rows {
            let old = Grant {
                permissions: serde_json::from_str(&perms).unwrap_or_default(),
                expires: None,
            };
            self.remove_grant(&table, &id, &app, Some(&old), action)
                .await?;
            if touched.last() != Some(&(table.clone(), id.clone())) {
                touched.push((table, id));
            }
        }
        let mut changes = Vec::with_capacity(touched.len());
        for (table, id) in touched {
            if let Some(entry) = self.load(&table, &id).await? {
                changes.push(changed(&table, &id, entry));
            }
        }
        Ok(changes)
    }

    async fn history(
        &mut self,
        action: &'static str,
        table: &str,
        id: &str,
        app: Option<&str>,
        old: Option<&[String]>,
        new: Option<&[String]>,
    ) -> Result<(), StoreError> {
        self.overlay.record(HistoryRow {
            time_us: self.now_us,
            action,
            table: table.to_owned(),
            id: id.to_owned(),
            app: app.map(str::to_owned),
            old: old.map(perms_json),
            new: new.map(perms_json),
            caller: self.caller.to_owned(),
        });
        Ok(())
    }
}
