//! The store on D-Bus: `org.freedesktop.impl.portal.PermissionStore` exactly
//! as upstream, and our additions under `org.porthole.PermissionStore1` on
//! the same object.
//!
//! This layer only converts wire types, calls [`Store`] and maps errors. The
//! caller's app id (for the audit history) comes from the message header via
//! `porthole_service::Callers`, never from an argument; a write whose caller
//! cannot be identified is refused with `NotAllowed`. Reads need no caller.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use porthole_permission_store_client::{GrantEntry, HistoryFilter, HistoryRecord, ListEntry};
use porthole_service::{Callers, PortalError, Strict};
use tokio::sync::Notify;
use zbus::message::Header;
use zbus::object_server::SignalEmitter;
use zvariant::{OwnedValue, Value};

use crate::data::Data;
use crate::error::StoreError;
use crate::model::Change;
use crate::store::Store;
use crate::writer::Author;

pub use porthole_permission_store_client::{BUS_NAME, INTERFACE, OBJECT_PATH, PORTHOLE_INTERFACE};

impl From<StoreError> for PortalError {
    fn from(e: StoreError) -> Self {
        match e {
            e if e.is_not_found() => PortalError::NotFound(e.to_string()),
            StoreError::BadTable { .. }
            | StoreError::BadData(_)
            | StoreError::InvalidArgument(_) => PortalError::InvalidArgument(e.to_string()),
            StoreError::Unidentified { sender, reason } => {
                porthole_service::caller::refuse_unidentified(sender.as_deref(), &reason)
            }
            other => {
                // Paths and SQL stay in our log, out of the reply.
                tracing::error!("store failure: {other}");
                PortalError::Failed("internal error in the permission store; see its log".into())
            }
        }
    }
}

/// State shared by both interfaces.
#[derive(Clone)]
pub struct Shared {
    store: Store,
    callers: Arc<Callers>,
    /// Wakes the pruner when a grant with an expiry is written.
    expiry_changed: Arc<Notify>,
}

impl Shared {
    pub fn new(store: Store) -> Self {
        Self {
            store,
            callers: Arc::default(),
            expiry_changed: Arc::default(),
        }
    }
}

impl Shared {
    /// Who sent the call with header `hdr`, for the history: known now or
    /// once the lookup ends. Never awaits (see [`Author`]).
    fn author(&self, conn: &zbus::Connection, hdr: &Header<'_>) -> Author {
        Author::Pending(self.callers.begin(conn, hdr))
    }
}

/// `org.freedesktop.impl.portal.PermissionStore`, version 2.
pub struct PermissionStore(pub Shared);

/// `org.porthole.PermissionStore1`: history, expiry, whole-app views.
pub struct PortholeStore(pub Shared);

fn decode(data: &OwnedValue) -> Result<Data, PortalError> {
    Ok(Data::from_value(data)?)
}

fn data_value(data: &Data) -> Result<OwnedValue, PortalError> {
    Ok(data.to_value()?)
}

/// Emits `Changed` for one committed write (before the method replies, as
/// upstream does).
pub async fn emit_change(emitter: &SignalEmitter<'_>, change: &Change) -> zbus::Result<()> {
    let data = change
        .entry
        .data
        .to_value()
        .map_err(|e| zbus::Error::Failure(e.to_string()))?;
    PermissionStore::changed(
        emitter,
        &change.table,
        &change.id,
        change.deleted,
        &Value::from(data),
        change.entry.permissions(),
    )
    .await
}

async fn emit_all(emitter: &SignalEmitter<'_>, changes: &[Change]) {
    for change in changes {
        if let Err(e) = emit_change(emitter, change).await {
            tracing::warn!(table = %change.table, id = %change.id, "emitting Changed failed: {e}");
        }
    }
}

#[zbus::interface(name = "org.freedesktop.impl.portal.PermissionStore")]
impl PermissionStore {
    #[zbus(out_args("permissions", "data"))]
    async fn lookup(
        &self,
        table: &str,
        id: &str,
    ) -> Result<(BTreeMap<String, Vec<String>>, OwnedValue), PortalError> {
        let entry = self.0.store.lookup(table, id).await?;
        Ok((entry.permissions(), data_value(&entry.data)?))
    }

    #[allow(clippy::too_many_arguments)]
    async fn set(
        &self,
        table: &str,
        create: bool,
        id: &str,
        app_permissions: BTreeMap<String, Vec<String>>,
        data: OwnedValue,
        #[zbus(header)] hdr: Header<'_>,
        #[zbus(connection)] conn: &zbus::Connection,
        #[zbus(signal_emitter)] emitter: SignalEmitter<'_>,
    ) -> Result<(), PortalError> {
        let data = decode(&data)?;
        let caller = self.0.author(conn, &hdr);
        let change = self
            .0
            .store
            .set(table, create, id, app_permissions, data, caller)
            .await?;
        emit_all(&emitter, &[change]).await;
        Ok(())
    }

    async fn delete(
        &self,
        table: &str,
        id: &str,
        #[zbus(header)] hdr: Header<'_>,
        #[zbus(connection)] conn: &zbus::Connection,
        #[zbus(signal_emitter)] emitter: SignalEmitter<'_>,
    ) -> Result<(), PortalError> {
        let caller = self.0.author(conn, &hdr);
        let change = self.0.store.delete(table, id, caller).await?;
        emit_all(&emitter, &[change]).await;
        Ok(())
    }

    #[allow(clippy::too_many_arguments)]
    async fn set_value(
        &self,
        table: &str,
        create: bool,
        id: &str,
        data: OwnedValue,
        #[zbus(header)] hdr: Header<'_>,
        #[zbus(connection)] conn: &zbus::Connection,
        #[zbus(signal_emitter)] emitter: SignalEmitter<'_>,
    ) -> Result<(), PortalError> {
        let data = decode(&data)?;
        let caller = self.0.author(conn, &hdr);
        let change = self
            .0
            .store
            .set_value(table, create, id, data, caller)
            .await?;
        emit_all(&emitter, &[change]).await;
        Ok(())
    }

    #[allow(clippy::too_many_arguments)]
    async fn set_permission(
        &self,
        table: &str,
        create: bool,
        id: &str,
        app: &str,
        permissions: Vec<String>,
        #[zbus(header)] hdr: Header<'_>,
        #[zbus(connection)] conn: &zbus::Connection,
        #[zbus(signal_emitter)] emitter: SignalEmitter<'_>,
    ) -> Result<(), PortalError> {
        let caller = self.0.author(conn, &hdr);
        let change = self
            .0
            .store
            .set_permission(table, create, id, app, permissions, None, caller)
            .await?;
        emit_all(&emitter, &[change]).await;
        Ok(())
    }

    async fn delete_permission(
        &self,
        table: &str,
        id: &str,
        app: &str,
        #[zbus(header)] hdr: Header<'_>,
        #[zbus(connection)] conn: &zbus::Connection,
        #[zbus(signal_emitter)] emitter: SignalEmitter<'_>,
    ) -> Result<(), PortalError> {
        let caller = self.0.author(conn, &hdr);
        let change = self
            .0
            .store
            .delete_permission(table, id, app, caller)
            .await?;
        emit_all(&emitter, &[change]).await;
        Ok(())
    }

    #[zbus(out_args("permissions"))]
    async fn get_permission(
        &self,
        table: &str,
        id: &str,
        app: &str,
    ) -> Result<Vec<String>, PortalError> {
        Ok(self.0.store.get_permission(table, id, app).await?)
    }

    #[zbus(out_args("ids"))]
    async fn list(&self, table: &str) -> Result<Vec<String>, PortalError> {
        Ok(self.0.store.list(table).await?)
    }

    #[zbus(signal)]
    pub async fn changed(
        emitter: &SignalEmitter<'_>,
        table: &str,
        id: &str,
        deleted: bool,
        data: &Value<'_>,
        permissions: BTreeMap<String, Vec<String>>,
    ) -> zbus::Result<()>;

    #[zbus(property(emits_changed_signal = "const"), name = "version")]
    async fn version(&self) -> u32 {
        2
    }
}

/// One app's grant on one id on the wire; expires 0 means never.
fn grant_wire(g: &crate::model::Grant) -> GrantEntry {
    (g.permissions.clone(), g.expires.unwrap_or(0))
}

#[zbus::interface(name = "org.porthole.PermissionStore1")]
impl PortholeStore {
    /// Tables holding at least one id: (name, number of ids).
    #[zbus(out_args("tables"))]
    async fn list_tables(&self) -> Result<Vec<(String, u32)>, PortalError> {
        Ok(self.0.store.tables().await?)
    }

    /// Every id of a table: (id, {app: (permissions, expires)}, data).
    #[zbus(out_args("entries"))]
    async fn list_entries(&self, table: &str) -> Result<Vec<ListEntry>, PortalError> {
        let entries = self.0.store.entries(table).await?;
        Ok(entries
            .into_iter()
            .map(|(id, e)| {
                let apps = e
                    .apps
                    .iter()
                    .map(|(a, g)| (a.clone(), grant_wire(g)))
                    .collect();
                // One damaged value (written by an older build, or by hand)
                // must not hide the whole table from its listing.
                let data = data_value(&e.data).unwrap_or_else(|err| {
                    tracing::warn!(
                        table,
                        id,
                        "stored data cannot be decoded, listed as byte 0: {err:?}"
                    );
                    OwnedValue::from(0u8)
                });
                (id, apps, data)
            })
            .collect())
    }

    /// Every live grant of one app: (table, id, permissions, expires).
    #[zbus(out_args("grants"))]
    async fn list_app(
        &self,
        app: &str,
    ) -> Result<Vec<(String, String, Vec<String>, i64)>, PortalError> {
        let grants = self.0.store.app_grants(app).await?;
        Ok(grants
            .into_iter()
            .map(|(t, id, g)| (t, id, g.permissions, g.expires.unwrap_or(0)))
            .collect())
    }

    /// Whether `app` has or had any grant.
    async fn app_known(&self, app: &str) -> Result<bool, PortalError> {
        Ok(self.0.store.app_known(app).await?)
    }

    /// SetPermission with an expiry in Unix seconds (0: never). The grant is
    /// never returned after that time and is pruned.
    #[allow(clippy::too_many_arguments)]
    async fn set_permission_with_expiry(
        &self,
        table: &str,
        create: bool,
        id: &str,
        app: &str,
        permissions: Vec<String>,
        expires: i64,
        #[zbus(header)] hdr: Header<'_>,
        #[zbus(connection)] conn: &zbus::Connection,
    ) -> Result<(), PortalError> {
        if expires < 0 {
            return Err(PortalError::InvalidArgument(format!(
                "expiry {expires} is negative"
            )));
        }
        // A grant that has already lapsed would be announced by Changed and
        // then never returned: refuse it instead.
        if expires != 0 && expires <= crate::writer::now_secs() {
            return Err(PortalError::InvalidArgument(format!(
                "expiry {expires} is not in the future"
            )));
        }
        let expires = (expires != 0).then_some(expires);
        let caller = self.0.author(conn, &hdr);
        let change = self
            .0
            .store
            .set_permission(table, create, id, app, permissions, expires, caller)
            .await?;
        emit_all(&standard_emitter(conn)?, &[change]).await;
        self.0.expiry_changed.notify_one();
        Ok(())
    }

    /// Takes `permissions` away from `app`'s grant on `id` in one step (no
    /// read-modify-write race with other writers); all of them, or with an
    /// empty list the whole grant. Returns what the app keeps. NotFound when
    /// the id, the grant or one of the permissions is not there; then
    /// nothing changes.
    #[zbus(out_args("remaining"))]
    async fn revoke_permissions(
        &self,
        table: &str,
        id: &str,
        app: &str,
        permissions: Vec<String>,
        #[zbus(header)] hdr: Header<'_>,
        #[zbus(connection)] conn: &zbus::Connection,
    ) -> Result<Vec<String>, PortalError> {
        let caller = self.0.author(conn, &hdr);
        let change = self
            .0
            .store
            .revoke_permissions(table, id, app, permissions, caller)
            .await?;
        let remaining = change.entry.permissions_of(app);
        emit_all(&standard_emitter(conn)?, &[change]).await;
        Ok(remaining)
    }

    /// Removes every grant of `app` in every table; returns how many ids
    /// changed.
    async fn reset_app(
        &self,
        app: &str,
        #[zbus(header)] hdr: Header<'_>,
        #[zbus(connection)] conn: &zbus::Connection,
    ) -> Result<u32, PortalError> {
        let caller = self.0.author(conn, &hdr);
        let changes = self.0.store.reset_app(app, caller).await?;
        emit_all(&standard_emitter(conn)?, &changes).await;
        Ok(changes.len() as u32)
    }

    /// The audit history, newest first: `a{sv}` -> `aa{sv}`, the filter and
    /// each record as [`HistoryFilter`] and [`HistoryRecord`] describe them
    /// (`limit` of any integer type, 0 = all).
    #[zbus(out_args("records"))]
    async fn history(
        &self,
        filter: HashMap<String, OwnedValue>,
    ) -> Result<Vec<HistoryRecord>, PortalError> {
        let filter = HistoryFilter::from_dict(&filter)
            .map_err(|e| PortalError::InvalidArgument(format!("History filter: {e}")))?;
        Ok(self.0.store.history(&filter).await?)
    }

    #[zbus(property(emits_changed_signal = "const"), name = "version")]
    async fn version(&self) -> u32 {
        1
    }
}

/// `Changed` belongs to the standard interface; our own methods emit it there.
fn standard_emitter(conn: &zbus::Connection) -> Result<SignalEmitter<'static>, PortalError> {
    Ok(SignalEmitter::new(conn, OBJECT_PATH)?.into_owned())
}

/// Serves both interfaces at [`OBJECT_PATH`] on `conn` (before the caller
/// claims the bus name, so no call can arrive at a missing object).
pub async fn export(conn: &zbus::Connection, shared: Shared) -> zbus::Result<()> {
    let server = conn.object_server();
    server
        .at(OBJECT_PATH, Strict::new(PermissionStore(shared.clone())))
        .await?;
    server
        .at(OBJECT_PATH, Strict::new(PortholeStore(shared)))
        .await?;
    Ok(())
}

/// Prunes expired grants when they fall due (and at start), emitting
/// `Changed` for each id touched.
pub async fn run_pruner(conn: zbus::Connection, shared: Shared) {
    loop {
        match shared.store.prune_expired().await {
            Ok(changes) if !changes.is_empty() => {
                tracing::info!(count = changes.len(), "pruned expired grants");
                if let Ok(emitter) = standard_emitter(&conn) {
                    emit_all(&emitter, &changes).await;
                }
            }
            Ok(_) => {}
            Err(e) => tracing::error!("pruning expired grants: {e}"),
        }
        // Sleep until the next grant falls due; with none, until a grant
        // with an expiry is written here or another process changes the
        // database. An idle store never wakes.
        let due = match shared.store.next_expiry().await {
            Ok(Some(at)) => Some((at - crate::writer::now_secs()).clamp(0, 86_400) as u64 + 1),
            _ => None,
        };
        let sleep = async {
            match due {
                Some(secs) => tokio::time::sleep(std::time::Duration::from_secs(secs)).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = sleep => {}
            _ = shared.expiry_changed.notified() => {}
            _ = shared.store.changed_elsewhere() => {}
        }
    }
}
