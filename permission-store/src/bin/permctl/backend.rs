//! Where permctl's answers come from: the D-Bus service, or the database
//! opened directly. Both give the same domain values.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use porthole_permission_store::client::{PermissionStoreProxy, PortholeStoreProxy};
use porthole_permission_store::service::BUS_NAME;
use porthole_permission_store::{Grant, HistoryQuery, HistoryRecord, OpenError, Store, StoreError};
use zvariant::{OwnedValue, Value};

use crate::{exit, output};

/// An error for the user: one line and an exit code.
#[derive(Debug)]
pub struct CliError {
    pub code: u8,
    pub message: String,
}

impl CliError {
    pub fn new(code: u8, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }
}

impl From<StoreError> for CliError {
    fn from(e: StoreError) -> Self {
        let code = match &e {
            e if e.is_not_found() => exit::NOT_FOUND,
            StoreError::BadTable { .. }
            | StoreError::BadData(_)
            | StoreError::InvalidArgument(_) => exit::USAGE,
            StoreError::Corrupt { .. }
            | StoreError::CorruptStuck { .. }
            | StoreError::Io { .. } => exit::UNAVAILABLE,
            _ => exit::FAILURE,
        };
        CliError::new(code, e.to_string())
    }
}

impl From<OpenError> for CliError {
    /// Every failure to open is "unopenable" (4), whatever its cause.
    fn from(e: OpenError) -> Self {
        let message = match &e {
            OpenError::Missing { path } => format!(
                "no database at {}; read commands never create one (a grant does)",
                path.display()
            ),
            _ => e.to_string(),
        };
        CliError::new(exit::UNAVAILABLE, message)
    }
}

impl From<zbus::Error> for CliError {
    fn from(e: zbus::Error) -> Self {
        if let zbus::Error::MethodError(name, msg, _) = &e {
            let msg = msg.clone().unwrap_or_default();
            let name = name.as_str();
            if is_activation_failure(name) {
                return activation_failed(&msg);
            }
            let code = match name {
                "org.freedesktop.portal.Error.NotFound" => exit::NOT_FOUND,
                "org.freedesktop.portal.Error.InvalidArgument" => exit::USAGE,
                "org.freedesktop.DBus.Error.ServiceUnknown" => exit::UNAVAILABLE,
                _ => exit::FAILURE,
            };
            return CliError::new(code, msg);
        }
        CliError::new(
            exit::UNAVAILABLE,
            format!("talking to the permission store: {e}"),
        )
    }
}

/// The bus (or systemd for it) could not start the activatable service:
/// `org.freedesktop.DBus.Error.Spawn.ChildExited` when it exited at once.
fn is_activation_failure(name: &str) -> bool {
    name.starts_with("org.freedesktop.DBus.Error.Spawn.")
        || name.starts_with("org.freedesktop.systemd1.")
}

/// The bus's own message ("Process ... exited with status 1") says nothing
/// about why. The likely reason, a damaged database, leaves a trace: the
/// service moved it aside next to the default database before exiting.
fn activation_failed(bus_message: &str) -> CliError {
    let mut message =
        format!("the permission store service failed to start (the bus said: {bus_message})");
    let moved = porthole_permission_store::default_db_path()
        .map(|db| moved_aside(&db))
        .unwrap_or_default();
    if !moved.is_empty() {
        let list: Vec<String> = moved.iter().map(|p| p.display().to_string()).collect();
        message.push_str(&format!(
            "; it found a damaged database and moved it aside to {} (the next start begins with an empty store)",
            list.join(", ")
        ));
    }
    message.push_str(
        "; see the service's log: `journalctl --user -u porthole-permission-store`, or the log of the session's bus when it started the service itself",
    );
    CliError::new(exit::UNAVAILABLE, message)
}

/// `permissions.db.corrupt-*` files beside `db` (not their -wal and -shm),
/// oldest first.
fn moved_aside(db: &Path) -> Vec<PathBuf> {
    let (Some(dir), Some(name)) = (db.parent(), db.file_name()) else {
        return Vec::new();
    };
    let prefix = format!("{}.corrupt-", name.to_string_lossy());
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut found: Vec<PathBuf> = entries
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(&prefix) && !n.ends_with("-wal") && !n.ends_with("-shm"))
        .map(|n| dir.join(n))
        .collect();
    found.sort();
    found
}

/// For calls on `org.porthole.PermissionStore1`: another implementation
/// (xdg-permission-store) owning the bus name answers them with
/// UnknownInterface or UnknownMethod, which is no failure of a call but of
/// the setup.
fn ours_err(e: zbus::Error) -> CliError {
    if let zbus::Error::MethodError(name, _, _) = &e
        && matches!(
            name.as_str(),
            "org.freedesktop.DBus.Error.UnknownInterface"
                | "org.freedesktop.DBus.Error.UnknownMethod"
                | "org.freedesktop.DBus.Error.UnknownObject"
        )
    {
        return CliError::new(
            exit::UNAVAILABLE,
            format!(
                "the permission store on the session bus is not Porthole's (no {PORTHOLE_INTERFACE}); stop it or use --db PATH"
            ),
        );
    }
    e.into()
}

const PORTHOLE_INTERFACE: &str = "org.porthole.PermissionStore1";

/// What the command will do with the store: reads never create or change a
/// file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    Read,
    Write,
}

/// One id as permctl shows it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Row {
    pub id: String,
    pub apps: BTreeMap<String, Grant>,
    /// The data value in GVariant text form.
    pub data: String,
}

pub enum Backend {
    Bus {
        std: PermissionStoreProxy<'static>,
        ours: PortholeStoreProxy<'static>,
    },
    Direct(Store),
    /// No service and no database at the default path: an empty store, for
    /// reads only (looking must not create the file).
    Empty,
}

fn text_of(v: OwnedValue) -> String {
    Value::from(v).to_string()
}

impl Backend {
    /// `--db` wins; else the service when it runs or can be activated; else
    /// the default database file, which only a write creates.
    pub async fn connect(db: Option<&Path>, access: Access) -> Result<Self, CliError> {
        if let Some(path) = db {
            return Self::open(path, access).await;
        }
        if let Some(backend) = Self::try_bus().await {
            return Ok(backend);
        }
        let path = porthole_permission_store::default_db_path().ok_or_else(|| {
            CliError::new(
                exit::UNAVAILABLE,
                "neither XDG_DATA_HOME nor HOME is set; pass --db",
            )
        })?;
        if access == Access::Read && matches!(path.try_exists(), Ok(false)) {
            output::note(&format!(
                "no grants yet: no permission store runs and {} does not exist",
                path.display()
            ));
            return Ok(Backend::Empty);
        }
        Self::open(&path, access).await
    }

    async fn open(path: &Path, access: Access) -> Result<Self, CliError> {
        let store = match access {
            Access::Read => Store::open_read_only(path).await?,
            Access::Write => Store::open_leaving_corrupt(path).await?,
        };
        Ok(Backend::Direct(store))
    }

    async fn try_bus() -> Option<Self> {
        std::env::var_os("DBUS_SESSION_BUS_ADDRESS")?;
        let conn = zbus::Connection::session().await.ok()?;
        let dbus = zbus::fdo::DBusProxy::new(&conn).await.ok()?;
        let name = BUS_NAME.try_into().ok()?;
        let running = dbus.name_has_owner(name).await.unwrap_or(false);
        let activatable = || async {
            dbus.list_activatable_names()
                .await
                .map(|n| n.iter().any(|n| n.as_str() == BUS_NAME))
                .unwrap_or(false)
        };
        if !running && !activatable().await {
            return None;
        }
        let std = PermissionStoreProxy::new(&conn).await.ok()?;
        let ours = PortholeStoreProxy::new(&conn).await.ok()?;
        Some(Backend::Bus { std, ours })
    }

    pub async fn tables(&self) -> Result<Vec<(String, u32)>, CliError> {
        Ok(match self {
            Backend::Bus { ours, .. } => ours.list_tables().await.map_err(ours_err)?,
            Backend::Direct(s) => s.tables().await?,
            Backend::Empty => Vec::new(),
        })
    }

    pub async fn entries(&self, table: &str) -> Result<Vec<Row>, CliError> {
        Ok(match self {
            Backend::Bus { ours, .. } => ours
                .list_entries(table)
                .await
                .map_err(ours_err)?
                .into_iter()
                .map(|(id, apps, data)| Row {
                    id,
                    apps: apps
                        .into_iter()
                        .map(|(app, (permissions, exp))| {
                            (
                                app,
                                Grant {
                                    permissions,
                                    expires: (exp != 0).then_some(exp),
                                },
                            )
                        })
                        .collect(),
                    data: text_of(data),
                })
                .collect(),
            Backend::Direct(s) => s
                .entries(table)
                .await?
                .into_iter()
                .map(|(id, e)| Row {
                    id,
                    data: e.data.to_text(),
                    apps: e.apps,
                })
                .collect(),
            Backend::Empty => Vec::new(),
        })
    }

    pub async fn app_grants(&self, app: &str) -> Result<Vec<(String, String, Grant)>, CliError> {
        Ok(match self {
            Backend::Bus { ours, .. } => ours
                .list_app(app)
                .await
                .map_err(ours_err)?
                .into_iter()
                .map(|(t, id, permissions, exp)| {
                    (
                        t,
                        id,
                        Grant {
                            permissions,
                            expires: (exp != 0).then_some(exp),
                        },
                    )
                })
                .collect(),
            Backend::Direct(s) => s.app_grants(app).await?,
            Backend::Empty => Vec::new(),
        })
    }

    pub async fn app_known(&self, app: &str) -> Result<bool, CliError> {
        Ok(match self {
            Backend::Bus { ours, .. } => ours.app_known(app).await.map_err(ours_err)?,
            Backend::Direct(s) => s.app_known(app).await?,
            Backend::Empty => false,
        })
    }

    /// Sets APP's list on ID, creating the id when `create`.
    pub async fn set_permission(
        &self,
        table: &str,
        create: bool,
        id: &str,
        app: &str,
        perms: &[String],
        expires: Option<i64>,
    ) -> Result<(), CliError> {
        match self {
            Backend::Bus { std, ours } => {
                let refs: Vec<&str> = perms.iter().map(String::as_str).collect();
                match expires {
                    Some(at) => ours
                        .set_permission_with_expiry(table, create, id, app, &refs, at)
                        .await
                        .map_err(ours_err)?,
                    None => std.set_permission(table, create, id, app, &refs).await?,
                }
            }
            Backend::Direct(s) => {
                s.set_permission(table, create, id, app, perms.to_vec(), expires, "")
                    .await?;
            }
            Backend::Empty => return Err(read_only()),
        }
        Ok(())
    }

    /// Takes PERMS (with none, the whole grant) from APP on ID in one
    /// write; returns what APP keeps.
    pub async fn revoke_permissions(
        &self,
        table: &str,
        id: &str,
        app: &str,
        perms: &[String],
    ) -> Result<Vec<String>, CliError> {
        match self {
            Backend::Bus { ours, .. } => {
                let refs: Vec<&str> = perms.iter().map(String::as_str).collect();
                ours.revoke_permissions(table, id, app, &refs)
                    .await
                    .map_err(ours_err)
            }
            Backend::Direct(s) => {
                let change = s
                    .revoke_permissions(table, id, app, perms.to_vec(), "")
                    .await?;
                Ok(change.entry.permissions_of(app))
            }
            Backend::Empty => Err(read_only()),
        }
    }

    pub async fn reset(&self, app: &str) -> Result<u32, CliError> {
        Ok(match self {
            Backend::Bus { ours, .. } => ours.reset_app(app).await.map_err(ours_err)?,
            Backend::Direct(s) => s.reset_app(app, "").await?.len() as u32,
            Backend::Empty => return Err(read_only()),
        })
    }

    pub async fn history(&self, q: &HistoryQuery) -> Result<Vec<HistoryRecord>, CliError> {
        match self {
            Backend::Bus { ours, .. } => {
                let mut filter: HashMap<&str, Value<'_>> = HashMap::new();
                if let Some(t) = &q.table {
                    filter.insert("table", Value::from(t.as_str()));
                }
                if let Some(a) = &q.app {
                    filter.insert("app", Value::from(a.as_str()));
                }
                filter.insert("limit", Value::from(q.limit));
                let records = ours.history(filter).await.map_err(ours_err)?;
                records.into_iter().map(record_from_wire).collect()
            }
            Backend::Direct(s) => Ok(s.history(q).await?),
            Backend::Empty => Ok(Vec::new()),
        }
    }
}

/// A write reached a backend opened for reading: a bug in permctl's choice
/// of [`Access`], not the user's doing.
fn read_only() -> CliError {
    CliError::new(
        exit::FAILURE,
        "internal error: a change was attempted on a store opened for reading",
    )
}

fn record_from_wire(mut m: HashMap<String, OwnedValue>) -> Result<HistoryRecord, CliError> {
    let bad = |k: &str| {
        CliError::new(
            exit::FAILURE,
            format!("the store sent a history record without a valid {k:?}"),
        )
    };
    let mut take_str = |k: &str| -> Option<String> {
        m.remove(k)
            .and_then(|v| <&str>::try_from(&v).ok().map(str::to_owned))
    };
    let action = take_str("action").ok_or_else(|| bad("action"))?;
    let table = take_str("table").ok_or_else(|| bad("table"))?;
    let id = take_str("id").ok_or_else(|| bad("id"))?;
    let caller = take_str("caller").ok_or_else(|| bad("caller"))?;
    let app = take_str("app");
    let strv = |v: Option<OwnedValue>| v.and_then(|v| Vec::<String>::try_from(v).ok());
    let old = strv(m.remove("old"));
    let new = strv(m.remove("new"));
    let int = |v: Option<OwnedValue>| v.and_then(|v| i64::try_from(v).ok());
    let seq = int(m.remove("seq")).ok_or_else(|| bad("seq"))?;
    let time_us = int(m.remove("time")).ok_or_else(|| bad("time"))?;
    Ok(HistoryRecord {
        seq,
        time_us,
        action,
        table,
        id,
        app,
        old,
        new,
        caller,
    })
}
