//! The FUSE file system at `$XDG_RUNTIME_DIR/doc`, upstream's layout:
//!
//! ```text
//! by-app/APP_ID/ID/NAME   the documents APP_ID may read, its permissions enforced
//! ID/NAME                 every document (the host's view)
//! ```
//!
//! One thread serves the kernel's requests ([`mount`]); it reads the shared
//! [`SharedTable`] on every request (no D-Bus round trip) and decides access
//! from the node's place in the tree. Virtual directories are cached by the
//! kernel for a minute and invalidated ([`Invalidator`]) whenever a grant or
//! a document changes, so access ends at once. The entry and attributes of
//! a file document are cached for a minute while inotify watches its
//! real directory ([`watch`]), which drops them the moment anyone changes
//! the file; other real files (temporary files, inside directory
//! documents) get no entry or attribute caching. By default opens never
//! reach us after the first (see [`Filesystem::open`] on [`DocFs`]): reads
//! and writes name the inode number, and the page cache is dropped whenever
//! the kernel sees a new mtime or size (`FUSE_AUTO_INVAL_DATA`). With
//! [`FileCaching::Off`] every open is asked and gets a handle, as upstream.
//!
//! Safe save: in a document directory the view may create other names.
//! Each is a real temporary file `.xdp-NAME-XXXXXX` in the document's real
//! directory, visible as NAME in this view only; renaming it over the
//! document's name renames the real file over the real document, so the
//! original is never half-written.

mod fusermount;
mod inodes;
mod io;
mod real;
mod tree;
mod watch;

use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap};
use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use fuser::{
    FileAttr, FileType, Filesystem, MountOption, ReplyAttr, ReplyCreate, ReplyData, ReplyDirectory,
    ReplyEmpty, ReplyEntry, ReplyOpen, ReplyWrite, ReplyXattr, Request, TimeOrNow,
};
use rustix::fs::{AtFlags, Stat, Timestamps};
use rustix::io::Errno;

pub use inodes::{BY_APP_INO, Inodes, Node, ROOT_INO, View};
pub use tree::locate;

use crate::document::Document;
use crate::permissions::Perms;
use crate::table::SharedTable;

/// The extended attribute naming a document's host path.
pub const HOST_PATH_XATTR: &str = "user.document-portal.host-path";

/// How long the kernel may cache virtual directories (invalidated on
/// every change that affects them).
const VIRTUAL_TTL: Duration = Duration::from_secs(60);
/// Real files that are not watched: no caching of entries or attributes.
const REAL_TTL: Duration = Duration::ZERO;
use watch::FILE_TTL;

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// What the mount shares with the D-Bus side.
#[derive(Clone, Default)]
pub struct Shared {
    pub table: SharedTable,
    pub inodes: Arc<Mutex<Inodes>>,
    /// Set when we unmount; a session that ends without it was unmounted
    /// from outside.
    pub closing: Arc<std::sync::atomic::AtomicBool>,
}

/// A real file held open for one of our numbers, until the kernel forgets
/// the number: one created through us (its creator may write to it
/// whatever mode it was created with), or one whose name was removed or
/// replaced through us while a process may still have it open (that
/// process keeps reading and writing the file itself, as on any file
/// system).
struct Held {
    file: Arc<File>,
    view: View,
    id: String,
    /// The real file's device and inode.
    real: (u64, u64),
    /// Its name is gone: only this fd reaches it.
    detached: bool,
    /// Opened for reading (a file created write-only is not).
    readable: bool,
    /// Opened for writing (a file created read-only is not).
    writable: bool,
}

impl Held {
    fn new(fd: OwnedFd, view: View, id: String, detached: bool) -> Option<Held> {
        let st = rustix::fs::fstat(&fd).ok()?;
        let mode = rustix::fs::fcntl_getfl(&fd).map(|f| f & rustix::fs::OFlags::RWMODE);
        Some(Held {
            readable: mode.is_ok_and(|m| m != rustix::fs::OFlags::WRONLY),
            writable: mode.is_ok_and(|m| m != rustix::fs::OFlags::RDONLY),
            file: Arc::new(File::from(fd)),
            view,
            id,
            real: (st.st_dev, st.st_ino),
            detached,
        })
    }

    /// Whether this fd can serve a read (`need` READ) or a write (WRITE).
    fn serves(&self, need: Perms) -> bool {
        if need.contains(Perms::WRITE) {
            self.writable
        } else {
            self.readable
        }
    }
}

/// Held files beyond which the created (not detached) ones are let go (they
/// are reopened by name when next used).
const HELD_MAX: usize = 1024;

/// Where a read or write goes: a held file, or a real file to open by name
/// for that one request (on an I/O worker, so a real file that is slow to
/// open holds a worker, not the mount).
enum Target {
    File(Arc<File>),
    At(OwnedFd, OsString, i32),
}

/// The file system the FUSE thread runs.
pub struct DocFs {
    shared: Shared,
    held: HashMap<u64, Held>,
    /// Opens answered ENOSYS, so the kernel opens without asking (see
    /// [`Filesystem::open`]); else each open gets a handle, as upstream.
    zero_open: bool,
    /// Open files by handle, with the number each was opened as (opens
    /// asked).
    handles: HashMap<u64, (u64, Held)>,
    next_fh: u64,
    /// (mtime s, mtime ns, size) of a real file as last seen at an open or
    /// a release, per number (opens asked: the page cache is kept across
    /// opens while the file is unchanged).
    seen: HashMap<u64, (i64, i64, i64)>,
    /// Temporary files per document directory: visible name -> real name.
    temps: HashMap<(View, String), BTreeMap<OsString, OsString>>,
    uid: u32,
    gid: u32,
    io: io::Pool,
    /// The real directories of file documents (None: no inotify).
    watches: Option<watch::Watches>,
    /// (mtime s, mtime ns, size) of a real file as we last told the kernel,
    /// per number: a read or write finding the file otherwise drops the
    /// kernel's attributes at once (see [`DocFs::io_target`]).
    told: RefCell<HashMap<u64, (i64, i64, i64)>>,
    /// To drop them (set once the session exists).
    notifier: Arc<Mutex<Option<fuser::Notifier>>>,
}

impl DocFs {
    fn new(
        shared: Shared,
        watches: Option<watch::Watches>,
        notifier: Arc<Mutex<Option<fuser::Notifier>>>,
        zero_open: bool,
    ) -> DocFs {
        DocFs {
            shared,
            held: HashMap::new(),
            zero_open,
            handles: HashMap::new(),
            next_fh: 1,
            seen: HashMap::new(),
            temps: HashMap::new(),
            uid: rustix::process::geteuid().as_raw(),
            gid: rustix::process::getegid().as_raw(),
            io: io::Pool::new(),
            watches,
            told: RefCell::default(),
            notifier,
        }
    }

    fn node(&self, ino: u64) -> Option<Node> {
        lock(&self.shared.inodes).node(ino).cloned()
    }

    fn ino(&self, node: Node) -> u64 {
        lock(&self.shared.inodes).ino(node)
    }

    /// The document and what `view` may do with it, if the view sees it
    /// (the host sees every document; an app those it may read).
    fn visible(&self, view: &str, id: &str) -> Option<(Document, Perms)> {
        let table = self.shared.table.read();
        let doc = table.get(id)?;
        let perms = doc.perms_of(view);
        perms.contains(Perms::READ).then(|| (doc.clone(), perms))
    }

    fn virtual_attr(&self, ino: u64, mode: u16) -> FileAttr {
        FileAttr {
            ino,
            size: 0,
            blocks: 0,
            atime: UNIX_EPOCH,
            mtime: UNIX_EPOCH,
            ctime: UNIX_EPOCH,
            crtime: UNIX_EPOCH,
            kind: FileType::Directory,
            perm: mode,
            nlink: 2,
            uid: self.uid,
            gid: self.gid,
            rdev: 0,
            blksize: 4096,
            flags: 0,
        }
    }

    /// The attributes of a virtual node (None: not a virtual node, or not
    /// visible).
    fn virtual_node_attr(&self, ino: u64, node: &Node) -> Result<FileAttr, Errno> {
        match node {
            Node::Root | Node::ByApp | Node::App(_) => Ok(self.virtual_attr(ino, 0o500)),
            Node::DocDir { view, id } => {
                // Upstream's modes: a file document's directory is
                // writable (names may be created there) when the view may
                // write; a directory document's holds only the directory.
                let (doc, perms) = self.visible(view, id).ok_or(Errno::NOENT)?;
                let mode = if perms.contains(Perms::WRITE) && !doc.flags.directory() {
                    0o700
                } else {
                    0o500
                };
                Ok(self.virtual_attr(ino, mode))
            }
            Node::File { .. } | Node::Sub { .. } => Err(Errno::NOTDIR),
        }
    }

    /// The real name behind a file node.
    fn real_name(&self, view: &str, id: &str, name: &OsStr, doc: &Document) -> Option<OsString> {
        if name == doc.name() {
            return Some(name.to_owned());
        }
        self.temps
            .get(&(view.to_owned(), id.to_owned()))?
            .get(name)
            .cloned()
    }

    fn file_attr(&self, ino: u64, st: &Stat, perms: Perms) -> FileAttr {
        self.told.borrow_mut().insert(ino, stat_key(st));
        let time = |s: i64, ns: i64| {
            if s >= 0 {
                UNIX_EPOCH + Duration::new(s as u64, ns as u32)
            } else {
                UNIX_EPOCH
            }
        };
        // No setuid, setgid or sticky bits; no write bits in a read-only view.
        let mut perm = (st.st_mode & 0o777) as u16;
        if !perms.contains(Perms::WRITE) {
            perm &= !0o222;
        }
        FileAttr {
            ino,
            size: st.st_size as u64,
            blocks: st.st_blocks as u64,
            atime: time(st.st_atime, st.st_atime_nsec as i64),
            mtime: time(st.st_mtime, st.st_mtime_nsec as i64),
            ctime: time(st.st_ctime, st.st_ctime_nsec as i64),
            crtime: UNIX_EPOCH,
            kind: kind_of(st.st_mode),
            perm,
            nlink: st.st_nlink as u32,
            uid: st.st_uid,
            gid: st.st_gid,
            rdev: 0,
            blksize: st.st_blksize as u32,
            flags: 0,
        }
    }

    /// Stat of a file node's real file: (doc, perms, real dir fd, real
    /// name, stat).
    fn real_file(
        &self,
        view: &str,
        id: &str,
        name: &OsStr,
    ) -> Result<(Document, Perms, OwnedFd, OsString, Stat), Errno> {
        let (doc, perms) = self.visible(view, id).ok_or(Errno::NOENT)?;
        if doc.flags.directory() {
            return Err(Errno::NOENT);
        }
        let real = self.real_name(view, id, name, &doc).ok_or(Errno::NOENT)?;
        let dir = real::open_dir(&doc)?;
        // Watched before the stat, so a change right after it is not missed.
        if name == doc.name()
            && let Some(w) = &self.watches
        {
            w.watch(&dir, doc.dev, doc.ino, id);
        }
        let st = real::stat_file(&dir, &real)?;
        Ok((doc, perms, dir, real, st))
    }

    /// How long the kernel may cache the entry and attributes of file node
    /// `name` of `doc`: a while for the document's own name while its
    /// directory is watched, else not at all.
    fn file_ttl(&self, doc: &Document, name: &OsStr) -> Duration {
        match &self.watches {
            Some(w) if name == doc.name() && w.is_watched(doc.dev, doc.ino) => FILE_TTL,
            _ => REAL_TTL,
        }
    }

    fn doc_dir_of(&self, parent: u64) -> Result<(View, String, Document, Perms), Errno> {
        match self.node(parent) {
            Some(Node::DocDir { view, id }) => {
                let (doc, perms) = self.visible(&view, &id).ok_or(Errno::NOENT)?;
                if doc.flags.directory() {
                    // Directory documents are not served yet.
                    return Err(Errno::PERM);
                }
                Ok((view, id, doc, perms))
            }
            Some(Node::File { .. }) => Err(Errno::NOTDIR),
            Some(_) => Err(Errno::PERM),
            None => Err(Errno::NOENT),
        }
    }

    /// Holds `fd` (created through us, or `detached` from its name) for
    /// number `ino` until the kernel forgets it.
    pub(super) fn hold(&mut self, ino: u64, fd: OwnedFd, view: View, id: String, detached: bool) {
        let Some(held) = Held::new(fd, view, id, detached) else {
            return;
        };
        if self.held.len() >= HELD_MAX {
            self.held.retain(|_, h| h.detached);
        }
        self.held.insert(ino, held);
    }

    /// A file created through us as number `ino`: with zero-message opens
    /// held for the number (the kernel will send no RELEASE; handle 0),
    /// else a handle of its own.
    fn adopt_created(&mut self, ino: u64, fd: OwnedFd, view: View, id: String) -> u64 {
        self.seen.remove(&ino);
        if self.zero_open {
            self.hold(ino, fd, view, id, false);
            0
        } else {
            self.new_handle(ino, fd, view, id)
        }
    }

    fn new_handle(&mut self, ino: u64, fd: OwnedFd, view: View, id: String) -> u64 {
        let Some(held) = Held::new(fd, view, id, false) else {
            return 0;
        };
        let fh = self.next_fh;
        self.next_fh += 1;
        self.handles.insert(fh, (ino, held));
        fh
    }

    /// Where an I/O request with handle `fh` goes, if it has one (opens
    /// asked, [`FileCaching::Off`]), and its view may still `need` it: a
    /// grant revoked or a document deleted ends access through open files
    /// too.
    fn by_handle(&self, fh: u64, need: Perms) -> Option<Result<Target, Errno>> {
        let (_, h) = self.handles.get(&fh)?;
        Some(match self.visible(&h.view, &h.id) {
            Some((_, perms)) if perms.contains(need) => Ok(Target::File(h.file.clone())),
            _ => Err(Errno::ACCESS),
        })
    }

    /// Whether the kernel may keep the page cache of `ino` opened with
    /// stat `st` (opens asked): only if the file is as we last saw it.
    fn keep_cache(&mut self, ino: u64, st: &Stat) -> bool {
        self.seen.insert(ino, stat_key(st)) == Some(stat_key(st))
    }

    /// A read or write found the real file of number `ino` as `st`: if that
    /// is not what the kernel was last told (changed on the host, and
    /// inotify has not told us yet, or is not watching), its attributes go
    /// now, so a read until EOF is not cut at the old size (the kernel
    /// fetches the size again when a read reaches it). Attributes only
    /// (offset -1) take no lock a request holds: safe on this thread.
    fn check_told(&self, ino: u64, st: &Stat) {
        let now = stat_key(st);
        let old = self.told.borrow_mut().insert(ino, now);
        if old.is_some_and(|old| old != now)
            && let Some(n) = lock(&self.notifier).as_ref()
        {
            let _ = n.inval_inode(ino, -1, 0);
        }
    }

    /// Before `name` in `dir` loses its name through us: an fd of it, so
    /// that a process with it open keeps the file itself.
    pub(super) fn keep_for_detach(dir: impl AsFd + Copy, name: &OsStr) -> Option<OwnedFd> {
        real::stat_file(dir, name).ok()?;
        real::open_file(dir, name, libc::O_RDWR, 0)
            .or_else(|_| real::open_file(dir, name, libc::O_RDONLY, 0))
            .ok()
    }

    /// The file a read (`need` READ) or write (WRITE) of number `ino` goes
    /// to, if its view may still `need` it: a grant revoked or a document
    /// deleted ends access for open files too. The kernel opens files
    /// without asking us (see [`Filesystem::open`]), so a request names
    /// the number only: it reaches the real file by the number's name,
    /// or the held file when the name is gone.
    fn io_target(&self, ino: u64, need: Perms) -> Result<Target, Errno> {
        let node = self.node(ino);
        let (view, id) = match (&node, self.held.get(&ino)) {
            (Some(Node::File { view, id, .. } | Node::Sub { view, id, .. }), _) => {
                (view.clone(), id.clone())
            }
            (Some(_), _) => return Err(Errno::ISDIR),
            (None, Some(h)) => (h.view.clone(), h.id.clone()),
            (None, None) => return Err(Errno::NOENT),
        };
        let (_, perms) = self.visible(&view, &id).ok_or(Errno::ACCESS)?;
        if !perms.contains(need) {
            return Err(Errno::ACCESS);
        }
        // Its name went through us: whatever the name holds now is another
        // file.
        if let Some(h) = self.held.get(&ino).filter(|h| h.detached) {
            return Ok(Target::File(h.file.clone()));
        }
        let named = match &node {
            Some(Node::File { view, id, name }) => self
                .real_file(view, id, name)
                .map(|(_, _, dir, real, st)| (dir, real, st)),
            Some(Node::Sub { view, id, rel }) => self.resolve_parent(view, id, rel).and_then(
                |(_, dir, name): (Perms, OwnedFd, OsString)| {
                    let st = real::stat_file(&dir, &name)?;
                    Ok((dir, name, st))
                },
            ),
            _ => Err(Errno::NOENT),
        };
        if let Ok((_, _, st)) = &named {
            self.check_told(ino, st);
        }
        match (named, self.held.get(&ino)) {
            (Ok((_, _, st)), Some(h)) if h.real == (st.st_dev, st.st_ino) && h.serves(need) => {
                Ok(Target::File(h.file.clone()))
            }
            (Ok((dir, name, _)), _) => {
                let flags = if need.contains(Perms::WRITE) {
                    libc::O_RDWR
                } else {
                    libc::O_RDONLY
                };
                Ok(Target::At(dir, name, flags))
            }
            (Err(Errno::NOENT), Some(h)) => Ok(Target::File(h.file.clone())),
            (Err(e), _) => Err(e),
        }
    }

    fn lookup_inner(&mut self, parent: u64, name: &OsStr) -> Result<(FileAttr, Duration), Errno> {
        let parent_node = self.node(parent).ok_or(Errno::NOENT)?;
        let name_str = name.to_str();
        match parent_node {
            Node::Root => {
                let node = if name == "by-app" {
                    Node::ByApp
                } else {
                    let id = name_str.ok_or(Errno::NOENT)?;
                    self.visible("", id).ok_or(Errno::NOENT)?;
                    Node::DocDir {
                        view: String::new(),
                        id: id.to_owned(),
                    }
                };
                let ino = self.ino(node.clone());
                Ok((self.virtual_node_attr(ino, &node)?, VIRTUAL_TTL))
            }
            Node::ByApp => {
                let app = name_str.ok_or(Errno::NOENT)?;
                porthole_identity::AppId::parse(app).map_err(|_| Errno::NOENT)?;
                let ino = self.ino(Node::App(app.to_owned()));
                Ok((self.virtual_attr(ino, 0o500), VIRTUAL_TTL))
            }
            Node::App(app) => {
                let id = name_str.ok_or(Errno::NOENT)?;
                self.visible(&app, id).ok_or(Errno::NOENT)?;
                let node = Node::DocDir {
                    view: app,
                    id: id.to_owned(),
                };
                let ino = self.ino(node.clone());
                Ok((self.virtual_node_attr(ino, &node)?, VIRTUAL_TTL))
            }
            Node::DocDir { view, id }
                if self
                    .visible(&view, &id)
                    .is_some_and(|(d, _)| d.flags.directory()) =>
            {
                let (doc, _) = self.visible(&view, &id).ok_or(Errno::NOENT)?;
                if name != doc.name() {
                    return Err(Errno::NOENT);
                }
                Ok((self.tree_node(&view, &id, PathBuf::from(name))?, REAL_TTL))
            }
            Node::Sub { view, id, rel } => {
                Ok((self.tree_node(&view, &id, rel.join(name))?, REAL_TTL))
            }
            Node::DocDir { view, id } => {
                let (doc, perms, _, _, st) = self.real_file(&view, &id, name)?;
                let ttl = self.file_ttl(&doc, name);
                let ino = self.ino(Node::File {
                    view,
                    id,
                    name: name.to_owned(),
                });
                Ok((self.file_attr(ino, &st, perms), ttl))
            }
            Node::File { .. } => Err(Errno::NOTDIR),
        }
    }

    fn getattr_inner(&mut self, ino: u64, fh: Option<u64>) -> Result<(FileAttr, Duration), Errno> {
        // Through an open file with a handle (fstat, or the kernel checking
        // the size at the end of a read): the file itself, wherever its
        // name went.
        if let Some((_, h)) = fh.and_then(|fh| self.handles.get(&fh)) {
            let (_, perms) = self.visible(&h.view, &h.id).ok_or(Errno::ACCESS)?;
            let st = rustix::fs::fstat(&*h.file)?;
            return Ok((self.file_attr(ino, &st, perms), REAL_TTL));
        }
        // A number whose name went through us (the kernel keeps it for a
        // file still open): the file itself, not what the name holds now.
        if let Some(h) = self.held.get(&ino).filter(|h| h.detached) {
            let (_, perms) = self.visible(&h.view, &h.id).ok_or(Errno::ACCESS)?;
            let st = rustix::fs::fstat(&*h.file)?;
            return Ok((self.file_attr(ino, &st, perms), REAL_TTL));
        }
        // A file of a document the view may no longer read, asked by
        // number (through a file opened before the revocation, or the
        // kernel checking the size before a read): refused as its reads are.
        if let Some(Node::File { view, id, .. } | Node::Sub { view, id, .. }) = self.node(ino)
            && self.visible(&view, &id).is_none()
        {
            return Err(Errno::ACCESS);
        }
        match self.getattr_by_name(ino) {
            // The name is gone (unlinked or replaced, through us or on the
            // host) but the file may still be open (an fstat, which the
            // kernel sends without a handle, or the kernel checking the
            // size at the end of a read): the held file, or an open handle
            // of that number, answers.
            Err(Errno::NOENT) => {
                let held = self.held.get(&ino).or_else(|| {
                    self.handles
                        .values()
                        .find(|(i, _)| *i == ino)
                        .map(|(_, h)| h)
                });
                let Some(h) = held else {
                    return Err(Errno::NOENT);
                };
                let (_, perms) = self.visible(&h.view, &h.id).ok_or(Errno::ACCESS)?;
                let st = rustix::fs::fstat(&*h.file)?;
                Ok((self.file_attr(ino, &st, perms), REAL_TTL))
            }
            other => other,
        }
    }

    fn getattr_by_name(&mut self, ino: u64) -> Result<(FileAttr, Duration), Errno> {
        let node = self.node(ino).ok_or(Errno::NOENT)?;
        match &node {
            Node::File { view, id, name } => {
                let (doc, perms, _, _, st) = self.real_file(view, id, name)?;
                Ok((self.file_attr(ino, &st, perms), self.file_ttl(&doc, name)))
            }
            Node::Sub { view, id, rel } => {
                let (_, perms, fd) = self.resolve(view, id, rel)?;
                Ok((self.tree_attr(ino, &fd, perms)?, REAL_TTL))
            }
            other => Ok((self.virtual_node_attr(ino, other)?, VIRTUAL_TTL)),
        }
    }

    fn file_node(&self, ino: u64) -> Result<(View, String, OsString), Errno> {
        match self.node(ino) {
            Some(Node::File { view, id, name }) => Ok((view, id, name)),
            Some(_) => Err(Errno::ISDIR),
            None => Err(Errno::NOENT),
        }
    }

    /// The number of file `name` of a document directory, if the kernel may
    /// know it.
    fn known_file(&self, view: &str, id: &str, name: &OsStr) -> Option<u64> {
        lock(&self.shared.inodes).known(&Node::File {
            view: view.to_owned(),
            id: id.to_owned(),
            name: name.to_owned(),
        })
    }

    /// Number `ino` lost its name through us: whoever has it open keeps the
    /// file `kept` (opened before the name went).
    fn detached(&mut self, view: &str, id: &str, ino: Option<u64>, kept: Option<OwnedFd>) {
        match (ino, kept) {
            (Some(ino), Some(fd)) => self.hold(ino, fd, view.to_owned(), id.to_owned(), true),
            (Some(ino), None) => {
                self.held.remove(&ino);
            }
            _ => {}
        }
    }

    /// Number `ino` opened with `flags` as upstream opens it (refused as
    /// upstream refuses it), with its view and document.
    fn open_real(&mut self, ino: u64, flags: i32) -> Result<(OwnedFd, View, String), Errno> {
        // O_TRUNC never reaches us (no FUSE_ATOMIC_O_TRUNC: the kernel
        // truncates through setattr); dropped anyway, so an open that only
        // checks never truncates.
        let flags = flags & !(libc::O_CREAT | libc::O_EXCL | libc::O_TRUNC);
        if let Some(Node::Sub { view, id, rel }) = self.node(ino) {
            let fd = self.tree_open_real(&view, &id, &rel, flags)?;
            return Ok((fd, view, id));
        }
        let (view, id, name) = self.file_node(ino)?;
        let (_, perms, dir, real, _) = self.real_file(&view, &id, &name)?;
        if wants_write(flags) && !perms.contains(Perms::WRITE) {
            return Err(Errno::ACCESS);
        }
        Ok((real::open_file(&dir, &real, flags, 0)?, view, id))
    }

    /// An open that is asked ([`FileCaching::Off`]): a handle of its own,
    /// the page cache kept only while the file is as we last saw it.
    fn open_handle(&mut self, ino: u64, flags: i32) -> Result<(u64, u32), Errno> {
        let (fd, view, id) = self.open_real(ino, flags)?;
        let st = rustix::fs::fstat(&fd)?;
        let keep = self.keep_cache(ino, &st);
        let fh = self.new_handle(ino, fd, view, id);
        Ok((
            fh,
            if keep {
                fuser::consts::FOPEN_KEEP_CACHE
            } else {
                0
            },
        ))
    }

    fn create_inner(
        &mut self,
        parent: u64,
        name: &OsStr,
        mode: u32,
        flags: i32,
    ) -> Result<(FileAttr, u64), Errno> {
        if let Some(Node::Sub { view, id, rel }) = self.node(parent) {
            return self.tree_create(&view, &id, &rel, name, mode, flags);
        }
        let (view, id, doc, perms) = self.doc_dir_of(parent)?;
        if !perms.contains(Perms::WRITE) {
            return Err(Errno::ACCESS);
        }
        check_name(name)?;
        let dir = real::open_dir(&doc)?;
        let key = (view.clone(), id.clone());
        let fd = if name == doc.name() {
            real::open_file(&dir, name, flags | libc::O_CREAT, mode)?
        } else if let Some(real_name) = self.temps.get(&key).and_then(|t| t.get(name)).cloned() {
            if flags & libc::O_EXCL != 0 {
                return Err(Errno::EXIST);
            }
            real::open_file(&dir, &real_name, flags & !libc::O_CREAT, mode)?
        } else {
            let (fd, real_name) = real::create_temp(&dir, name, mode & 0o777)?;
            self.temps
                .entry(key)
                .or_default()
                .insert(name.to_owned(), real_name);
            fd
        };
        let st = rustix::fs::fstat(&fd)?;
        let ino = self.ino(Node::File {
            view: view.clone(),
            id: id.clone(),
            name: name.to_owned(),
        });
        let attr = self.file_attr(ino, &st, perms);
        let fh = self.adopt_created(ino, fd, view, id);
        Ok((attr, fh))
    }

    #[allow(clippy::too_many_arguments)]
    fn setattr_inner(
        &mut self,
        ino: u64,
        mode: Option<u32>,
        uid: Option<u32>,
        gid: Option<u32>,
        size: Option<u64>,
        atime: Option<TimeOrNow>,
        mtime: Option<TimeOrNow>,
        fh: Option<u64>,
    ) -> Result<FileAttr, Errno> {
        if uid.is_some() || gid.is_some() {
            return Err(Errno::PERM);
        }
        let times = (atime.is_some() || mtime.is_some()).then(|| Timestamps {
            last_access: timespec(atime),
            last_modification: timespec(mtime),
        });
        // Through an open file (ftruncate, fchmod, futimens) with a handle,
        // or a file whose name is gone: the file itself, wherever its name
        // went since it was opened.
        let open = fh
            .and_then(|fh| self.handles.get(&fh))
            .map(|(_, h)| h)
            .or_else(|| self.held.get(&ino).filter(|h| h.detached));
        if let Some(h) = open {
            let (_, perms) = self.visible(&h.view, &h.id).ok_or(Errno::ACCESS)?;
            if !perms.contains(Perms::WRITE) {
                return Err(Errno::ACCESS);
            }
            if let Some(size) = size {
                rustix::fs::ftruncate(&*h.file, size)?;
            }
            if let Some(mode) = mode {
                rustix::fs::fchmod(&*h.file, rustix::fs::Mode::from_raw_mode(mode & 0o777))?;
            }
            if let Some(times) = times {
                rustix::fs::futimens(&*h.file, &times)?;
            }
            let st = rustix::fs::fstat(&*h.file)?;
            return Ok(self.file_attr(ino, &st, perms));
        }
        if let Some(Node::Sub { view, id, rel }) = self.node(ino) {
            return self.tree_setattr(ino, &view, &id, &rel, mode, size, times);
        }
        let (view, id, name) = self.file_node(ino)?;
        let (_, perms, dir, real, _) = self.real_file(&view, &id, &name)?;
        if !perms.contains(Perms::WRITE) {
            return Err(Errno::ACCESS);
        }
        if let Some(size) = size {
            let fd = real::open_file(&dir, &real, libc::O_WRONLY, 0)?;
            rustix::fs::ftruncate(&fd, size)?;
        }
        if let Some(mode) = mode {
            let fd = real::open_file(&dir, &real, libc::O_RDONLY, 0)?;
            rustix::fs::fchmod(&fd, rustix::fs::Mode::from_raw_mode(mode & 0o777))?;
        }
        if let Some(times) = times {
            rustix::fs::utimensat(&dir, &real, &times, AtFlags::SYMLINK_NOFOLLOW)?;
        }
        let st = real::stat_file(&dir, &real)?;
        Ok(self.file_attr(ino, &st, perms))
    }

    fn unlink_inner(&mut self, parent: u64, name: &OsStr) -> Result<(), Errno> {
        if let Some(Node::Sub { view, id, rel }) = self.node(parent) {
            return self.tree_unlink(&view, &id, &rel, name, false);
        }
        let (view, id, doc, perms) = self.doc_dir_of(parent)?;
        if !perms.contains(Perms::WRITE) {
            return Err(Errno::ACCESS);
        }
        let dir = real::open_dir(&doc)?;
        let real_name = if name == doc.name() {
            real::stat_file(&dir, name)?;
            name.to_owned()
        } else {
            self.real_name(&view, &id, name, &doc).ok_or(Errno::NOENT)?
        };
        let kept = self
            .known_file(&view, &id, name)
            .and_then(|_| Self::keep_for_detach(&dir, &real_name));
        rustix::fs::unlinkat(&dir, &real_name, AtFlags::empty())?;
        if let Some(t) = self.temps.get_mut(&(view.clone(), id.clone())) {
            t.remove(name);
        }
        let gone = lock(&self.shared.inodes).unlinked(&view, &id, name);
        self.detached(&view, &id, gone, kept);
        Ok(())
    }

    fn rename_inner(
        &mut self,
        parent: u64,
        name: &OsStr,
        newparent: u64,
        newname: &OsStr,
        flags: u32,
    ) -> Result<(), Errno> {
        match (self.node(parent), self.node(newparent)) {
            (
                Some(Node::Sub { view, id, rel }),
                Some(Node::Sub {
                    view: v2,
                    id: i2,
                    rel: r2,
                }),
            ) => {
                if view != v2 || id != i2 {
                    return Err(Errno::XDEV);
                }
                if flags != 0 {
                    return Err(Errno::INVAL);
                }
                return self.tree_rename(&view, &id, (&rel, name), (&r2, newname));
            }
            (Some(Node::Sub { .. }), _) | (_, Some(Node::Sub { .. })) => return Err(Errno::XDEV),
            _ => {}
        }
        if parent != newparent {
            return Err(Errno::XDEV);
        }
        let (view, id, doc, perms) = self.doc_dir_of(parent)?;
        if !perms.contains(Perms::WRITE) {
            return Err(Errno::ACCESS);
        }
        if flags != 0 {
            return Err(Errno::INVAL);
        }
        check_name(newname)?;
        if name == newname {
            return Ok(());
        }
        let dir = real::open_dir(&doc)?;
        // The file losing its name to this rename, kept for whoever has it
        // open.
        let kept = self
            .known_file(&view, &id, newname)
            .and_then(|_| self.real_name(&view, &id, newname, &doc))
            .and_then(|real| Self::keep_for_detach(&dir, &real));
        let key = (view.clone(), id.clone());
        let main = doc.name().to_owned();
        let temps = self.temps.entry(key).or_default();
        if newname == main {
            // A temporary file saved over the document: the real rename.
            let real_src = temps.get(name).cloned().ok_or(Errno::NOENT)?;
            rustix::fs::renameat(&dir, &real_src, &dir, &main)?;
            temps.remove(name);
        } else if name == main {
            // The document moved aside (an editor's backup): it becomes a
            // temporary file of this view.
            real::stat_file(&dir, &main)?;
            let real_dst = match temps.get(newname) {
                Some(existing) => existing.clone(),
                None => {
                    let (_fd, fresh) = real::create_temp(&dir, newname, 0o600)?;
                    fresh
                }
            };
            rustix::fs::renameat(&dir, &main, &dir, &real_dst)?;
            temps.insert(newname.to_owned(), real_dst);
        } else {
            let real_src = temps.get(name).cloned().ok_or(Errno::NOENT)?;
            if let Some(old) = temps.get(newname).cloned() {
                rustix::fs::unlinkat(&dir, &old, AtFlags::empty())?;
            }
            temps.remove(name);
            temps.insert(newname.to_owned(), real_src);
        }
        // The file keeps its number under the new name, as the kernel
        // keeps its inode; the one it replaced loses its name.
        let replaced = lock(&self.shared.inodes).renamed(&view, &id, name, newname);
        self.detached(&view, &id, replaced, kept);
        Ok(())
    }

    fn readdir_entries(&self, ino: u64) -> Result<Vec<(u64, FileType, OsString)>, Errno> {
        let node = self.node(ino).ok_or(Errno::NOENT)?;
        let mut out = vec![
            (ino, FileType::Directory, OsString::from(".")),
            (ROOT_INO, FileType::Directory, OsString::from("..")),
        ];
        match node {
            Node::Root => {
                out.push((BY_APP_INO, FileType::Directory, "by-app".into()));
                let ids = self.shared.table.read().ids();
                for id in ids {
                    let i = self.ino(Node::DocDir {
                        view: String::new(),
                        id: id.clone(),
                    });
                    out.push((i, FileType::Directory, id.into()));
                }
            }
            Node::ByApp => {
                let apps = self.shared.table.read().apps();
                for app in apps {
                    let i = self.ino(Node::App(app.clone()));
                    out.push((i, FileType::Directory, app.into()));
                }
            }
            Node::App(app) => {
                let ids: Vec<String> = {
                    let t = self.shared.table.read();
                    t.ids_of_app(&app)
                        .into_iter()
                        .filter(|id| {
                            t.get(id)
                                .is_some_and(|d| d.perms_of(&app).contains(Perms::READ))
                        })
                        .collect()
                };
                for id in ids {
                    let i = self.ino(Node::DocDir {
                        view: app.clone(),
                        id: id.clone(),
                    });
                    out.push((i, FileType::Directory, id.into()));
                }
            }
            Node::Sub { view, id, rel } => {
                out.extend(self.tree_readdir(&view, &id, &rel)?);
            }
            Node::DocDir { view, id } => {
                let (doc, _) = self.visible(&view, &id).ok_or(Errno::NOENT)?;
                if doc.flags.directory() {
                    let st = rustix::fs::fstat(real::open_dir(&doc)?)?;
                    let i = lock(&self.shared.inodes).sub_ino(
                        &view,
                        &id,
                        PathBuf::from(doc.name()),
                        st.st_dev,
                        st.st_ino,
                    );
                    out.push((i, FileType::Directory, doc.name().to_owned()));
                } else {
                    let dir = real::open_dir(&doc)?;
                    let mut names = Vec::new();
                    if real::stat_file(&dir, doc.name()).is_ok() {
                        names.push(doc.name().to_owned());
                    }
                    if let Some(t) = self.temps.get(&(view.clone(), id.clone())) {
                        names.extend(t.keys().cloned());
                    }
                    for name in names {
                        let i = self.ino(Node::File {
                            view: view.clone(),
                            id: id.clone(),
                            name: name.clone(),
                        });
                        out.push((i, FileType::RegularFile, name));
                    }
                }
            }
            Node::File { .. } => return Err(Errno::NOTDIR),
        }
        Ok(out)
    }

    /// The host path for the xattr, and an `O_PATH` fd of the real file for
    /// the others (None for directories).
    /// The real file whose extended attribute `name` setxattr or
    /// removexattr on `ino` may change, or the errno refusing it. As
    /// upstream: only inside a directory document, with write permission;
    /// a file document's are not ours to change (EPERM), nor is the
    /// host-path attribute.
    fn changeable_xattr_target(&self, ino: u64, name: &OsStr) -> Result<OwnedFd, i32> {
        if !matches!(self.node(ino), Some(Node::Sub { .. })) {
            return Err(libc::EPERM);
        }
        let fd = match self.xattr_target(ino) {
            Ok((_, perms, _)) if !perms.contains(Perms::WRITE) => return Err(libc::EACCES),
            Ok((_, _, Some(fd))) => fd,
            Ok(_) => return Err(libc::EPERM),
            Err(e) => return Err(e.raw_os_error()),
        };
        if name == HOST_PATH_XATTR {
            return Err(libc::EPERM);
        }
        Ok(fd)
    }

    fn xattr_target(&self, ino: u64) -> Result<(Document, Perms, Option<OwnedFd>), Errno> {
        match self.node(ino).ok_or(Errno::NOENT)? {
            Node::DocDir { view, id } => {
                let (doc, perms) = self.visible(&view, &id).ok_or(Errno::NOENT)?;
                Ok((doc, perms, None))
            }
            Node::File { view, id, name } => {
                let (doc, perms, dir, real, _) = self.real_file(&view, &id, &name)?;
                let fd = rustix::fs::openat(
                    &dir,
                    &real,
                    rustix::fs::OFlags::PATH
                        | rustix::fs::OFlags::NOFOLLOW
                        | rustix::fs::OFlags::CLOEXEC,
                    rustix::fs::Mode::empty(),
                )?;
                Ok((doc, perms, Some(fd)))
            }
            Node::Sub { view, id, rel } => {
                let (doc, perms, fd) = self.resolve(&view, &id, &rel)?;
                Ok((doc, perms, Some(fd)))
            }
            _ => Err(Errno::NODATA),
        }
    }

    /// The `user.document-portal.host-path` value, as upstream: a file
    /// document's directory shows the host directory holding the file (a
    /// directory document's shows none); a file shows its real path (a
    /// temporary file its `.xdp-` name); a node in a directory document
    /// its path below the exported directory.
    fn host_path_of(&self, ino: u64) -> Option<PathBuf> {
        match self.node(ino)? {
            Node::DocDir { view, id } => {
                let (doc, _) = self.visible(&view, &id)?;
                (!doc.flags.directory()).then(|| doc.dir().to_owned())
            }
            Node::File { view, id, name } => {
                let (doc, _) = self.visible(&view, &id)?;
                let real = self.real_name(&view, &id, &name, &doc)?;
                Some(doc.dir().join(real))
            }
            Node::Sub { view, id, rel } => self.tree_host_path(&view, &id, &rel),
            _ => None,
        }
    }
}

fn stat_key(st: &Stat) -> (i64, i64, i64) {
    (st.st_mtime, st.st_mtime_nsec as i64, st.st_size)
}

fn kind_of(mode: u32) -> FileType {
    match rustix::fs::FileType::from_raw_mode(mode) {
        rustix::fs::FileType::Directory => FileType::Directory,
        rustix::fs::FileType::Symlink => FileType::Symlink,
        rustix::fs::FileType::Fifo => FileType::NamedPipe,
        rustix::fs::FileType::Socket => FileType::Socket,
        rustix::fs::FileType::CharacterDevice => FileType::CharDevice,
        rustix::fs::FileType::BlockDevice => FileType::BlockDevice,
        _ => FileType::RegularFile,
    }
}

/// A time for utimensat: omitted, now, or the given time.
fn timespec(t: Option<TimeOrNow>) -> rustix::fs::Timespec {
    match t {
        None => rustix::fs::Timespec {
            tv_sec: 0,
            tv_nsec: rustix::fs::UTIME_OMIT,
        },
        Some(TimeOrNow::Now) => rustix::fs::Timespec {
            tv_sec: 0,
            tv_nsec: rustix::fs::UTIME_NOW,
        },
        Some(TimeOrNow::SpecificTime(t)) => {
            let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
            rustix::fs::Timespec {
                tv_sec: d.as_secs() as i64,
                tv_nsec: d.subsec_nanos() as _,
            }
        }
    }
}

fn wants_write(flags: i32) -> bool {
    let acc = flags & libc::O_ACCMODE;
    acc == libc::O_WRONLY || acc == libc::O_RDWR || flags & libc::O_TRUNC != 0
}

/// Names the kernel passes are single components; refuse what could still
/// surprise (a NUL cannot arrive; `.` and `..` never reach create).
fn check_name(name: &OsStr) -> Result<(), Errno> {
    let b = name.as_bytes();
    if b.is_empty() || b == b"." || b == b".." || b.contains(&b'/') {
        return Err(Errno::INVAL);
    }
    Ok(())
}

fn xattr_reply(reply: ReplyXattr, size: u32, data: &[u8]) {
    if size == 0 {
        reply.size(data.len() as u32);
    } else if (size as usize) < data.len() {
        reply.error(libc::ERANGE);
    } else {
        reply.data(data);
    }
}

impl Filesystem for DocFs {
    fn destroy(&mut self) {
        // Temporary files nobody renamed over a document are removed with
        // the mount, as upstream removes them with their inode.
        let table = self.shared.table.read();
        for ((_, id), temps) in self.temps.drain() {
            let Some(doc) = table.get(&id) else { continue };
            if let Ok(dir) = real::open_dir(doc) {
                for real_name in temps.values() {
                    let _ = rustix::fs::unlinkat(&dir, real_name, AtFlags::empty());
                }
            }
        }
        drop(table);
        if !self
            .shared
            .closing
            .load(std::sync::atomic::Ordering::SeqCst)
        {
            // Unmounted from outside (fusermount3 -u, umount): the service
            // has nothing left to serve. End it the way a signal would, so
            // the name is released and the exit is clean, as upstream exits
            // when its mount goes away.
            tracing::warn!("the file system was unmounted from outside: exiting");
            let _ = rustix::process::kill_process(
                rustix::process::getpid(),
                rustix::process::Signal::TERM,
            );
        }
    }

    fn lookup(&mut self, _req: &Request<'_>, parent: u64, name: &OsStr, reply: ReplyEntry) {
        match self.lookup_inner(parent, name) {
            Ok((attr, ttl)) => reply.entry(&ttl, &attr, 0),
            Err(e) => reply.error(e.raw_os_error()),
        }
    }

    fn getattr(&mut self, _req: &Request<'_>, ino: u64, fh: Option<u64>, reply: ReplyAttr) {
        match self.getattr_inner(ino, fh) {
            Ok((attr, ttl)) => reply.attr(&ttl, &attr),
            Err(e) => reply.error(e.raw_os_error()),
        }
    }

    fn setattr(
        &mut self,
        _req: &Request<'_>,
        ino: u64,
        mode: Option<u32>,
        uid: Option<u32>,
        gid: Option<u32>,
        size: Option<u64>,
        atime: Option<TimeOrNow>,
        mtime: Option<TimeOrNow>,
        _ctime: Option<SystemTime>,
        fh: Option<u64>,
        _crtime: Option<SystemTime>,
        _chgtime: Option<SystemTime>,
        _bkuptime: Option<SystemTime>,
        _flags: Option<u32>,
        reply: ReplyAttr,
    ) {
        match self.setattr_inner(ino, mode, uid, gid, size, atime, mtime, fh) {
            Ok(attr) => reply.attr(&REAL_TTL, &attr),
            Err(e) => reply.error(e.raw_os_error()),
        }
    }

    fn unlink(&mut self, _req: &Request<'_>, parent: u64, name: &OsStr, reply: ReplyEmpty) {
        match self.unlink_inner(parent, name) {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e.raw_os_error()),
        }
    }

    fn rename(
        &mut self,
        _req: &Request<'_>,
        parent: u64,
        name: &OsStr,
        newparent: u64,
        newname: &OsStr,
        flags: u32,
        reply: ReplyEmpty,
    ) {
        match self.rename_inner(parent, name, newparent, newname, flags) {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e.raw_os_error()),
        }
    }

    /// Zero-message opens: an open we allow is answered ENOSYS, which the
    /// kernel takes as success and as a sign never to send OPEN (nor
    /// RELEASE) again on this mount. Every later open and close then
    /// costs no round trip to us: the kernel checks the caller against the
    /// modes we report (`default_permissions`; a view without write
    /// permission shows no write bits), keeps the page cache (dropped when
    /// the file changes: [`watch`], `FUSE_AUTO_INVAL_DATA`, and the
    /// [`Invalidator`] on a revocation), and each read and write names the
    /// number, checked against the view at that moment ([`DocFs::io_target`]).
    ///
    /// With [`FileCaching::Off`] (upstream's way) every open is asked and
    /// gets a handle, as upstream.
    fn open(&mut self, _req: &Request<'_>, ino: u64, flags: i32, reply: ReplyOpen) {
        if !self.zero_open {
            return match self.open_handle(ino, flags) {
                Ok((fh, open_flags)) => reply.opened(fh, open_flags),
                Err(e) => reply.error(e.raw_os_error()),
            };
        }
        match self.open_real(ino, flags) {
            Ok(_) => reply.error(libc::ENOSYS),
            Err(e) => reply.error(e.raw_os_error()),
        }
    }

    fn init(
        &mut self,
        _req: &Request<'_>,
        config: &mut fuser::KernelConfig,
    ) -> Result<(), libc::c_int> {
        // A file changed behind the kernel's back (its mtime or size differs
        // when the kernel next fetches its attributes) loses its page cache.
        // With opens asked, the open decides instead (`keep_cache`).
        if self.zero_open
            && let Err(missing) = config.add_capabilities(fuser::consts::FUSE_AUTO_INVAL_DATA)
        {
            tracing::warn!(missing, "the kernel lacks FUSE_AUTO_INVAL_DATA");
        }
        Ok(())
    }

    /// The kernel dropped number `ino` (nothing has it open any more): the
    /// file held for it is let go.
    fn forget(&mut self, _req: &Request<'_>, ino: u64, _nlookup: u64) {
        self.held.remove(&ino);
        self.told.get_mut().remove(&ino);
    }

    fn read(
        &mut self,
        _req: &Request<'_>,
        ino: u64,
        fh: u64,
        offset: i64,
        size: u32,
        _flags: i32,
        _lock_owner: Option<u64>,
        reply: ReplyData,
    ) {
        let target = self
            .by_handle(fh, Perms::READ)
            .unwrap_or_else(|| self.io_target(ino, Perms::READ));
        match target {
            Ok(target) => self.io.read(target, offset.max(0) as u64, size, reply),
            Err(e) => reply.error(e.raw_os_error()),
        }
    }

    fn write(
        &mut self,
        _req: &Request<'_>,
        ino: u64,
        fh: u64,
        offset: i64,
        data: &[u8],
        _write_flags: u32,
        _flags: i32,
        _lock_owner: Option<u64>,
        reply: ReplyWrite,
    ) {
        let target = self
            .by_handle(fh, Perms::WRITE)
            .unwrap_or_else(|| self.io_target(ino, Perms::WRITE));
        match target {
            Ok(target) => self
                .io
                .write(target, offset.max(0) as u64, data.to_vec(), reply),
            Err(e) => reply.error(e.raw_os_error()),
        }
    }

    /// Nothing to do at close (writes went to the real file already; no
    /// locks): ENOSYS tells the kernel to stop sending FLUSH, which saves
    /// every close() a round trip.
    fn flush(&mut self, _req: &Request<'_>, _ino: u64, _fh: u64, _lock: u64, reply: ReplyEmpty) {
        reply.error(libc::ENOSYS);
    }

    fn release(
        &mut self,
        _req: &Request<'_>,
        ino: u64,
        fh: u64,
        _flags: i32,
        _lock_owner: Option<u64>,
        _flush: bool,
        reply: ReplyEmpty,
    ) {
        if let Some((_, h)) = self.handles.remove(&fh) {
            // What we wrote is in the page cache already: remember the file
            // as it is now, so the next open keeps that cache.
            if let Ok(st) = rustix::fs::fstat(&*h.file) {
                self.keep_cache(ino, &st);
            }
        }
        reply.ok();
    }

    fn fsync(&mut self, _req: &Request<'_>, ino: u64, fh: u64, datasync: bool, reply: ReplyEmpty) {
        let target = self
            .by_handle(fh, Perms::READ)
            .unwrap_or_else(|| self.io_target(ino, Perms::READ));
        let file = match target.and_then(Target::open) {
            Ok(file) => file,
            Err(e) => return reply.error(e.raw_os_error()),
        };
        let r = if datasync {
            file.sync_data()
        } else {
            file.sync_all()
        };
        match r {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e.raw_os_error().unwrap_or(libc::EIO)),
        }
    }

    fn readdir(
        &mut self,
        _req: &Request<'_>,
        ino: u64,
        _fh: u64,
        offset: i64,
        mut reply: ReplyDirectory,
    ) {
        let entries = match self.readdir_entries(ino) {
            Ok(e) => e,
            Err(e) => return reply.error(e.raw_os_error()),
        };
        for (i, (ino, kind, name)) in entries.into_iter().enumerate().skip(offset.max(0) as usize) {
            if reply.add(ino, i as i64 + 1, kind, &name) {
                break;
            }
        }
        reply.ok();
    }

    fn getxattr(
        &mut self,
        _req: &Request<'_>,
        ino: u64,
        name: &OsStr,
        size: u32,
        reply: ReplyXattr,
    ) {
        if name == HOST_PATH_XATTR {
            return match self.host_path_of(ino) {
                Some(p) => xattr_reply(reply, size, p.as_os_str().as_bytes()),
                None => reply.error(libc::ENODATA),
            };
        }
        let fd = match self.xattr_target(ino) {
            Ok((_, _, Some(fd))) => fd,
            Ok(_) => return reply.error(libc::ENODATA),
            Err(e) => return reply.error(e.raw_os_error()),
        };
        let mut buf = vec![0u8; 65536];
        match rustix::fs::getxattr(real::proc_path(&fd).as_str(), name, &mut buf[..]) {
            Ok(n) => xattr_reply(reply, size, &buf[..n]),
            Err(e) => reply.error(e.raw_os_error()),
        }
    }

    fn listxattr(&mut self, _req: &Request<'_>, ino: u64, size: u32, reply: ReplyXattr) {
        let fd = match self.xattr_target(ino) {
            Ok((_, _, fd)) => fd,
            Err(e) => return reply.error(e.raw_os_error()),
        };
        let mut list = Vec::new();
        if let Some(fd) = fd {
            let mut buf = vec![0u8; 65536];
            if let Ok(n) = rustix::fs::listxattr(real::proc_path(&fd).as_str(), &mut buf[..]) {
                list.extend_from_slice(&buf[..n]);
            }
        }
        if self.host_path_of(ino).is_some() {
            list.extend_from_slice(HOST_PATH_XATTR.as_bytes());
            list.push(0);
        }
        xattr_reply(reply, size, &list);
    }

    fn setxattr(
        &mut self,
        _req: &Request<'_>,
        ino: u64,
        name: &OsStr,
        value: &[u8],
        flags: i32,
        _position: u32,
        reply: ReplyEmpty,
    ) {
        let fd = match self.changeable_xattr_target(ino, name) {
            Ok(fd) => fd,
            Err(errno) => return reply.error(errno),
        };
        let flags = rustix::fs::XattrFlags::from_bits_retain(flags as u32);
        match rustix::fs::setxattr(real::proc_path(&fd).as_str(), name, value, flags) {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e.raw_os_error()),
        }
    }

    fn removexattr(&mut self, _req: &Request<'_>, ino: u64, name: &OsStr, reply: ReplyEmpty) {
        let fd = match self.changeable_xattr_target(ino, name) {
            Ok(fd) => fd,
            Err(errno) => return reply.error(errno),
        };
        match rustix::fs::removexattr(real::proc_path(&fd).as_str(), name) {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e.raw_os_error()),
        }
    }

    fn access(&mut self, _req: &Request<'_>, ino: u64, mask: i32, reply: ReplyEmpty) {
        let node = match self.node(ino) {
            Some(n) => n,
            None => return reply.error(libc::ENOENT),
        };
        let perms = match &node {
            Node::Root | Node::ByApp | Node::App(_) => Perms::READ,
            Node::DocDir { view, id }
            | Node::File { view, id, .. }
            | Node::Sub { view, id, .. } => match self.visible(view, id) {
                Some((_, p)) => p,
                None => return reply.error(libc::ENOENT),
            },
        };
        if mask & libc::W_OK != 0 && !perms.contains(Perms::WRITE) {
            return reply.error(libc::EACCES);
        }
        reply.ok();
    }

    fn mkdir(
        &mut self,
        _req: &Request<'_>,
        parent: u64,
        name: &OsStr,
        mode: u32,
        umask: u32,
        reply: ReplyEntry,
    ) {
        let r = match self.node(parent) {
            Some(Node::Sub { view, id, rel }) => {
                self.tree_mkdir(&view, &id, &rel, name, mode & !umask)
            }
            Some(_) => Err(Errno::PERM),
            None => Err(Errno::NOENT),
        };
        match r {
            Ok(attr) => reply.entry(&REAL_TTL, &attr, 0),
            Err(e) => reply.error(e.raw_os_error()),
        }
    }

    fn link(
        &mut self,
        _req: &Request<'_>,
        ino: u64,
        newparent: u64,
        newname: &OsStr,
        reply: ReplyEntry,
    ) {
        // Hard links only inside one directory document, as upstream; a
        // file document's file is never linked (a link would outlive the
        // grant it came through).
        let r = match (self.node(ino), self.node(newparent)) {
            (
                Some(Node::Sub { view, id, rel }),
                Some(Node::Sub {
                    view: v2,
                    id: i2,
                    rel: r2,
                }),
            ) if view == v2 && id == i2 => self.tree_link(&view, &id, &rel, &r2, newname),
            (Some(Node::Sub { .. }), Some(Node::Sub { .. })) => Err(Errno::XDEV),
            _ => Err(Errno::PERM),
        };
        match r {
            Ok(attr) => reply.entry(&REAL_TTL, &attr, 0),
            Err(e) => reply.error(e.raw_os_error()),
        }
    }

    fn rmdir(&mut self, _req: &Request<'_>, parent: u64, name: &OsStr, reply: ReplyEmpty) {
        let r = match self.node(parent) {
            Some(Node::Sub { view, id, rel }) => self.tree_unlink(&view, &id, &rel, name, true),
            // A file document's directory holds only files; a directory
            // document's own directory is not removed through us.
            Some(Node::DocDir { .. }) => match self.lookup_inner(parent, name) {
                Ok((attr, _)) if attr.kind == FileType::Directory => Err(Errno::PERM),
                Ok(_) => Err(Errno::NOTDIR),
                Err(e) => Err(e),
            },
            Some(_) => Err(Errno::PERM),
            None => Err(Errno::NOENT),
        };
        match r {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e.raw_os_error()),
        }
    }

    fn symlink(
        &mut self,
        _req: &Request<'_>,
        parent: u64,
        link_name: &OsStr,
        target: &Path,
        reply: ReplyEntry,
    ) {
        let r = match self.node(parent) {
            Some(Node::Sub { view, id, rel }) => {
                self.tree_symlink(&view, &id, &rel, link_name, target)
            }
            Some(_) => Err(Errno::PERM),
            None => Err(Errno::NOENT),
        };
        match r {
            Ok(attr) => reply.entry(&REAL_TTL, &attr, 0),
            Err(e) => reply.error(e.raw_os_error()),
        }
    }

    /// The real file system's figures for a document (an app that checks
    /// free space before saving must not see a full disk); zeros for the
    /// virtual directories.
    fn statfs(&mut self, _req: &Request<'_>, ino: u64, reply: fuser::ReplyStatfs) {
        let doc = match self.node(ino) {
            Some(Node::DocDir { view, id })
            | Some(Node::File { view, id, .. })
            | Some(Node::Sub { view, id, .. }) => self.visible(&view, &id).map(|(d, _)| d),
            _ => None,
        };
        let figures = doc
            .ok_or(Errno::NOENT)
            .and_then(|doc| real::open_dir(&doc))
            .and_then(|dir| rustix::fs::fstatvfs(&dir));
        match figures {
            Ok(v) => reply.statfs(
                v.f_blocks,
                v.f_bfree,
                v.f_bavail,
                v.f_files,
                v.f_ffree,
                v.f_bsize as u32,
                v.f_namemax as u32,
                v.f_frsize as u32,
            ),
            Err(_) => reply.statfs(0, 0, 0, 0, 0, 512, 255, 0),
        }
    }

    fn readlink(&mut self, _req: &Request<'_>, ino: u64, reply: ReplyData) {
        let r = match self.node(ino) {
            Some(Node::Sub { view, id, rel }) => self.tree_readlink(&view, &id, &rel),
            Some(_) => Err(Errno::INVAL),
            None => Err(Errno::NOENT),
        };
        match r {
            Ok(target) => reply.data(&target),
            Err(e) => reply.error(e.raw_os_error()),
        }
    }

    fn create(
        &mut self,
        _req: &Request<'_>,
        parent: u64,
        name: &OsStr,
        mode: u32,
        umask: u32,
        flags: i32,
        reply: ReplyCreate,
    ) {
        match self.create_inner(parent, name, mode & !umask, flags) {
            // Handle 0 with zero-message opens: reads and writes name the
            // number (the created file is held for it).
            Ok((attr, fh)) => reply.created(&REAL_TTL, &attr, 0, fh, 0),
            Err(e) => reply.error(e.raw_os_error()),
        }
    }
}

/// Drops the kernel's caches of a document in one view, so a grant, a
/// revocation or a deletion is seen at the next access. Call it with no
/// lock of ours held (the kernel may wait for the FUSE thread while it
/// invalidates).
#[derive(Clone)]
pub struct Invalidator {
    shared: Shared,
    notifier: Arc<Mutex<Option<fuser::Notifier>>>,
}

impl Target {
    /// The file, opened now if it is reached by name (read-write for a
    /// write, falling back to write-only for a file its owner may not
    /// read).
    fn open(self) -> Result<Arc<File>, Errno> {
        match self {
            Target::File(f) => Ok(f),
            Target::At(dir, name, flags) => {
                let fd = match real::open_file(&dir, &name, flags, 0) {
                    Err(Errno::ACCESS) if flags == libc::O_RDWR => {
                        real::open_file(&dir, &name, libc::O_WRONLY, 0)?
                    }
                    other => other?,
                };
                Ok(Arc::new(File::from(fd)))
            }
        }
    }
}

impl Invalidator {
    /// `view` "" is the host's view.
    pub fn doc_view(&self, id: &str, view: &str) {
        let Some(notifier) = lock(&self.notifier).clone() else {
            return;
        };
        let (parent, dir, files, subs) = {
            let inodes = lock(&self.shared.inodes);
            let parent = if view.is_empty() {
                Some(ROOT_INO)
            } else {
                inodes.known(&Node::App(view.to_owned()))
            };
            let dir = inodes.known(&Node::DocDir {
                view: view.to_owned(),
                id: id.to_owned(),
            });
            (
                parent,
                dir,
                inodes.files_of(view, id),
                inodes.subs_of(view, id),
            )
        };
        for ino in subs {
            let _ = notifier.inval_inode(ino, 0, 0);
        }
        // ENOENT: the kernel has already forgotten the node; nothing to drop.
        if let Some(dir) = dir {
            for (name, ino) in &files {
                let _ = notifier.inval_inode(*ino, 0, 0);
                let _ = notifier.inval_entry(dir, name);
            }
            let _ = notifier.inval_inode(dir, 0, 0);
        }
        if let Some(parent) = parent {
            let _ = notifier.inval_entry(parent, OsStr::new(id));
        }
    }

    /// Every view of a document: the host's and each app's in `apps`.
    pub fn doc<'a>(&self, id: &str, apps: impl IntoIterator<Item = &'a str>) {
        self.doc_view(id, "");
        for app in apps {
            self.doc_view(id, app);
        }
    }
}

/// A mounted file system, unmounted on drop.
pub struct Mounted {
    session: Option<fuser::BackgroundSession>,
    /// Mounted by fusermount3, so unmounted by it too (fuser only unmounts
    /// what it mounted itself).
    via_fusermount: bool,
    pub mountpoint: PathBuf,
    /// The mount's device number: fds on it passed to Add are documents.
    pub dev: u64,
    pub invalidator: Invalidator,
    watches: Option<watch::Watches>,
}

impl Mounted {
    /// Unmounts (lazily: a process with a file open there keeps it until
    /// it closes it) and ends the FUSE thread.
    pub fn unmount(mut self) {
        self.release();
    }

    fn release(&mut self) {
        let Some(session) = self.session.take() else {
            return;
        };
        if let Some(w) = &self.watches {
            w.stop();
        }
        self.invalidator
            .shared
            .closing
            .store(true, std::sync::atomic::Ordering::SeqCst);
        if self.via_fusermount {
            if let Err(e) = fusermount::unmount(&self.mountpoint) {
                tracing::warn!(mountpoint = %self.mountpoint.display(), "unmounting: {e}");
            }
            drop(session);
        } else {
            // fuser unmounts with a plain umount(2) as the session goes...
            drop(session);
            // ...which fails with EBUSY while a file is open there (a reader
            // stuck on a real file that never answers): then detach lazily,
            // so no dead mount stays behind once we are gone.
            if still_mounted(self.dev)
                && let Err(e) =
                    rustix::mount::unmount(&self.mountpoint, rustix::mount::UnmountFlags::DETACH)
            {
                tracing::warn!(mountpoint = %self.mountpoint.display(), "unmounting: {e}");
            }
        }
        tracing::info!(mountpoint = %self.mountpoint.display(), "unmounted");
    }
}

impl Drop for Mounted {
    fn drop(&mut self) {
        self.release();
    }
}

#[derive(Debug, thiserror::Error)]
pub enum MountError {
    #[error("creating the mount point {0}: {1}")]
    MountPoint(PathBuf, std::io::Error),
    #[error("mounting FUSE at {0}: {1}")]
    Mount(PathBuf, std::io::Error),
    #[error("mounting FUSE at {0}: {1}")]
    Fusermount(PathBuf, fusermount::FusermountError),
    #[error("checking the mount at {0}: {1}")]
    Stat(PathBuf, Errno),
}

/// Mounts at `mountpoint` (created if missing; a stale mount of a previous
/// run that died is lazily unmounted first) and serves on a thread of its
/// own.
pub fn mount(
    mountpoint: &Path,
    shared: Shared,
    caching: FileCaching,
) -> Result<Mounted, MountError> {
    mount_with(mountpoint, shared, caching, false)
}

/// What the kernel may cache of real files, and whether it asks us to open
/// them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileCaching {
    /// The entry and attributes of a file document for a minute, dropped
    /// by inotify the moment the real file changes: a stat costs no round
    /// trip to us, and a change made on the host reaches the views within
    /// the time inotify takes to tell us (tens of microseconds), not in the
    /// same instant. Opens cost none either (zero-message opens, see
    /// [`Filesystem::open`] on [`DocFs`]): the kernel checks them against
    /// our modes (`default_permissions`).
    Watched,
    /// Never (upstream's behaviour): every stat and open asks us, each open
    /// gets a handle, so a file removed on the host is gone from the views
    /// in the same instant and an open file stays the file it opened.
    Off,
}

fn mount_with(
    mountpoint: &Path,
    shared: Shared,
    caching: FileCaching,
    force_fusermount: bool,
) -> Result<Mounted, MountError> {
    clear_stale(mountpoint);
    std::fs::create_dir_all(mountpoint)
        .map_err(|e| MountError::MountPoint(mountpoint.to_owned(), e))?;
    let zero_open = caching == FileCaching::Watched;
    let mut options = vec![
        MountOption::FSName("portal".into()),
        MountOption::Subtype("portal".into()),
        MountOption::NoSuid,
        MountOption::NoDev,
        MountOption::NoExec,
    ];
    let mut fusermount_options = "fsname=portal,subtype=portal,nosuid,nodev,noexec".to_owned();
    if zero_open {
        // The kernel checks opens against our modes: it does not ask us
        // (see `open`).
        options.push(MountOption::DefaultPermissions);
        fusermount_options.push_str(",default_permissions");
    }
    // Root mounts directly; an ordinary user (who may not even open
    // /dev/fuse) goes through fusermount3, as libfuse does.
    let watches = match caching {
        FileCaching::Watched => watch::Watches::new(),
        FileCaching::Off => None,
    };
    let notifier_slot: Arc<Mutex<Option<fuser::Notifier>>> = Arc::default();
    let direct = if force_fusermount {
        Err(std::io::Error::from(std::io::ErrorKind::PermissionDenied))
    } else {
        fuser::Session::new(
            DocFs::new(
                shared.clone(),
                watches.clone(),
                notifier_slot.clone(),
                zero_open,
            ),
            mountpoint,
            &options,
        )
    };
    let (session, via_fusermount) = match direct {
        Ok(session) => (session, false),
        Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => {
            tracing::debug!("mounting directly: {e}; using fusermount3");
            let fd = fusermount::mount(mountpoint, &fusermount_options)
                .map_err(|e| MountError::Fusermount(mountpoint.to_owned(), e))?;
            let session = fuser::Session::from_fd(
                DocFs::new(
                    shared.clone(),
                    watches.clone(),
                    notifier_slot.clone(),
                    zero_open,
                ),
                fd,
                fuser::SessionACL::Owner,
            );
            (session, true)
        }
        Err(e) => return Err(MountError::Mount(mountpoint.to_owned(), e)),
    };
    let notifier = session.notifier();
    *lock(&notifier_slot) = Some(notifier.clone());
    let session = session
        .spawn()
        .map_err(|e| MountError::Mount(mountpoint.to_owned(), e))?;
    // Without its thread nothing would drop what the kernel caches: then
    // nothing of real files is cached (the file system sees no watches).
    let watches = watches.and_then(|w| match w.start(shared.clone(), notifier.clone()) {
        Ok(()) => Some(w),
        Err(e) => {
            tracing::warn!("starting the inotify thread: {e}; file attributes will not be cached");
            w.disable();
            None
        }
    });
    let st =
        rustix::fs::stat(mountpoint).map_err(|e| MountError::Stat(mountpoint.to_owned(), e))?;
    tracing::info!(mountpoint = %mountpoint.display(), "mounted");
    Ok(Mounted {
        session: Some(session),
        via_fusermount,
        mountpoint: mountpoint.to_owned(),
        dev: st.st_dev,
        invalidator: Invalidator {
            shared,
            notifier: notifier_slot,
        },
        watches,
    })
}

/// Whether a mount of device `dev` is still in our mount table (read from
/// /proc/self/mountinfo: a stat of the mount point could wait forever on a
/// connection nobody serves).
fn still_mounted(dev: u64) -> bool {
    let want = format!("{}:{}", rustix::fs::major(dev), rustix::fs::minor(dev));
    std::fs::read_to_string("/proc/self/mountinfo")
        .map(|info| {
            info.lines()
                .any(|l| l.split(' ').nth(2) == Some(want.as_str()))
        })
        .unwrap_or(false)
}

/// A FUSE mount whose server died answers ENOTCONN: detach it so the new
/// mount can take its place.
fn clear_stale(mountpoint: &Path) {
    if !matches!(rustix::fs::stat(mountpoint), Err(Errno::NOTCONN)) {
        return;
    }
    tracing::warn!(mountpoint = %mountpoint.display(), "detaching a stale mount");
    if rustix::mount::unmount(mountpoint, rustix::mount::UnmountFlags::DETACH).is_ok() {
        return;
    }
    let _ = std::process::Command::new("fusermount3")
        .arg("-u")
        .arg("-z")
        .arg(mountpoint)
        .status();
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::document::DocFlags;

    /// The unprivileged way (fusermount3 mounts, we serve the fd it passes
    /// back), run as root: a document reads through both views, an app
    /// without a grant sees nothing, and unmounting leaves no mount.
    #[test]
    fn served_through_fusermount() {
        if !porthole_tests::running_as_root("served_through_fusermount")
            || !porthole_tests::anchor_present("/usr/bin/fusermount3", "fuse3")
        {
            return;
        }
        let files = tempfile::tempdir().unwrap();
        std::fs::write(files.path().join("f.txt"), "through fusermount").unwrap();
        let st = rustix::fs::stat(files.path()).unwrap();
        let mut doc = Document {
            path: files.path().join("f.txt"),
            dev: st.st_dev,
            ino: st.st_ino,
            flags: DocFlags(DocFlags::TRANSIENT),
            apps: Default::default(),
        };
        doc.set_perms("org.example.App", Perms::READ);
        let shared = Shared::default();
        shared.table.write().insert("1a".into(), doc);
        let mnt = tempfile::tempdir().unwrap();
        let mountpoint = mnt.path().join("doc");
        let mounted = mount_with(&mountpoint, shared, FileCaching::Watched, true).unwrap();
        assert!(mounted.via_fusermount);
        assert_eq!(
            std::fs::read_to_string(mountpoint.join("1a/f.txt")).unwrap(),
            "through fusermount"
        );
        assert_eq!(
            std::fs::read_to_string(mountpoint.join("by-app/org.example.App/1a/f.txt")).unwrap(),
            "through fusermount"
        );
        assert!(!mountpoint.join("by-app/org.example.Other/1a").exists());
        mounted.unmount();
        let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
        assert!(!info.contains(&*mountpoint.to_string_lossy()), "{info}");
    }
}
