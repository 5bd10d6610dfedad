//! `org.freedesktop.portal.Documents` version 5, with upstream 1.20's
//! signatures, semantics and error names (`document-portal.c`).
//!
//! Each method identifies its caller from the message header
//! ([`porthole_service::Callers`]); the host (an unsandboxed process) holds
//! every permission on every document, as upstream. Changes are made in the
//! memory table first (so the file system sees them at once), queued to the
//! permission store in the same order (for persistent documents), and the
//! reply waits for the store's answer and for the kernel's caches to be
//! dropped, so that when a client hears "done" the file system already
//! shows it.

use std::collections::{BTreeMap, HashMap};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use porthole_identity::AppId;
use porthole_service::{Caller, Callers, PortalError};
use tokio::sync::oneshot;
use zbus::message::Header;
use zvariant::{OwnedValue, Value};

use crate::backing::{BackingError, Observer, Write, Writer};
use crate::document::{DocFlags, Document, strip_nul};
use crate::fd_path::{self, Want};
use crate::fs::{Inodes, Invalidator, Node};
use crate::permissions::Perms;
use crate::table::SharedTable;

/// `DocumentAddFullFlags`.
pub mod add_flags {
    pub const REUSE_EXISTING: u32 = 1;
    pub const PERSISTENT: u32 = 2;
    pub const AS_NEEDED_BY_APP: u32 = 4;
    pub const EXPORT_DIRECTORY: u32 = 8;
    pub const ALL: u32 = 15;
}

/// What the interface works with.
#[derive(Clone)]
pub struct State {
    pub table: SharedTable,
    pub inodes: Arc<Mutex<Inodes>>,
    pub writer: Writer,
    pub callers: Arc<Callers>,
    pub invalidator: Invalidator,
    pub mountpoint: PathBuf,
    /// The device of our FUSE mount.
    pub fuse_dev: u64,
}

/// The interface object.
pub struct Documents(pub State);

fn not_enough() -> PortalError {
    PortalError::NotAllowed("Not enough permissions".into())
}

fn invalid_fd() -> PortalError {
    PortalError::InvalidArgument("Invalid fd passed".into())
}

fn no_such(id: &str) -> PortalError {
    PortalError::NotFound(format!("No such document: {id}"))
}

fn bytestring(path: &Path) -> Vec<u8> {
    Document::path_bytestring(path)
}

/// One fd of an Add call, checked.
pub(crate) struct Checked {
    pub(crate) path: PathBuf,
    pub(crate) dir_dev: u64,
    pub(crate) dir_ino: u64,
    pub(crate) writable: bool,
    /// Set when the fd is on our own mount: the document it shows.
    pub(crate) existing: Option<String>,
}

impl State {
    pub(crate) async fn caller(
        &self,
        conn: &zbus::Connection,
        hdr: &Header<'_>,
    ) -> Result<Caller, PortalError> {
        let caller = self.callers.identify(conn, hdr).await;
        caller.require()?;
        Ok(caller)
    }

    /// The path on the mount an app sees (`/run/user/UID/doc/ID/NAME`, or
    /// ours) as the host reaches it (`.../doc/by-app/APP/ID/NAME`).
    pub(crate) fn alternate(
        &self,
        app: &str,
    ) -> impl Fn(&Path) -> Option<PathBuf> + Send + 'static {
        let mountpoint = self.mountpoint.clone();
        let app = app.to_owned();
        let sandbox = PathBuf::from(format!(
            "/run/user/{}/doc",
            rustix::process::getuid().as_raw()
        ));
        move |path: &Path| {
            if app.is_empty() {
                return None;
            }
            [&mountpoint, &sandbox].into_iter().find_map(|prefix| {
                let rest = path.strip_prefix(prefix).ok()?;
                if rest.starts_with("by-app") {
                    return None;
                }
                Some(mountpoint.join("by-app").join(&app).join(rest))
            })
        }
    }

    /// Upstream's `validate_fd` plus the check of an fd on our own mount
    /// (`verify_existing_document`), off the async thread: the caller's fd
    /// may be on a file system that is slow to answer.
    pub(crate) async fn check_fd(
        &self,
        fd: OwnedFd,
        app: &str,
        want: Want,
        reuse_existing: bool,
        allow_write: bool,
    ) -> Result<Checked, PortalError> {
        let is_host = app.is_empty();
        let alternate = self.alternate(app);
        let validated = tokio::task::spawn_blocking(move || {
            fd_path::validate(fd.as_fd(), is_host, want, alternate)
        })
        .await
        .map_err(|_| invalid_fd())?
        .map_err(|e| {
            tracing::debug!("Invalid fd passed: {e}");
            invalid_fd()
        })?;
        if allow_write && !validated.writable {
            return Err(not_enough());
        }
        let mut checked = Checked {
            path: validated.path,
            dir_dev: validated.dir_dev,
            dir_ino: validated.dir_ino,
            writable: validated.writable,
            existing: None,
        };
        if validated.dev == self.fuse_dev {
            // A file on our own mount: only an existing document may be
            // passed again, never copied into a new one (which would escape
            // a later revocation), and never made writable by it.
            let node = {
                let inodes = self.inodes.lock().unwrap_or_else(|p| p.into_inner());
                inodes.node(validated.ino).cloned()
            };
            // Only a document's own file (or a directory document's own
            // directory) stands for the document; a temporary file next to
            // it or the virtual directory does not (upstream's
            // `xdp_fuse_lookup_id_for_inode`).
            let (id, inner) = match node {
                Some(Node::File { id, name, .. }) => {
                    let main = self.table.read().get(&id).is_some_and(|d| d.name() == name);
                    if !main {
                        return Err(invalid_fd());
                    }
                    (id, None)
                }
                Some(Node::Sub { id, rel, .. }) if rel.components().count() == 1 => (id, None),
                Some(Node::Sub { id, rel, .. }) => (id, Some(rel)),
                _ => return Err(invalid_fd()),
            };
            let doc = self.table.read().get(&id).cloned().ok_or_else(invalid_fd)?;
            let perms = doc.perms_of(app);
            if let Some(rel) = inner {
                // Inside a directory document: a document of its own for
                // the real file, as upstream, with no more than the view
                // may do.
                if !perms.contains(Perms::READ) || (allow_write && !perms.contains(Perms::WRITE)) {
                    return Err(invalid_fd());
                }
                let (path, dir_dev, dir_ino, is_dir) =
                    tokio::task::spawn_blocking(move || crate::fs::locate(&doc, &rel))
                        .await
                        .map_err(|_| invalid_fd())?
                        .map_err(|_| invalid_fd())?;
                if is_dir != (want == Want::Directory) {
                    return Err(invalid_fd());
                }
                checked.path = path;
                checked.dir_dev = dir_dev;
                checked.dir_ino = dir_ino;
                checked.writable = checked.writable && perms.contains(Perms::WRITE);
                return Ok(checked);
            }
            if !reuse_existing || (allow_write && !perms.contains(Perms::WRITE)) {
                return Err(invalid_fd());
            }
            checked.existing = Some(id);
        }
        Ok(checked)
    }

    /// Sets `app`'s permissions on `id` in memory and queues the store
    /// write when the document is persistent. Call with the write lock.
    fn set_perms(
        &self,
        table: &mut crate::Table,
        id: &str,
        app: &str,
        perms: Perms,
        waits: &mut Vec<oneshot::Receiver<Result<(), BackingError>>>,
    ) {
        let Some(doc) = table.get_mut(id) else { return };
        // An app adding its own document again (every save dialog does)
        // changes nothing: no store write, no Changed for every service.
        if doc.perms_of(app) == perms {
            return;
        }
        doc.set_perms(app, perms);
        if !doc.flags.transient() {
            waits.push(self.writer.queue(Write::Perms {
                id: id.to_owned(),
                app: app.to_owned(),
                perms,
            }));
        }
    }

    /// Creates (or, with reuse, finds) the document for `path`. Call with
    /// the write lock. Returns the id and whether it is new.
    fn create_doc(
        table: &mut crate::Table,
        path: PathBuf,
        dir_dev: u64,
        dir_ino: u64,
        reuse_existing: bool,
        persistent: bool,
        directory: bool,
    ) -> (String, bool) {
        let mut flags = 0;
        if !reuse_existing {
            flags |= DocFlags::UNIQUE;
        }
        if !persistent {
            flags |= DocFlags::TRANSIENT;
        }
        if directory {
            flags |= DocFlags::DIRECTORY;
        }
        let doc = Document {
            path,
            dev: dir_dev,
            ino: dir_ino,
            flags: DocFlags(flags),
            apps: BTreeMap::new(),
        };
        if reuse_existing && let Some(id) = table.find_same(&doc) {
            return (id, false);
        }
        let id = table.new_id();
        table.insert(id.clone(), doc);
        (id, true)
    }

    /// Drops the kernel's caches of each id in its views, before the reply
    /// (so the caller sees the change when it hears "done"). The store
    /// writes in `waits` are queued in order and not awaited, as upstream's.
    async fn finish(
        &self,
        waits: Vec<oneshot::Receiver<Result<(), BackingError>>>,
        invalidate: Vec<(String, Vec<String>)>,
    ) {
        if self.writer.lagging() {
            for wait in waits {
                let _ = crate::backing::written(wait).await;
            }
        }
        if invalidate.is_empty() {
            return;
        }
        let inv = self.invalidator.clone();
        let _ = tokio::task::spawn_blocking(move || {
            for (id, views) in invalidate {
                for view in views {
                    inv.doc_view(&id, &view);
                }
            }
        })
        .await;
    }

    /// `document_add_full`: every fd checked before anything changes.
    #[allow(clippy::too_many_arguments)]
    async fn add_full(
        &self,
        caller: &Caller,
        fds: Vec<OwnedFd>,
        flags: u32,
        target_app: &str,
        target_perms: Perms,
    ) -> Result<Vec<String>, PortalError> {
        let app = caller.app_id_str().unwrap_or_default().to_owned();
        let reuse_existing = flags & add_flags::REUSE_EXISTING != 0;
        let directory = flags & add_flags::EXPORT_DIRECTORY != 0;
        let allow_write = target_perms.contains(Perms::WRITE);
        let want = if directory {
            Want::Directory
        } else {
            Want::Regular
        };
        let mut checked = Vec::with_capacity(fds.len());
        for fd in fds {
            let c = self
                .check_fd(fd, &app, want, reuse_existing, allow_write)
                .await?;
            checked.push((c, flags));
        }
        Ok(self.commit(&app, checked, target_app, target_perms).await)
    }

    /// Makes (or reuses) the documents for checked files, each with its
    /// own add flags, gives the adding app its permissions and the target
    /// app `target_perms`, and returns the ids once the store has them and
    /// the kernel's caches are dropped.
    pub(crate) async fn commit(
        &self,
        app: &str,
        checked: Vec<(Checked, u32)>,
        target_app: &str,
        target_perms: Perms,
    ) -> Vec<String> {
        let mut ids: Vec<String> = Vec::with_capacity(checked.len());
        // A new document has nothing in the kernel's caches yet.
        let mut reused: Vec<String> = Vec::new();
        let mut waits = Vec::new();
        {
            let mut table = self.table.write();
            for (c, flags) in checked {
                let reuse_existing = flags & add_flags::REUSE_EXISTING != 0;
                let persistent = flags & add_flags::PERSISTENT != 0;
                let directory = flags & add_flags::EXPORT_DIRECTORY != 0;
                // AS_NEEDED_BY_APP: upstream asks `flatpak info
                // --file-access`; we have no such view of an app's static
                // permissions, so a document is always made.
                let (id, created) = match c.existing {
                    Some(id) => (id, false),
                    None => Self::create_doc(
                        &mut table,
                        c.path,
                        c.dir_dev,
                        c.dir_ino,
                        reuse_existing,
                        persistent,
                        directory,
                    ),
                };
                let mut grants: Vec<(String, Perms)> = Vec::new();
                if created || !ids.contains(&id) {
                    if !app.is_empty() && app != target_app {
                        let mut caller_perms = Perms::GRANT | Perms::READ;
                        if c.writable {
                            caller_perms |= Perms::WRITE;
                            if !reuse_existing {
                                caller_perms |= Perms::DELETE;
                            }
                        }
                        grants.push((app.to_owned(), caller_perms));
                    }
                    if !target_app.is_empty() && !target_perms.is_empty() {
                        grants.push((target_app.to_owned(), target_perms));
                    }
                }
                let transient = table.get(&id).is_some_and(|d| d.flags.transient());
                if created {
                    if let Some(doc) = table.get_mut(&id) {
                        for (a, p) in &grants {
                            doc.set_perms(a, *p);
                        }
                    }
                    if !transient && let Some(doc) = table.get(&id) {
                        waits.push(self.writer.queue(Write::Create {
                            id: id.clone(),
                            doc: doc.clone(),
                        }));
                    }
                } else {
                    for (a, p) in &grants {
                        self.set_perms(&mut table, &id, a, *p, &mut waits);
                    }
                    reused.push(id.clone());
                }
                ids.push(id);
            }
        }
        let mut views = vec![String::new()];
        if !app.is_empty() {
            views.push(app.to_owned());
        }
        if !target_app.is_empty() && !target_perms.is_empty() {
            views.push(target_app.to_owned());
        }
        let invalidate = reused.into_iter().map(|id| (id, views.clone())).collect();
        self.finish(waits, invalidate).await;
        ids
    }

    pub(crate) fn mountpoint_extra(&self) -> HashMap<String, OwnedValue> {
        let value = Value::from(bytestring(&self.mountpoint));
        let mut extra = HashMap::new();
        if let Ok(v) = OwnedValue::try_from(value) {
            extra.insert("mountpoint".to_owned(), v);
        }
        extra
    }

    /// `AddNamed`/`AddNamedFull`'s common part: host only, a plain file
    /// name, a directory fd not on our mount. Returns the path.
    async fn named_path(
        &self,
        caller: &Caller,
        fd: OwnedFd,
        filename: Vec<u8>,
    ) -> Result<(PathBuf, u64, u64), PortalError> {
        if *caller != Caller::Host {
            return Err(not_enough());
        }
        let filename = strip_nul(filename);
        // Upstream refuses "" and names with a slash; "." and ".." would name
        // the directory or its parent, never a file in it: refused too.
        if filename.is_empty() || filename.contains(&b'/') || filename == b"." || filename == b".."
        {
            return Err(PortalError::InvalidArgument(
                "Invalid filename passed".into(),
            ));
        }
        let fuse_dev = self.fuse_dev;
        let found =
            tokio::task::spawn_blocking(move || fd_path::path_for_fd(fd.as_fd(), true, |_| None))
                .await
                .map_err(|_| invalid_fd())?;
        let parent = found.map_err(|e| {
            tracing::debug!("Invalid fd passed: {e}");
            invalid_fd()
        })?;
        if !parent.is_dir() || parent.dev == fuse_dev {
            return Err(invalid_fd());
        }
        let name = std::ffi::OsStr::from_bytes(&filename);
        Ok((parent.path.join(name), parent.dev, parent.ino))
    }
}

fn parse_perms(perms: &[String]) -> Result<Perms, PortalError> {
    Perms::parse(perms).map_err(|_| PortalError::InvalidArgument("No such permission".into()))
}

fn check_app_id(app: &str) -> Result<(), PortalError> {
    AppId::parse(app)
        .map(drop)
        .map_err(|_| PortalError::InvalidArgument(format!("'{app}' is not a valid app name")))
}

#[zbus::interface(name = "org.freedesktop.portal.Documents")]
impl Documents {
    #[zbus(out_args("path"))]
    async fn get_mount_point(&self) -> Vec<u8> {
        bytestring(&self.0.mountpoint)
    }

    #[zbus(out_args("doc_id"))]
    async fn add(
        &self,
        o_path_fd: zvariant::OwnedFd,
        reuse_existing: bool,
        persistent: bool,
        #[zbus(header)] hdr: Header<'_>,
        #[zbus(connection)] conn: &zbus::Connection,
    ) -> Result<String, PortalError> {
        let caller = self.0.caller(conn, &hdr).await?;
        let mut flags = 0;
        if reuse_existing {
            flags |= add_flags::REUSE_EXISTING;
        }
        if persistent {
            flags |= add_flags::PERSISTENT;
        }
        let ids = self
            .0
            .add_full(&caller, vec![o_path_fd.into()], flags, "", Perms::NONE)
            .await?;
        Ok(ids.into_iter().next().unwrap_or_default())
    }

    #[zbus(out_args("doc_id"))]
    #[allow(clippy::too_many_arguments)]
    async fn add_named(
        &self,
        o_path_parent_fd: zvariant::OwnedFd,
        filename: Vec<u8>,
        reuse_existing: bool,
        persistent: bool,
        #[zbus(header)] hdr: Header<'_>,
        #[zbus(connection)] conn: &zbus::Connection,
    ) -> Result<String, PortalError> {
        let caller = self.0.caller(conn, &hdr).await?;
        let (path, dev, ino) = self
            .0
            .named_path(&caller, o_path_parent_fd.into(), filename)
            .await?;
        let (id, created) = {
            let mut table = self.0.table.write();
            let (id, created) = State::create_doc(
                &mut table,
                path,
                dev,
                ino,
                reuse_existing,
                persistent,
                false,
            );
            let wait = (created && persistent).then(|| {
                let doc = table.get(&id).cloned();
                doc.map(|doc| {
                    self.0.writer.queue(Write::Create {
                        id: id.clone(),
                        doc,
                    })
                })
            });
            (id, wait.flatten())
        };
        self.0
            .finish(
                created.into_iter().collect(),
                vec![(id.clone(), vec![String::new()])],
            )
            .await;
        Ok(id)
    }

    #[zbus(out_args("doc_ids", "extra_out"))]
    #[allow(clippy::too_many_arguments)]
    async fn add_full(
        &self,
        o_path_fds: Vec<zvariant::OwnedFd>,
        flags: u32,
        app_id: &str,
        permissions: Vec<String>,
        #[zbus(header)] hdr: Header<'_>,
        #[zbus(connection)] conn: &zbus::Connection,
    ) -> Result<(Vec<String>, HashMap<String, OwnedValue>), PortalError> {
        let caller = self.0.caller(conn, &hdr).await?;
        if flags & !add_flags::ALL != 0 {
            return Err(PortalError::InvalidArgument("Invalid flags".into()));
        }
        let target_perms = parse_perms(&permissions)?;
        if !app_id.is_empty() {
            check_app_id(app_id)?;
        }
        if o_path_fds.is_empty() {
            return Err(PortalError::InvalidArgument("No fds passed".into()));
        }
        let fds = o_path_fds.into_iter().map(OwnedFd::from).collect();
        let ids = self
            .0
            .add_full(&caller, fds, flags, app_id, target_perms)
            .await?;
        Ok((ids, self.0.mountpoint_extra()))
    }

    #[zbus(out_args("doc_id", "extra_out"))]
    #[allow(clippy::too_many_arguments)]
    async fn add_named_full(
        &self,
        o_path_fd: zvariant::OwnedFd,
        filename: Vec<u8>,
        flags: u32,
        app_id: &str,
        permissions: Vec<String>,
        #[zbus(header)] hdr: Header<'_>,
        #[zbus(connection)] conn: &zbus::Connection,
    ) -> Result<(String, HashMap<String, OwnedValue>), PortalError> {
        let caller = self.0.caller(conn, &hdr).await?;
        if caller != Caller::Host {
            return Err(not_enough());
        }
        if flags & !add_flags::ALL != 0 || flags & add_flags::EXPORT_DIRECTORY != 0 {
            return Err(PortalError::InvalidArgument("Invalid flags".into()));
        }
        let target_perms = parse_perms(&permissions)?;
        if !app_id.is_empty() {
            check_app_id(app_id)?;
        }
        let reuse_existing = flags & add_flags::REUSE_EXISTING != 0;
        let persistent = flags & add_flags::PERSISTENT != 0;
        let (path, dev, ino) = self
            .0
            .named_path(&caller, o_path_fd.into(), filename)
            .await?;
        let mut waits = Vec::new();
        let id = {
            let mut table = self.0.table.write();
            let (id, created) = State::create_doc(
                &mut table,
                path,
                dev,
                ino,
                reuse_existing,
                persistent,
                false,
            );
            let grant = !app_id.is_empty() && !target_perms.is_empty();
            if created {
                if grant && let Some(doc) = table.get_mut(&id) {
                    doc.set_perms(app_id, target_perms);
                }
                if persistent && let Some(doc) = table.get(&id) {
                    waits.push(self.0.writer.queue(Write::Create {
                        id: id.clone(),
                        doc: doc.clone(),
                    }));
                }
            } else if grant {
                self.0
                    .set_perms(&mut table, &id, app_id, target_perms, &mut waits);
            }
            id
        };
        let mut views = vec![String::new()];
        if !app_id.is_empty() && !target_perms.is_empty() {
            views.push(app_id.to_owned());
        }
        self.0.finish(waits, vec![(id.clone(), views)]).await;
        Ok((id, self.0.mountpoint_extra()))
    }

    async fn grant_permissions(
        &self,
        doc_id: &str,
        app_id: &str,
        permissions: Vec<String>,
        #[zbus(header)] hdr: Header<'_>,
        #[zbus(connection)] conn: &zbus::Connection,
    ) -> Result<(), PortalError> {
        let caller = self.0.caller(conn, &hdr).await?;
        let me = caller.app_id_str().unwrap_or_default();
        let mut waits = Vec::new();
        {
            let mut table = self.0.table.write();
            let doc = table.get(doc_id).ok_or_else(|| no_such(doc_id))?;
            check_app_id(app_id)?;
            let perms = parse_perms(&permissions)?;
            // The granter must hold grant-permissions and all it grants.
            if !doc.perms_of(me).contains(Perms::GRANT | perms) {
                return Err(not_enough());
            }
            let new = perms | doc.perms_of(app_id);
            self.0
                .set_perms(&mut table, doc_id, app_id, new, &mut waits);
        }
        self.0
            .finish(waits, vec![(doc_id.to_owned(), vec![app_id.to_owned()])])
            .await;
        Ok(())
    }

    async fn revoke_permissions(
        &self,
        doc_id: &str,
        app_id: &str,
        permissions: Vec<String>,
        #[zbus(header)] hdr: Header<'_>,
        #[zbus(connection)] conn: &zbus::Connection,
    ) -> Result<(), PortalError> {
        let caller = self.0.caller(conn, &hdr).await?;
        let me = caller.app_id_str().unwrap_or_default();
        let mut waits = Vec::new();
        {
            let mut table = self.0.table.write();
            let doc = table.get(doc_id).ok_or_else(|| no_such(doc_id))?;
            check_app_id(app_id)?;
            let perms = parse_perms(&permissions)?;
            // The revoker must hold grant-permissions, and not be the target.
            if !doc.perms_of(me).contains(Perms::GRANT) || me == app_id {
                return Err(not_enough());
            }
            let new = doc.perms_of(app_id).without(perms);
            self.0
                .set_perms(&mut table, doc_id, app_id, new, &mut waits);
        }
        self.0
            .finish(waits, vec![(doc_id.to_owned(), vec![app_id.to_owned()])])
            .await;
        Ok(())
    }

    async fn delete(
        &self,
        doc_id: &str,
        #[zbus(header)] hdr: Header<'_>,
        #[zbus(connection)] conn: &zbus::Connection,
    ) -> Result<(), PortalError> {
        let caller = self.0.caller(conn, &hdr).await?;
        let me = caller.app_id_str().unwrap_or_default();
        let (waits, views) = {
            let mut table = self.0.table.write();
            let doc = table.get(doc_id).ok_or_else(|| no_such(doc_id))?;
            if !doc.perms_of(me).contains(Perms::DELETE) {
                return Err(not_enough());
            }
            let doc = table.remove(doc_id).ok_or_else(|| no_such(doc_id))?;
            let mut waits = Vec::new();
            if !doc.flags.transient() {
                waits.push(self.0.writer.queue(Write::Delete {
                    id: doc_id.to_owned(),
                }));
            }
            let mut views: Vec<String> = doc.apps.keys().cloned().collect();
            views.push(String::new());
            (waits, views)
        };
        self.0.finish(waits, vec![(doc_id.to_owned(), views)]).await;
        Ok(())
    }

    #[zbus(out_args("doc_id"))]
    async fn lookup(
        &self,
        filename: Vec<u8>,
        #[zbus(header)] hdr: Header<'_>,
        #[zbus(connection)] conn: &zbus::Connection,
    ) -> Result<String, PortalError> {
        let caller = self.0.caller(conn, &hdr).await?;
        if caller != Caller::Host {
            return Err(PortalError::NotAllowed("Not allowed in sandbox".into()));
        }
        let path = PathBuf::from(std::ffi::OsStr::from_bytes(&strip_nul(filename)));
        let opened = tokio::task::spawn_blocking(move || {
            let fd = rustix::fs::openat(
                rustix::fs::CWD,
                &path,
                rustix::fs::OFlags::PATH | rustix::fs::OFlags::CLOEXEC,
                rustix::fs::Mode::empty(),
            )
            .map_err(|e| PortalError::NotFound(e.to_string()))?;
            fd_path::validate(fd.as_fd(), true, Want::Any, |_| None).map_err(|e| {
                tracing::debug!("Lookup: {e}");
                invalid_fd()
            })
        })
        .await
        .map_err(|_| invalid_fd())??;
        if opened.dev == self.0.fuse_dev {
            // The document's own file (or a directory document's own
            // directory) names it; nothing else on the mount does.
            let node = {
                let inodes = self.0.inodes.lock().unwrap_or_else(|p| p.into_inner());
                inodes.node(opened.ino).cloned()
            };
            let table = self.0.table.read();
            let id = match node {
                Some(Node::File { id, name, .. })
                    if table.get(&id).is_some_and(|d| d.name() == name) =>
                {
                    id
                }
                Some(Node::Sub { id, rel, .. }) if rel.components().count() == 1 => id,
                _ => String::new(),
            };
            return Ok(id);
        }
        let flags = if opened.is_dir {
            DocFlags::DIRECTORY
        } else {
            0
        };
        let table = self.0.table.read();
        for flags in [flags, flags | DocFlags::TRANSIENT] {
            let probe = Document {
                path: opened.path.clone(),
                dev: opened.dir_dev,
                ino: opened.dir_ino,
                flags: DocFlags(flags),
                apps: BTreeMap::new(),
            };
            if let Some(id) = table.find_same(&probe) {
                return Ok(id);
            }
        }
        Ok(String::new())
    }

    #[zbus(out_args("path", "apps"))]
    async fn info(
        &self,
        doc_id: &str,
        #[zbus(header)] hdr: Header<'_>,
        #[zbus(connection)] conn: &zbus::Connection,
    ) -> Result<(Vec<u8>, HashMap<String, Vec<String>>), PortalError> {
        let caller = self.0.caller(conn, &hdr).await?;
        if caller != Caller::Host {
            return Err(PortalError::NotAllowed("Not allowed in sandbox".into()));
        }
        let table = self.0.table.read();
        let doc = table
            .get(doc_id)
            .ok_or_else(|| PortalError::InvalidArgument("Invalid ID passed".into()))?;
        Ok((
            bytestring(&doc.path),
            doc.app_permissions().into_iter().collect(),
        ))
    }

    #[zbus(out_args("docs"))]
    async fn list(
        &self,
        app_id: &str,
        #[zbus(header)] hdr: Header<'_>,
        #[zbus(connection)] conn: &zbus::Connection,
    ) -> Result<HashMap<String, Vec<u8>>, PortalError> {
        let caller = self.0.caller(conn, &hdr).await?;
        if caller != Caller::Host {
            return Err(PortalError::NotAllowed("Not allowed in sandbox".into()));
        }
        let table = self.0.table.read();
        let ids = if app_id.is_empty() {
            table.ids()
        } else {
            table.ids_of_app(app_id)
        };
        Ok(ids
            .into_iter()
            .filter_map(|id| {
                let path = bytestring(&table.get(&id)?.path);
                Some((id, path))
            })
            .collect())
    }

    /// Host paths of the documents the caller has an entry in (all for the
    /// host); unknown or foreign ids are left out, as upstream.
    #[zbus(out_args("paths"))]
    async fn get_host_paths(
        &self,
        doc_ids: Vec<String>,
        #[zbus(header)] hdr: Header<'_>,
        #[zbus(connection)] conn: &zbus::Connection,
    ) -> Result<HashMap<String, Vec<u8>>, PortalError> {
        let caller = self.0.caller(conn, &hdr).await?;
        let me = caller.app_id_str().unwrap_or_default();
        let table = self.0.table.read();
        let mut out = HashMap::new();
        for id in doc_ids {
            let Some(doc) = table.get(&id) else {
                tracing::warn!(%id, "GetHostPaths: no such document");
                continue;
            };
            if !me.is_empty() && !doc.apps.contains_key(me) {
                tracing::warn!(%id, app = me, "GetHostPaths: not the app's document");
                continue;
            }
            out.insert(id, bytestring(&doc.path));
        }
        Ok(out)
    }

    #[zbus(property(emits_changed_signal = "const"), name = "version")]
    async fn version(&self) -> u32 {
        5
    }
}

/// Applies the store's changes made by others (say `permctl revoke`) to
/// the memory table and drops the kernel's caches of what changed.
pub struct StoreSync {
    pub table: SharedTable,
    pub invalidator: Invalidator,
}

impl StoreSync {
    /// Documents loaded late (the store appeared after we started): each
    /// id not already made here meanwhile is added.
    pub fn merge_loaded(&self, docs: Vec<(String, Document)>) {
        for (id, doc) in docs {
            if self.table.read().get(&id).is_none() {
                self.store_changed(&id, Some(doc));
            }
        }
    }
}

impl Observer for StoreSync {
    fn holds(&self, id: &str, doc: Option<&Document>) -> bool {
        let table = self.table.read();
        match (table.get(id), doc) {
            (Some(ours), Some(theirs)) => ours == theirs,
            (None, None) => true,
            _ => false,
        }
    }

    fn store_changed(&self, id: &str, doc: Option<Document>) {
        let views = {
            let mut table = self.table.write();
            let old = table.get(id).cloned();
            // A transient document lives here only; the store cannot speak
            // for it.
            if old.as_ref().is_some_and(|d| d.flags.transient()) {
                return;
            }
            if old == doc {
                return;
            }
            let mut views: Vec<String> = old
                .iter()
                .chain(doc.iter())
                .flat_map(|d| d.apps.keys().cloned())
                .collect();
            views.sort();
            views.dedup();
            views.push(String::new());
            match doc {
                Some(doc) => {
                    table.insert(id.to_owned(), doc);
                }
                None => {
                    table.remove(id);
                }
            }
            views
        };
        tracing::debug!(id, "document changed in the store");
        let inv = self.invalidator.clone();
        let id = id.to_owned();
        tokio::task::spawn_blocking(move || {
            for view in views {
                inv.doc_view(&id, &view);
            }
        });
    }
}
