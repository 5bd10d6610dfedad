//! Where permctl's answers come from: the D-Bus service, or the database
//! opened directly. Both give the same domain values.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::Duration;

use porthole_permission_store::{Grant, OpenError, Store, StoreError};
use porthole_permission_store_client::{
    BUS_NAME, HistoryFilter, HistoryRecord, PORTHOLE_INTERFACE, PermissionStoreProxy,
    PortholeStoreProxy,
};
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

/// What a D-Bus error name means to permctl.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum BusFailure {
    /// The bus (or systemd for it) could not start the activatable service:
    /// `org.freedesktop.DBus.Error.Spawn.ChildExited` when it exited at once.
    NotStarted,
    /// No store answered: none owns the name any more, it never replied, or
    /// it left the bus before replying.
    NoAnswer,
    NotFound,
    BadArgument,
    /// Our interface is missing: only meaningful for calls on it.
    UnknownMember,
    Other,
}

fn classify(name: &str) -> BusFailure {
    match name {
        n if n.starts_with("org.freedesktop.DBus.Error.Spawn.")
            || n.starts_with("org.freedesktop.systemd1.") =>
        {
            BusFailure::NotStarted
        }
        "org.freedesktop.DBus.Error.NoReply"
        | "org.freedesktop.DBus.Error.Timeout"
        | "org.freedesktop.DBus.Error.TimedOut"
        | "org.freedesktop.DBus.Error.Disconnected"
        | "org.freedesktop.DBus.Error.ServiceUnknown"
        | "org.freedesktop.DBus.Error.NameHasNoOwner" => BusFailure::NoAnswer,
        "org.freedesktop.portal.Error.NotFound" => BusFailure::NotFound,
        "org.freedesktop.portal.Error.InvalidArgument" => BusFailure::BadArgument,
        "org.freedesktop.DBus.Error.UnknownInterface"
        | "org.freedesktop.DBus.Error.UnknownMethod"
        | "org.freedesktop.DBus.Error.UnknownObject" => BusFailure::UnknownMember,
        _ => BusFailure::Other,
    }
}

/// Where the service's log is, for messages about a service in trouble.
const SEE_LOG: &str = "see the service's log: `journalctl --user -u porthole-permission-store`, or the log of the session's bus when it started the service itself";

/// The service on the session bus, and what permctl needs to explain its
/// failures.
pub struct BusStore {
    std: PermissionStoreProxy<'static>,
    ours: PortholeStoreProxy<'static>,
    access: Access,
    timeout: Duration,
    /// The `permissions.db.corrupt-*` files beside the default database
    /// before the first call: when activation fails, only a file that is not
    /// in this list can be one the service moved aside just now.
    corrupt_before: BTreeSet<PathBuf>,
}

impl BusStore {
    /// The service when it owns its name or can be activated; `None` when
    /// there is no session bus or no such service on it.
    async fn connect(access: Access, timeout: Duration) -> Option<Self> {
        std::env::var_os("DBUS_SESSION_BUS_ADDRESS")?;
        // zbus waits for a reply without limit by default, and the bus's own
        // reply timeout may be minutes: a hung store would hang permctl.
        let conn = zbus::connection::Builder::session()
            .ok()?
            .method_timeout(timeout)
            .build()
            .await
            .ok()?;
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
        // Listed before the first call to the service, which may activate
        // it.
        let corrupt_before = porthole_permission_store::default_db_path()
            .map(|db| porthole_permission_store::moved_aside(&db))
            .unwrap_or_default()
            .into_iter()
            .collect();
        let std = PermissionStoreProxy::new(&conn).await.ok()?;
        let ours = PortholeStoreProxy::new(&conn).await.ok()?;
        Some(Self {
            std,
            ours,
            access,
            timeout,
            corrupt_before,
        })
    }

    /// For calls on the upstream interface.
    fn err(&self, e: zbus::Error) -> CliError {
        self.translate(e, false)
    }

    /// For calls on `org.porthole.PermissionStore1`: another implementation
    /// (xdg-permission-store) owning the bus name answers them with
    /// UnknownInterface or UnknownMethod, which is no failure of a call but
    /// of the setup.
    fn ours_err(&self, e: zbus::Error) -> CliError {
        self.translate(e, true)
    }

    fn translate(&self, e: zbus::Error, ours: bool) -> CliError {
        let (name, msg) = match &e {
            zbus::Error::MethodError(name, msg, _) => (name.as_str(), msg.clone()),
            zbus::Error::InputOutput(io) if io.kind() == std::io::ErrorKind::TimedOut => {
                return self.no_answer(&format!(" within {}s (--timeout)", self.timeout.as_secs()));
            }
            zbus::Error::InputOutput(io) => {
                return self.no_answer(&format!(": the connection to the bus failed ({io})"));
            }
            _ => {
                return CliError::new(
                    exit::UNAVAILABLE,
                    format!("talking to the permission store: {e}"),
                );
            }
        };
        let msg = msg.unwrap_or_else(|| name.to_owned());
        match classify(name) {
            BusFailure::NotStarted => self.not_started(&msg),
            BusFailure::NoAnswer => self.no_answer(&format!(" (the bus said: {msg})")),
            BusFailure::NotFound => CliError::new(exit::NOT_FOUND, msg),
            BusFailure::BadArgument => CliError::new(exit::USAGE, msg),
            BusFailure::UnknownMember if ours => CliError::new(
                exit::UNAVAILABLE,
                format!(
                    "the permission store on the session bus is not Porthole's (no {PORTHOLE_INTERFACE}); stop it or use --db PATH"
                ),
            ),
            BusFailure::UnknownMember | BusFailure::Other => CliError::new(exit::FAILURE, msg),
        }
    }

    /// A call that got no answer: the store is unreachable (4). A change may
    /// still have reached a store that answered too late.
    fn no_answer(&self, how: &str) -> CliError {
        let mut message = format!("the permission store did not answer{how}");
        if self.access != Access::Read {
            message.push_str("; the change may or may not have been made");
        }
        message.push_str("; ");
        message.push_str(SEE_LOG);
        CliError::new(exit::UNAVAILABLE, message)
    }

    /// The bus's own message ("Process ... exited with status 1") says
    /// nothing about why. The likely reason, a damaged database, leaves a
    /// trace: the service moved it aside next to the default database before
    /// exiting. Only a file that appeared during this call is that trace;
    /// older ones are from earlier starts (or put there by hand).
    fn not_started(&self, bus_message: &str) -> CliError {
        let mut message =
            format!("the permission store service failed to start (the bus said: {bus_message})");
        let moved: Vec<String> = porthole_permission_store::default_db_path()
            .map(|db| porthole_permission_store::moved_aside(&db))
            .unwrap_or_default()
            .into_iter()
            .filter(|p| !self.corrupt_before.contains(p))
            .map(|p| p.display().to_string())
            .collect();
        if !moved.is_empty() {
            message.push_str(&format!(
                "; it found a damaged database and moved it aside to {} (the next start begins with an empty store)",
                moved.join(", ")
            ));
        }
        message.push_str("; ");
        message.push_str(SEE_LOG);
        CliError::new(exit::UNAVAILABLE, message)
    }
}

/// What the command will do with the store. Only a grant creates a missing
/// database: the others have nothing to find in one that does not exist.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Look only: open read-only, change no file.
    Read,
    /// Take something away (revoke, reset): change an existing database,
    /// create none.
    Remove,
    /// Add a grant: create the database when missing.
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
    Bus(BusStore),
    Direct(Store),
    /// No database at this path, and nothing to create it: reads see an
    /// empty store, revoke and reset find nothing to remove.
    Absent(PathBuf),
}

fn text_of(v: OwnedValue) -> String {
    Value::from(v).to_string()
}

impl Backend {
    /// `--db` wins; else the service when it runs or can be activated
    /// (waiting at most `timeout` for each answer); else the default
    /// database file, which only a grant creates.
    pub async fn connect(
        db: Option<&Path>,
        access: Access,
        timeout: Duration,
    ) -> Result<Self, CliError> {
        if let Some(path) = db {
            return Self::open(path, access).await;
        }
        if let Some(bus) = BusStore::connect(access, timeout).await {
            return Ok(Backend::Bus(bus));
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
            return Ok(Backend::Absent(path));
        }
        Self::open(&path, access).await
    }

    /// A missing file is an error for reads (a `--db` typo must not look
    /// like an empty store), is created by a grant, and is [`Backend::Absent`]
    /// for revoke and reset: "not found", with nothing created.
    async fn open(path: &Path, access: Access) -> Result<Self, CliError> {
        let store = match access {
            Access::Read => Store::open_read_only(path).await?,
            Access::Remove => match Store::open_existing(path).await {
                Err(OpenError::Missing { path }) => return Ok(Backend::Absent(path)),
                opened => opened?,
            },
            Access::Write => Store::open_leaving_corrupt(path).await?,
        };
        Ok(Backend::Direct(store))
    }

    pub async fn tables(&self) -> Result<Vec<(String, u32)>, CliError> {
        Ok(match self {
            Backend::Bus(b) => b.ours.list_tables().await.map_err(|e| b.ours_err(e))?,
            Backend::Direct(s) => s.tables().await?,
            Backend::Absent(_) => Vec::new(),
        })
    }

    pub async fn entries(&self, table: &str) -> Result<Vec<Row>, CliError> {
        Ok(match self {
            Backend::Bus(b) => b
                .ours
                .list_entries(table)
                .await
                .map_err(|e| b.ours_err(e))?
                .into_iter()
                .map(|(id, apps, data)| Row {
                    id,
                    apps: apps
                        .into_iter()
                        .map(|(app, (permissions, exp))| (app, Grant::from_wire(permissions, exp)))
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
            Backend::Absent(_) => Vec::new(),
        })
    }

    pub async fn app_grants(&self, app: &str) -> Result<Vec<(String, String, Grant)>, CliError> {
        Ok(match self {
            Backend::Bus(b) => b
                .ours
                .list_app(app)
                .await
                .map_err(|e| b.ours_err(e))?
                .into_iter()
                .map(|(t, id, permissions, exp)| (t, id, Grant::from_wire(permissions, exp)))
                .collect(),
            Backend::Direct(s) => s.app_grants(app).await?,
            Backend::Absent(_) => Vec::new(),
        })
    }

    pub async fn app_known(&self, app: &str) -> Result<bool, CliError> {
        Ok(match self {
            Backend::Bus(b) => b.ours.app_known(app).await.map_err(|e| b.ours_err(e))?,
            Backend::Direct(s) => s.app_known(app).await?,
            Backend::Absent(_) => false,
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
            Backend::Bus(b) => {
                let refs: Vec<&str> = perms.iter().map(String::as_str).collect();
                match expires {
                    Some(at) => b
                        .ours
                        .set_permission_with_expiry(table, create, id, app, &refs, at)
                        .await
                        .map_err(|e| b.ours_err(e))?,
                    None => b
                        .std
                        .set_permission(table, create, id, app, &refs)
                        .await
                        .map_err(|e| b.err(e))?,
                }
            }
            Backend::Direct(s) => {
                s.set_permission(table, create, id, app, perms.to_vec(), expires, "")
                    .await?;
            }
            Backend::Absent(_) => return Err(read_only()),
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
            Backend::Bus(b) => {
                let refs: Vec<&str> = perms.iter().map(String::as_str).collect();
                b.ours
                    .revoke_permissions(table, id, app, &refs)
                    .await
                    .map_err(|e| b.ours_err(e))
            }
            Backend::Direct(s) => {
                let change = s
                    .revoke_permissions(table, id, app, perms.to_vec(), "")
                    .await?;
                Ok(change.entry.permissions_of(app))
            }
            Backend::Absent(path) => Err(CliError::new(
                exit::NOT_FOUND,
                format!(
                    "no such grant: there is no database at {}{NEVER_CREATED}",
                    path.display()
                ),
            )),
        }
    }

    pub async fn reset(&self, app: &str) -> Result<u32, CliError> {
        Ok(match self {
            Backend::Bus(b) => b.ours.reset_app(app).await.map_err(|e| b.ours_err(e))?,
            Backend::Direct(s) => s.reset_app(app, "").await?.len() as u32,
            Backend::Absent(path) => {
                return Err(CliError::new(
                    exit::NOT_FOUND,
                    format!(
                        "no grants for {}: there is no database at {}{NEVER_CREATED}",
                        output::app(app),
                        path.display()
                    ),
                ));
            }
        })
    }

    pub async fn history(&self, q: &HistoryFilter) -> Result<Vec<HistoryRecord>, CliError> {
        match self {
            Backend::Bus(b) => b.ours.history(q).await.map_err(|e| b.ours_err(e)),
            Backend::Direct(s) => Ok(s.history(q).await?),
            Backend::Absent(_) => Ok(Vec::new()),
        }
    }
}

/// Why a revoke or reset found nothing in a missing database.
const NEVER_CREATED: &str = " (revoke and reset never create one; a grant does)";

/// A write reached a backend opened for reading: a bug in permctl's choice
/// of [`Access`], not the user's doing.
fn read_only() -> CliError {
    CliError::new(
        exit::FAILURE,
        "internal error: a change was attempted on a store opened for reading",
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every way the bus says "no store answered" is exit 4, not a store
    /// error (1).
    #[test]
    fn unanswered_calls_are_unreachable() {
        for name in [
            "NoReply",
            "Timeout",
            "TimedOut",
            "Disconnected",
            "ServiceUnknown",
            "NameHasNoOwner",
        ] {
            assert_eq!(
                classify(&format!("org.freedesktop.DBus.Error.{name}")),
                BusFailure::NoAnswer,
                "{name}"
            );
        }
        assert_eq!(
            classify("org.freedesktop.DBus.Error.Spawn.ChildExited"),
            BusFailure::NotStarted
        );
        assert_eq!(
            classify("org.freedesktop.portal.Error.NotFound"),
            BusFailure::NotFound
        );
        assert_eq!(
            classify("org.freedesktop.DBus.Error.Failed"),
            BusFailure::Other
        );
    }
}
