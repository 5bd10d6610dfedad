//! The documents kept in the permission store, through its D-Bus interface
//! only: the store stays the one writer of its database.
//!
//! - At start, [`load`] reads the whole `documents` table (our
//!   `ListEntries` in one call, or upstream's `List` and `Lookup` per id
//!   when the store is xdg-permission-store).
//! - Every change the portal makes goes through one [`Writer`] task, in the
//!   order the changes were made in memory. As upstream, a method replies
//!   once memory (and so the file system) has the change, without waiting
//!   for the store; the writer is drained at exit ([`Writer::flush`]), so a
//!   clean stop loses no write. Past [`BACKLOG_MAX`] queued writes a method
//!   waits for its own to be answered instead: callers faster than the
//!   store slow down rather than grow the queue without end.
//! - [`watch`] applies the store's `Changed` signals for the table (another
//!   process, such as `permctl`, revoking a grant) to the memory table. A
//!   signal for an id with writes of ours still in flight is an echo of an
//!   older state: it is skipped, and the id is read back once the last of
//!   our writes is answered, so a change made meanwhile by someone else is
//!   not lost and a grant never flaps. The reply to our write and the
//!   `Changed` it causes reach different tasks, so "in flight" alone would
//!   race (a revoked grant came back until the next echo): the store sends
//!   both on one connection, so their header serials give the order the
//!   store sent them in. A signal sent before the store answered our last
//!   write to that id is older than memory; instead of applying it, the id
//!   is read back.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use futures_util::StreamExt;
use porthole_permission_store_client::{PermissionStoreProxy, PortholeStoreProxy};
use tokio::sync::{mpsc, oneshot};

use crate::TABLE;
use crate::document::{Document, DocumentError};
use crate::permissions::Perms;

#[derive(Debug, thiserror::Error)]
pub enum BackingError {
    #[error("permission store: {0}")]
    Store(#[from] zbus::Error),
    #[error("document {id} in the permission store: {source}")]
    BadEntry {
        id: String,
        #[source]
        source: DocumentError,
    },
    #[error("the permission store writer has stopped")]
    WriterGone,
}

impl BackingError {
    /// Whether the store is simply not on the bus (not running and not
    /// activatable), as in upstream's own test harness, which starts the
    /// document portal alone.
    pub fn store_absent(&self) -> bool {
        matches!(self, BackingError::Store(zbus::Error::MethodError(name, _, _))
            if name.as_str() == "org.freedesktop.DBus.Error.ServiceUnknown"
                || name.as_str() == "org.freedesktop.DBus.Error.NameHasNoOwner")
    }
}

/// Waits until the store's name has an owner, then loads its documents
/// (for a service that started while the store was absent).
pub async fn load_when_present(
    conn: zbus::Connection,
) -> Result<Vec<(String, Document)>, BackingError> {
    let dbus = zbus::fdo::DBusProxy::new(&conn).await?;
    let mut owners = dbus
        .receive_name_owner_changed_with_args(&[(0, porthole_permission_store_client::BUS_NAME)])
        .await?;
    let name = zbus::names::BusName::try_from(porthole_permission_store_client::BUS_NAME)
        .map_err(|e| BackingError::Store(e.into()))?;
    let present = dbus
        .name_has_owner(name.clone())
        .await
        .map_err(|e| BackingError::Store(e.into()))?;
    if !present {
        while let Some(change) = owners.next().await {
            if change.args().is_ok_and(|a| a.new_owner.is_some()) {
                break;
            }
        }
    }
    load(&conn).await
}

/// Who hears about documents changed in the store by someone else.
pub trait Observer: Send + Sync + 'static {
    /// `id` is now `doc` in the store (None: deleted).
    fn store_changed(&self, id: &str, doc: Option<Document>);
    /// Whether memory already holds `doc` for `id` (an echo of our own
    /// latest write needs no reading back).
    fn holds(&self, id: &str, doc: Option<&Document>) -> bool;
}

/// One write to the store.
#[derive(Debug, Clone)]
pub enum Write {
    /// A new persistent document with its grants (`Set`, create).
    Create { id: String, doc: Document },
    /// One app's permissions on a document (`SetPermission`; empty removes).
    Perms {
        id: String,
        app: String,
        perms: Perms,
    },
    /// `Delete`.
    Delete { id: String },
    /// Nothing: answered once every write queued before it is answered.
    Flush,
}

impl Write {
    fn id(&self) -> &str {
        match self {
            Write::Create { id, .. } | Write::Perms { id, .. } | Write::Delete { id } => id,
            Write::Flush => "",
        }
    }
}

type Job = (Write, oneshot::Sender<Result<(), BackingError>>);

/// Ids with writes in flight, ids whose `Changed` was skipped meanwhile,
/// and the serial of the store's reply to our last answered write per id.
#[derive(Default)]
struct InFlight {
    pending: HashMap<String, usize>,
    skipped: HashSet<String>,
    answered: HashMap<String, u32>,
}

/// What to do with a `Changed` for an id (or a document read back).
#[derive(Debug, PartialEq, Eq)]
enum Verdict {
    /// Nothing: memory has it, or our writes in flight will read it back.
    Skip,
    /// Someone else's change, newer than our last write: apply it.
    Apply,
    /// Sent before the store answered our last write: older than memory,
    /// read the id back instead.
    Reread,
}

/// Writes queued and not yet answered past which a method waits for its
/// own: the queue's memory stays bounded (a few hundred KiB) whatever the
/// callers do, while the usual burst (a dialog's grants) never waits.
pub const BACKLOG_MAX: usize = 1024;

/// The queue of writes to the store; cheap to clone.
#[derive(Clone)]
pub struct Writer {
    tx: mpsc::UnboundedSender<Job>,
    in_flight: Arc<Mutex<InFlight>>,
    queued: Arc<AtomicUsize>,
}

impl Writer {
    /// Starts the writer task on `conn`.
    pub fn start(conn: &zbus::Connection, observer: Arc<dyn Observer>) -> Writer {
        let (tx, rx) = mpsc::unbounded_channel();
        let in_flight = Arc::new(Mutex::new(InFlight::default()));
        let queued = Arc::new(AtomicUsize::new(0));
        tokio::spawn(run_writer(
            conn.clone(),
            rx,
            in_flight.clone(),
            queued.clone(),
            observer,
        ));
        Writer {
            tx,
            in_flight,
            queued,
        }
    }

    /// Whether the store lags so far behind that a caller should wait for
    /// its writes ([`BACKLOG_MAX`]).
    pub fn lagging(&self) -> bool {
        self.queued.load(Ordering::Relaxed) > BACKLOG_MAX
    }

    /// Queues `write` (in call order: call this while the table's write lock
    /// is held, so the store sees changes in the order memory did) and
    /// returns the store's answer to await.
    pub fn queue(&self, write: Write) -> oneshot::Receiver<Result<(), BackingError>> {
        let (done, answer) = oneshot::channel();
        if !matches!(write, Write::Flush) {
            *lock(&self.in_flight)
                .pending
                .entry(write.id().to_owned())
                .or_default() += 1;
        }
        self.queued.fetch_add(1, Ordering::Relaxed);
        if let Err(mpsc::error::SendError((_, done))) = self.tx.send((write, done)) {
            self.queued.fetch_sub(1, Ordering::Relaxed);
            let _ = done.send(Err(BackingError::WriterGone));
        }
        answer
    }

    /// Resolves once every write queued so far has been answered by the
    /// store (at exit, so a clean stop loses no write).
    pub fn flush(&self) -> oneshot::Receiver<Result<(), BackingError>> {
        self.queue(Write::Flush)
    }

    /// What to do with the store's word on `id`, sent with header serial
    /// `serial`: skipped while ours are in flight (and, when it differs from
    /// memory, `same` false, the id is read back after our last write);
    /// read back when the store sent it before answering our last write.
    fn judge(&self, id: &str, serial: u32, same: bool) -> Verdict {
        judge(&self.in_flight, id, serial, same)
    }
}

/// [`Writer::judge`], on the writer's bookkeeping.
fn judge(in_flight: &Mutex<InFlight>, id: &str, serial: u32, same: bool) -> Verdict {
    let mut f = lock(in_flight);
    if f.pending.get(id).is_some_and(|n| *n > 0) {
        if !same {
            f.skipped.insert(id.to_owned());
        }
        Verdict::Skip
    } else if same {
        Verdict::Skip
    } else if f.answered.get(id).is_some_and(|last| *last > serial) {
        Verdict::Reread
    } else {
        Verdict::Apply
    }
}

fn lock(m: &Mutex<InFlight>) -> std::sync::MutexGuard<'_, InFlight> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Awaits the store's answer to a queued write.
pub async fn written(
    answer: oneshot::Receiver<Result<(), BackingError>>,
) -> Result<(), BackingError> {
    answer.await.unwrap_or(Err(BackingError::WriterGone))
}

async fn run_writer(
    conn: zbus::Connection,
    mut rx: mpsc::UnboundedReceiver<Job>,
    in_flight: Arc<Mutex<InFlight>>,
    queued: Arc<AtomicUsize>,
    observer: Arc<dyn Observer>,
) {
    let store = match PermissionStoreProxy::new(&conn).await {
        Ok(p) => p,
        Err(e) => {
            tracing::error!("permission store proxy: {e}");
            return;
        }
    };
    while let Some((write, done)) = rx.recv().await {
        queued.fetch_sub(1, Ordering::Relaxed);
        if matches!(write, Write::Flush) {
            let _ = done.send(Ok(()));
            continue;
        }
        let result = apply_write(&store, &write).await;
        if let Err(e) = &result {
            tracing::warn!(id = write.id(), "writing to the permission store: {e}");
        }
        let reread = {
            let mut f = lock(&in_flight);
            let id = write.id();
            if let Ok(Some(serial)) = &result {
                f.answered.insert(id.to_owned(), *serial);
            }
            let left = f.pending.get_mut(id).map(|n| {
                *n -= 1;
                *n
            });
            if left == Some(0) {
                f.pending.remove(id);
                f.skipped.remove(id)
            } else {
                false
            }
        };
        let _ = done.send(result.map(|_| ()));
        // Read back through the same checks as a signal: a write queued
        // meanwhile (in memory already) makes this answer older than memory.
        if reread {
            reread_doc(&store, &in_flight, &*observer, write.id()).await;
        }
    }
}

/// Makes one write; the header serial of the store's reply, when it
/// answered (None: nothing was sent, or the document was already gone).
async fn apply_write(
    store: &PermissionStoreProxy<'_>,
    write: &Write,
) -> Result<Option<u32>, BackingError> {
    let reply = match write {
        Write::Create { id, doc } => {
            let apps = doc.app_permissions();
            let apps: BTreeMap<&str, Vec<&str>> = apps
                .iter()
                .map(|(a, p)| (a.as_str(), p.iter().map(String::as_str).collect()))
                .collect();
            store
                .inner()
                .call_method("Set", &(TABLE, true, id, apps, &doc.data_value()))
                .await?
        }
        Write::Perms { id, app, perms } => {
            let strings = perms.to_strings();
            let strings: Vec<&str> = strings.iter().map(String::as_str).collect();
            store
                .inner()
                .call_method("SetPermission", &(TABLE, false, id, app, &strings))
                .await?
        }
        Write::Delete { id } => match store.inner().call_method("Delete", &(TABLE, id)).await {
            // Already gone from the store (deleted by someone else).
            Err(zbus::Error::MethodError(name, _, _)) if name.ends_with(".NotFound") => {
                return Ok(None);
            }
            other => other?,
        },
        Write::Flush => return Ok(None),
    };
    Ok(Some(reply.header().primary().serial_num().get()))
}

/// One document as the store has it now (None: not there), with the
/// header serial of the store's reply.
async fn lookup(
    store: &PermissionStoreProxy<'_>,
    id: &str,
) -> Result<(Option<Document>, u32), BackingError> {
    match store.inner().call_method("Lookup", &(TABLE, id)).await {
        Ok(reply) => {
            let serial = reply.header().primary().serial_num().get();
            let (apps, data): (BTreeMap<String, Vec<String>>, zvariant::OwnedValue) =
                reply.body().deserialize()?;
            Document::from_owned(&data, &apps)
                .map(|doc| (Some(doc), serial))
                .map_err(|source| BackingError::BadEntry {
                    id: id.to_owned(),
                    source,
                })
        }
        Err(zbus::Error::MethodError(name, _, reply)) if name.ends_with(".NotFound") => {
            Ok((None, reply.header().primary().serial_num().get()))
        }
        Err(e) => Err(e.into()),
    }
}

/// Every persistent document in the store. An entry that is not a document
/// is skipped with a warning (one damaged row must not hide the rest).
pub async fn load(conn: &zbus::Connection) -> Result<Vec<(String, Document)>, BackingError> {
    let mut docs = Vec::new();
    let ours = PortholeStoreProxy::new(conn).await?;
    match ours.list_entries(TABLE).await {
        Ok(entries) => {
            for (id, apps, data) in entries {
                let apps = apps.into_iter().map(|(a, (p, _))| (a, p)).collect();
                match Document::from_owned(&data, &apps) {
                    Ok(doc) => docs.push((id, doc)),
                    Err(e) => tracing::warn!(%id, "skipping a stored document: {e}"),
                }
            }
            return Ok(docs);
        }
        // An empty table is not an error of ours... but the store answers
        // NotFound for a table it never saw.
        Err(zbus::Error::MethodError(name, _, _)) if name.ends_with(".NotFound") => {
            return Ok(docs);
        }
        Err(zbus::Error::MethodError(name, _, _))
            if name.as_str() == "org.freedesktop.DBus.Error.UnknownInterface"
                || name.as_str() == "org.freedesktop.DBus.Error.UnknownMethod" =>
        {
            tracing::debug!("the store has no ListEntries; reading ids one by one");
        }
        Err(e) => return Err(e.into()),
    }
    let store = PermissionStoreProxy::new(conn).await?;
    let ids = match store.list(TABLE).await {
        Ok(ids) => ids,
        Err(zbus::Error::MethodError(name, _, _)) if name.ends_with(".NotFound") => Vec::new(),
        Err(e) => return Err(e.into()),
    };
    for id in ids {
        match lookup(&store, &id).await {
            Ok((Some(doc), _)) => docs.push((id, doc)),
            Ok((None, _)) => {}
            Err(BackingError::BadEntry { id, source }) => {
                tracing::warn!(%id, "skipping a stored document: {source}")
            }
            Err(e) => return Err(e),
        }
    }
    Ok(docs)
}

/// A subscription to the store's `Changed` for the documents table, made
/// before [`load`] so that nothing between the two is missed.
pub struct Watch {
    store: PermissionStoreProxy<'static>,
    stream: porthole_permission_store_client::ChangedStream,
}

impl Watch {
    pub async fn subscribe(conn: &zbus::Connection) -> Result<Watch, BackingError> {
        let store = PermissionStoreProxy::new(conn).await?;
        let stream = store.receive_changed_with_args(&[(0, TABLE)]).await?;
        Ok(Watch { store, stream })
    }

    /// Applies each `Changed` to `observer` until the bus connection ends.
    pub async fn run(mut self, writer: Writer, observer: Arc<dyn Observer>) {
        let store = self.store.clone();
        while let Some(signal) = self.stream.next().await {
            let serial = signal.message().header().primary().serial_num().get();
            let Ok(args) = signal.args() else {
                tracing::warn!("a Changed signal with unexpected arguments");
                continue;
            };
            if args.table != TABLE {
                continue;
            }
            let doc = if args.deleted {
                None
            } else {
                match Document::from_stored(&args.data, &args.permissions) {
                    Ok(doc) => Some(doc),
                    Err(e) => {
                        tracing::warn!(id = %args.id, "ignoring a changed document: {e}");
                        continue;
                    }
                }
            };
            let same = observer.holds(&args.id, doc.as_ref());
            match writer.judge(&args.id, serial, same) {
                Verdict::Skip => {}
                Verdict::Apply => observer.store_changed(&args.id, doc),
                Verdict::Reread => {
                    reread_doc(&store, &writer.in_flight, &*observer, &args.id).await
                }
            }
        }
    }
}

/// Reads `id` back from the store after a `Changed` older than our last
/// write, and applies what the store has now unless ours are in flight
/// again (then the writer reads it back after them). A reply older than a
/// write of ours answered meanwhile is read again.
async fn reread_doc(
    store: &PermissionStoreProxy<'_>,
    in_flight: &Mutex<InFlight>,
    observer: &dyn Observer,
    id: &str,
) {
    for _ in 0..8 {
        let (doc, serial) = match lookup(store, id).await {
            Ok(found) => found,
            Err(e) => {
                tracing::warn!(id, "re-reading a document: {e}");
                return;
            }
        };
        let same = observer.holds(id, doc.as_ref());
        match judge(in_flight, id, serial, same) {
            Verdict::Skip => return,
            Verdict::Apply => return observer.store_changed(id, doc),
            Verdict::Reread => continue,
        }
    }
    tracing::warn!(id, "the store kept changing while re-reading a document");
}

#[cfg(test)]
mod tests {
    use super::*;

    fn in_flight(answered: u32, pending: usize) -> Mutex<InFlight> {
        let mut f = InFlight::default();
        f.answered.insert("d".into(), answered);
        if pending > 0 {
            f.pending.insert("d".into(), pending);
        }
        Mutex::new(f)
    }

    /// The race `documents_differential` found: the echo of a grant (sent
    /// by the store before it answered our later revocation, serial 7 <
    /// 10) handled once nothing is in flight is older than memory and is
    /// read back, never applied.
    #[test]
    fn an_echo_sent_before_our_last_answer_is_read_back() {
        let f = in_flight(10, 0);
        assert_eq!(judge(&f, "d", 7, false), Verdict::Reread);
        assert_eq!(judge(&f, "d", 7, true), Verdict::Skip);
    }

    /// A change sent after our last write was answered is someone else's.
    #[test]
    fn a_later_change_is_applied() {
        let f = in_flight(10, 0);
        assert_eq!(judge(&f, "d", 11, false), Verdict::Apply);
        assert_eq!(judge(&f, "other", 3, false), Verdict::Apply);
    }

    /// While ours are in flight a differing signal is skipped and the id
    /// marked for reading back after the last of them; an equal one is
    /// skipped without a mark.
    #[test]
    fn in_flight_skips_and_marks_only_differences() {
        let f = in_flight(10, 1);
        assert_eq!(judge(&f, "d", 11, true), Verdict::Skip);
        assert!(lock(&f).skipped.is_empty());
        assert_eq!(judge(&f, "d", 12, false), Verdict::Skip);
        assert!(lock(&f).skipped.contains("d"));
    }
}
