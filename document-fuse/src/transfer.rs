//! `org.freedesktop.portal.FileTransfer` version 1, as upstream 1.20's
//! `file-transfer.c`: how drag-and-drop and copy-paste move files between
//! sandboxed apps. The source app starts a transfer, adds fds it proves
//! access to (checked as for Add), and hands the key to the target through
//! the clipboard or the drop; the target retrieves the files as paths it can
//! open (documents made for it, read-only unless the transfer is writable;
//! the host gets the plain paths). A transfer belongs to the connection
//! that started it: only that one adds to it, and it ends with that
//! connection, after a retrieval (autostop, the default) or on StopTransfer,
//! with `TransferClosed` sent to its owner.

use std::collections::HashMap;
use std::io::Read;
use std::os::fd::{AsFd, OwnedFd};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};

use futures_util::StreamExt;
use porthole_service::{Caller, PortalError};
use zbus::DBusError;
use zbus::message::Header;
use zvariant::OwnedValue;

use crate::OBJECT_PATH;
use crate::fd_path::{self, Want};
use crate::permissions::Perms;
use crate::portal::{Checked, State, add_flags};

pub const INTERFACE: &str = "org.freedesktop.portal.FileTransfer";

/// Upstream answers a bad key with `org.freedesktop.DBus.Error.*` names and
/// a file it may not export with the portal's `NotAllowed`.
#[derive(Debug)]
pub enum TransferError {
    Portal(PortalError),
    Bus(zbus::fdo::Error),
}

impl DBusError for TransferError {
    fn create_reply(&self, hdr: &Header<'_>) -> zbus::Result<zbus::Message> {
        match self {
            TransferError::Portal(e) => e.create_reply(hdr),
            TransferError::Bus(e) => e.create_reply(hdr),
        }
    }
    fn name(&self) -> zbus::names::ErrorName<'_> {
        match self {
            TransferError::Portal(e) => e.name(),
            TransferError::Bus(e) => e.name(),
        }
    }
    fn description(&self) -> Option<&str> {
        match self {
            TransferError::Portal(e) => e.description(),
            TransferError::Bus(e) => e.description(),
        }
    }
}

impl From<zbus::Error> for TransferError {
    fn from(e: zbus::Error) -> Self {
        TransferError::Portal(PortalError::ZBus(e))
    }
}

impl From<PortalError> for TransferError {
    fn from(e: PortalError) -> Self {
        TransferError::Portal(e)
    }
}

fn invalid_transfer() -> TransferError {
    TransferError::Bus(zbus::fdo::Error::AccessDenied("Invalid transfer".into()))
}

/// One file added to a transfer, as checked when it was added.
#[derive(Debug, Clone)]
struct Exported {
    path: PathBuf,
    dir_dev: u64,
    dir_ino: u64,
    is_dir: bool,
}

#[derive(Debug)]
struct Transfer {
    /// The app that started it ("" for the host).
    owner: String,
    /// Its unique bus name.
    sender: String,
    writable: bool,
    autostop: bool,
    files: Vec<Exported>,
}

/// The transfers in progress, by key.
#[derive(Clone, Default)]
pub struct Transfers(Arc<Mutex<HashMap<String, Transfer>>>);

impl Transfers {
    fn lock(&self) -> MutexGuard<'_, HashMap<String, Transfer>> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Drops the transfers a connection that left the bus owned.
    pub fn sender_gone(&self, sender: &str) {
        self.lock().retain(|key, t| {
            let keep = t.sender != sender;
            if !keep {
                tracing::debug!(%key, %sender, "dropping the transfer of a peer that left");
            }
            keep
        });
    }
}

/// The interface object (served on the Documents object, as upstream).
pub struct FileTransfer {
    pub state: State,
    pub transfers: Transfers,
}

fn bool_option(options: &HashMap<String, OwnedValue>, key: &str, default: bool) -> bool {
    options
        .get(key)
        .and_then(|v| bool::try_from(v).ok())
        .unwrap_or(default)
}

/// A key as upstream makes them: 64 random bits in decimal.
fn new_key() -> String {
    let mut buf = [0u8; 8];
    if std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut buf))
        .is_err()
    {
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0);
        buf = (t ^ u64::from(std::process::id()).rotate_left(32)).to_ne_bytes();
    }
    u64::from_ne_bytes(buf).to_string()
}

impl FileTransfer {
    async fn stop(&self, conn: &zbus::Connection, key: &str) {
        let removed = self.transfers.lock().remove(key);
        if let Some(t) = removed {
            tracing::debug!(%key, owner = %t.owner, "transfer closed");
            if let Err(e) = conn
                .emit_signal(
                    Some(t.sender.as_str()),
                    OBJECT_PATH,
                    INTERFACE,
                    "TransferClosed",
                    &(key,),
                )
                .await
            {
                tracing::debug!(%key, "TransferClosed: {e}");
            }
        }
    }

    /// The files of a transfer as documents for `target` (`""`: the host,
    /// which gets the paths as they are).
    async fn retrieve(&self, key: &str, target: &str) -> Result<Vec<String>, TransferError> {
        let (owner, writable, files) = {
            let transfers = self.transfers.lock();
            let t = transfers.get(key).ok_or_else(invalid_transfer)?;
            (t.owner.clone(), t.writable, t.files.clone())
        };
        if target.is_empty() {
            return Ok(files
                .iter()
                .map(|f| f.path.to_string_lossy().into_owned())
                .collect());
        }
        let mut perms = Perms::READ;
        if writable {
            perms |= Perms::WRITE;
        }
        let mut checked: Vec<(Checked, u32)> = Vec::with_capacity(files.len());
        for f in &files {
            // Opened again by path, and the directory must be the one seen
            // when the file was added: a path swapped meanwhile (a symlink
            // put in its place) is refused.
            let path = f.path.clone();
            let fd = tokio::task::spawn_blocking(move || {
                rustix::fs::openat(
                    rustix::fs::CWD,
                    &path,
                    rustix::fs::OFlags::PATH | rustix::fs::OFlags::CLOEXEC,
                    rustix::fs::Mode::empty(),
                )
            })
            .await
            .map_err(|_| invalid_transfer())?
            .map_err(|e| {
                tracing::debug!(path = %f.path.display(), "transfer: {e}");
                TransferError::Bus(zbus::fdo::Error::Failed(format!(
                    "File transfer {key} failed"
                )))
            })?;
            let want = if f.is_dir {
                Want::Directory
            } else {
                Want::Regular
            };
            let c = self
                .state
                .check_fd(fd, &owner, want, true, writable)
                .await?;
            if c.existing.is_none() && (c.dir_dev != f.dir_dev || c.dir_ino != f.dir_ino) {
                return Err(PortalError::NotAllowed("Invalid parent directory".into()).into());
            }
            let mut flags = add_flags::REUSE_EXISTING | add_flags::AS_NEEDED_BY_APP;
            if f.is_dir {
                flags |= add_flags::EXPORT_DIRECTORY;
            }
            checked.push((c, flags));
        }
        let ids = self.state.commit(&owner, checked, target, perms).await;
        Ok(ids
            .iter()
            .zip(&files)
            .map(|(id, f)| {
                let name = f.path.file_name().unwrap_or_default();
                self.state
                    .mountpoint
                    .join(id)
                    .join(name)
                    .to_string_lossy()
                    .into_owned()
            })
            .collect())
    }
}

#[zbus::interface(name = "org.freedesktop.portal.FileTransfer")]
impl FileTransfer {
    #[zbus(out_args("key"))]
    async fn start_transfer(
        &self,
        options: HashMap<String, OwnedValue>,
        #[zbus(header)] hdr: Header<'_>,
        #[zbus(connection)] conn: &zbus::Connection,
    ) -> Result<String, TransferError> {
        let caller = self.state.caller(conn, &hdr).await?;
        let sender = hdr
            .sender()
            .map(|s| s.to_string())
            .ok_or_else(invalid_transfer)?;
        let transfer = Transfer {
            owner: caller.app_id_str().unwrap_or_default().to_owned(),
            sender,
            writable: bool_option(&options, "writable", false),
            autostop: bool_option(&options, "autostop", true),
            files: Vec::new(),
        };
        let mut transfers = self.transfers.lock();
        let key = loop {
            let key = new_key();
            if !transfers.contains_key(&key) {
                break key;
            }
        };
        tracing::debug!(%key, owner = %transfer.owner, "transfer started");
        transfers.insert(key.clone(), transfer);
        Ok(key)
    }

    async fn add_files(
        &self,
        key: &str,
        fds: Vec<zvariant::OwnedFd>,
        _options: HashMap<String, OwnedValue>,
        #[zbus(header)] hdr: Header<'_>,
        #[zbus(connection)] conn: &zbus::Connection,
    ) -> Result<(), TransferError> {
        let caller = self.state.caller(conn, &hdr).await?;
        let sender = hdr.sender().map(|s| s.to_string());
        let (owner, writable) = {
            let transfers = self.transfers.lock();
            let t = transfers.get(key).ok_or_else(invalid_transfer)?;
            if Some(&t.sender) != sender.as_ref() {
                return Err(invalid_transfer());
            }
            (t.owner.clone(), t.writable)
        };
        if fds.is_empty() {
            return Err(TransferError::Bus(zbus::fdo::Error::InvalidArgs(
                "Invalid transfer".into(),
            )));
        }
        let is_host = caller == Caller::Host;
        let mut added = Vec::with_capacity(fds.len());
        for fd in fds {
            let fd = OwnedFd::from(fd);
            let alternate = self.state_alternate(&owner);
            let validated = tokio::task::spawn_blocking(move || {
                fd_path::validate(fd.as_fd(), is_host, Want::Any, alternate)
            })
            .await
            .map_err(|_| invalid_transfer())?;
            match validated {
                Ok(v) if !writable || v.writable => added.push(Exported {
                    path: v.path,
                    dir_dev: v.dir_dev,
                    dir_ino: v.dir_ino,
                    is_dir: v.is_dir,
                }),
                other => {
                    if let Err(e) = other {
                        tracing::debug!("AddFiles: {e}");
                    }
                    return Err(PortalError::NotAllowed("Can't export file".into()).into());
                }
            }
        }
        let mut transfers = self.transfers.lock();
        let t = transfers.get_mut(key).ok_or_else(invalid_transfer)?;
        t.files.extend(added);
        Ok(())
    }

    #[zbus(out_args("files"))]
    async fn retrieve_files(
        &self,
        key: &str,
        _options: HashMap<String, OwnedValue>,
        #[zbus(header)] hdr: Header<'_>,
        #[zbus(connection)] conn: &zbus::Connection,
    ) -> Result<Vec<String>, TransferError> {
        let caller = self.state.caller(conn, &hdr).await?;
        let target = caller.app_id_str().unwrap_or_default().to_owned();
        let result = self.retrieve(key, &target).await;
        let autostop = self.transfers.lock().get(key).is_some_and(|t| t.autostop);
        if autostop {
            self.stop(conn, key).await;
        }
        result
    }

    async fn stop_transfer(
        &self,
        key: &str,
        #[zbus(header)] hdr: Header<'_>,
        #[zbus(connection)] conn: &zbus::Connection,
    ) -> Result<(), TransferError> {
        self.state.caller(conn, &hdr).await?;
        if !self.transfers.lock().contains_key(key) {
            return Err(invalid_transfer());
        }
        self.stop(conn, key).await;
        Ok(())
    }

    /// Sent to the transfer's owner only (never broadcast).
    #[zbus(signal)]
    async fn transfer_closed(
        emitter: &zbus::object_server::SignalEmitter<'_>,
        key: &str,
    ) -> zbus::Result<()>;

    #[zbus(property(emits_changed_signal = "const"), name = "version")]
    async fn version(&self) -> u32 {
        1
    }
}

impl FileTransfer {
    fn state_alternate(
        &self,
        app: &str,
    ) -> impl Fn(&std::path::Path) -> Option<PathBuf> + Send + 'static {
        self.state.alternate(app)
    }
}

/// Drops the transfers of connections that leave the bus.
pub async fn watch_peers(conn: zbus::Connection, transfers: Transfers) {
    let dbus = match zbus::fdo::DBusProxy::new(&conn).await {
        Ok(p) => p,
        Err(e) => {
            tracing::warn!("watching peers for FileTransfer: {e}");
            return;
        }
    };
    let mut changes = match dbus.receive_name_owner_changed().await {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!("watching peers for FileTransfer: {e}");
            return;
        }
    };
    while let Some(change) = changes.next().await {
        let Ok(args) = change.args() else { continue };
        if args.name.starts_with(':') && args.new_owner.is_none() {
            transfers.sender_gone(&args.name);
        }
    }
}
