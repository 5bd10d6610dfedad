//! Where permctl's answers come from: the D-Bus service, or the database
//! opened directly. Both give the same domain values.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use porthole_permission_store::client::{PermissionStoreProxy, PortholeStoreProxy};
use porthole_permission_store::service::BUS_NAME;
use porthole_permission_store::{Grant, HistoryQuery, HistoryRecord, Store, StoreError};
use zvariant::{OwnedValue, Value};

use crate::exit;

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
            StoreError::NoEntry(_) | StoreError::IdNotFound(_) => exit::NOT_FOUND,
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

impl From<zbus::Error> for CliError {
    fn from(e: zbus::Error) -> Self {
        if let zbus::Error::MethodError(name, msg, _) = &e {
            let msg = msg.clone().unwrap_or_default();
            let code = match name.as_str() {
                "org.freedesktop.portal.Error.NotFound" => exit::NOT_FOUND,
                "org.freedesktop.portal.Error.InvalidArgument" => exit::USAGE,
                "org.freedesktop.DBus.Error.ServiceUnknown"
                | "org.freedesktop.DBus.Error.Spawn.ChildExited" => exit::UNAVAILABLE,
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
}

fn text_of(v: OwnedValue) -> String {
    Value::from(v).to_string()
}

impl Backend {
    /// `--db` wins; else the service when it runs or can be activated; else
    /// the default database file.
    pub async fn connect(db: Option<&Path>) -> Result<Self, CliError> {
        if let Some(path) = db {
            return Ok(Backend::Direct(Store::open(path).await?));
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
        Ok(Backend::Direct(Store::open(&path).await?))
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
            Backend::Bus { ours, .. } => ours.list_tables().await?,
            Backend::Direct(s) => s.tables().await?,
        })
    }

    pub async fn entries(&self, table: &str) -> Result<Vec<Row>, CliError> {
        Ok(match self {
            Backend::Bus { ours, .. } => ours
                .list_entries(table)
                .await?
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
        })
    }

    pub async fn app_grants(&self, app: &str) -> Result<Vec<(String, String, Grant)>, CliError> {
        Ok(match self {
            Backend::Bus { ours, .. } => ours
                .list_app(app)
                .await?
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
        })
    }

    pub async fn app_known(&self, app: &str) -> Result<bool, CliError> {
        Ok(match self {
            Backend::Bus { ours, .. } => ours.app_known(app).await?,
            Backend::Direct(s) => s.app_known(app).await?,
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
                    Some(at) => {
                        ours.set_permission_with_expiry(table, create, id, app, &refs, at)
                            .await?
                    }
                    None => std.set_permission(table, create, id, app, &refs).await?,
                }
            }
            Backend::Direct(s) => {
                s.set_permission(table, create, id, app, perms.to_vec(), expires, "")
                    .await?;
            }
        }
        Ok(())
    }

    pub async fn delete_permission(
        &self,
        table: &str,
        id: &str,
        app: &str,
    ) -> Result<(), CliError> {
        match self {
            Backend::Bus { std, .. } => std.delete_permission(table, id, app).await?,
            Backend::Direct(s) => {
                s.delete_permission(table, id, app, "").await?;
            }
        }
        Ok(())
    }

    pub async fn reset(&self, app: &str) -> Result<u32, CliError> {
        Ok(match self {
            Backend::Bus { ours, .. } => ours.reset_app(app).await?,
            Backend::Direct(s) => s.reset_app(app, "").await?.len() as u32,
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
                let records = ours.history(filter).await?;
                records.into_iter().map(record_from_wire).collect()
            }
            Backend::Direct(s) => Ok(s.history(q).await?),
        }
    }
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
