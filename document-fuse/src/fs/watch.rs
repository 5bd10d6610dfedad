//! Lets the kernel cache the entries and attributes of file documents
//! without serving stale ones: the real directory of each document the
//! kernel was told about is watched with inotify, and a change there to the
//! document's real name (written, truncated, chmod-ed, replaced, removed,
//! by anyone: the host, another view, us) drops the kernel's copy at once.
//!
//! Without this a `stat` or an `open` pays a round trip to our thread for
//! every path component that is a real file, which is what upstream does
//! (it caches nothing of real files). A change inotify does not report (a
//! write through a shared mapping, a network file system changed from
//! another machine) shows once [`FILE_TTL`] has passed.
//!
//! Only the attribute and entry caches are dropped here; the kernel drops
//! the page cache itself when it next fetches the attributes and finds a
//! new mtime or size (`FUSE_AUTO_INVAL_DATA`).

use std::collections::{BTreeSet, HashMap, HashSet};
use std::ffi::OsStr;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rustix::event::{EventfdFlags, PollFd, PollFlags};
use rustix::fs::inotify::{self, CreateFlags, ReadFlags, WatchFlags};
use rustix::io::Errno;

use super::{Node, Shared, lock};

/// How long the kernel may keep a file document's entry and attributes
/// when its directory is watched (a safety net for changes inotify misses).
/// Long on purpose: the kernel drops an expired entry at the last close,
/// and the inode with it, page cache and all, so a short time here would
/// make every read after a pause cold again.
pub const FILE_TTL: Duration = Duration::from_secs(60);

/// The directories watched, and which documents live in each.
#[derive(Default)]
struct State {
    /// (device, inode) of a real directory -> its watch.
    by_dir: HashMap<(u64, u64), i32>,
    /// watch -> the documents whose real directory it is.
    by_wd: HashMap<i32, BTreeSet<String>>,
    disabled: bool,
}

/// The inotify instance; cloned into the file system's thread and the
/// thread that reads the events.
#[derive(Clone)]
pub struct Watches {
    inotify: Arc<OwnedFd>,
    /// Written once to end the reading thread.
    stop: Arc<OwnedFd>,
    state: Arc<Mutex<State>>,
}

impl Watches {
    /// None where inotify is not available (then nothing of real files is
    /// cached, as before).
    pub fn new() -> Option<Watches> {
        let make = || -> Result<Watches, Errno> {
            Ok(Watches {
                inotify: Arc::new(inotify::init(CreateFlags::CLOEXEC | CreateFlags::NONBLOCK)?),
                stop: Arc::new(rustix::event::eventfd(
                    0,
                    EventfdFlags::CLOEXEC | EventfdFlags::NONBLOCK,
                )?),
                state: Arc::default(),
            })
        };
        make()
            .inspect_err(|e| tracing::warn!("inotify: {e}; file attributes will not be cached"))
            .ok()
    }

    /// Watches `dir` (the document's real directory, opened and checked to
    /// be (`dev`, `ino`)) for document `id`. Whether it is watched: only
    /// then may the kernel cache the document's entry and attributes.
    pub fn watch(&self, dir: &OwnedFd, dev: u64, ino: u64, id: &str) -> bool {
        let mut state = lock(&self.state);
        if state.disabled {
            return false;
        }
        if let Some(&wd) = state.by_dir.get(&(dev, ino)) {
            state.by_wd.entry(wd).or_default().insert(id.to_owned());
            return true;
        }
        // Through the fd's /proc link: the directory we checked, not
        // whatever its path names by now.
        let proc = format!("/proc/self/fd/{}", dir.as_raw_fd());
        let mask = WatchFlags::MODIFY
            | WatchFlags::ATTRIB
            | WatchFlags::CLOSE_WRITE
            | WatchFlags::CREATE
            | WatchFlags::DELETE
            | WatchFlags::MOVED_FROM
            | WatchFlags::MOVED_TO
            | WatchFlags::DELETE_SELF
            | WatchFlags::MOVE_SELF
            | WatchFlags::ONLYDIR;
        match inotify::add_watch(&*self.inotify, proc.as_str(), mask) {
            Ok(wd) => {
                state.by_dir.insert((dev, ino), wd);
                state.by_wd.entry(wd).or_default().insert(id.to_owned());
                true
            }
            Err(e) => {
                // ENOSPC: the user's watch limit; those documents are
                // simply not cached.
                tracing::debug!(id, "watching the document's directory: {e}");
                false
            }
        }
    }

    /// Whether the directory (`dev`, `ino`) is watched.
    pub fn is_watched(&self, dev: u64, ino: u64) -> bool {
        lock(&self.state).by_dir.contains_key(&(dev, ino))
    }

    /// Starts the thread that turns events into invalidations; it ends
    /// when [`Watches::stop`] is called.
    pub fn start(&self, shared: Shared, notifier: fuser::Notifier) -> std::io::Result<()> {
        let this = self.clone();
        std::thread::Builder::new()
            .name("doc-watch".into())
            .spawn(move || this.run(&shared, &notifier))
            .map(drop)
    }

    /// Used when the thread could not start: no directory counts as
    /// watched from now on, so nothing is cached.
    pub fn disable(&self) {
        let mut state = lock(&self.state);
        state.disabled = true;
        state.by_dir.clear();
    }

    pub fn stop(&self) {
        let _ = rustix::io::write(&*self.stop, &1u64.to_ne_bytes());
    }

    fn run(&self, shared: &Shared, notifier: &fuser::Notifier) {
        let mut buf = vec![std::mem::MaybeUninit::<u8>::uninit(); 64 * 1024];
        loop {
            let mut fds = [
                PollFd::new(&*self.inotify, PollFlags::IN),
                PollFd::new(&*self.stop, PollFlags::IN),
            ];
            match rustix::event::poll(&mut fds, None) {
                Ok(_) => {}
                Err(Errno::INTR) => continue,
                Err(e) => {
                    tracing::warn!("waiting for inotify events: {e}");
                    return;
                }
            }
            if !fds[1].revents().is_empty() {
                return;
            }
            // Every event waiting now, then the invalidations: each name
            // once however many writes it saw.
            let mut changed: HashSet<(i32, Option<Vec<u8>>, bool)> = HashSet::new();
            let mut reader = inotify::Reader::new(self.inotify.as_fd(), &mut buf);
            loop {
                match reader.next() {
                    Ok(ev) => {
                        let flags = ev.events();
                        if flags.contains(ReadFlags::QUEUE_OVERFLOW) {
                            changed.insert((-1, None, true));
                            continue;
                        }
                        let entry = flags.intersects(
                            ReadFlags::CREATE
                                | ReadFlags::DELETE
                                | ReadFlags::MOVED_FROM
                                | ReadFlags::MOVED_TO,
                        );
                        let gone = flags.intersects(
                            ReadFlags::DELETE_SELF | ReadFlags::MOVE_SELF | ReadFlags::IGNORED,
                        );
                        let name = ev.file_name().map(|n| n.to_bytes().to_vec());
                        if flags.contains(ReadFlags::IGNORED) {
                            self.forget(ev.wd());
                        }
                        changed.insert((ev.wd(), name, entry || gone));
                    }
                    Err(Errno::AGAIN) => break,
                    Err(Errno::INTR) => continue,
                    Err(e) => {
                        tracing::warn!("reading inotify events: {e}");
                        return;
                    }
                }
            }
            for (wd, name, entry) in changed {
                self.invalidate(shared, notifier, wd, name.as_deref(), entry);
            }
        }
    }

    fn forget(&self, wd: i32) {
        let mut state = lock(&self.state);
        state.by_dir.retain(|_, w| *w != wd);
        // The ids stay until the invalidation below has used them.
    }

    /// Drops the kernel's cached attributes (and with `entry` the cached
    /// name) of the documents named `name` in the directory of watch `wd`
    /// (every document there without a name; every watched one for wd -1).
    fn invalidate(
        &self,
        shared: &Shared,
        notifier: &fuser::Notifier,
        wd: i32,
        name: Option<&[u8]>,
        entry: bool,
    ) {
        let ids: Vec<String> = {
            let mut state = lock(&self.state);
            let ids = if wd == -1 {
                state.by_wd.values().flatten().cloned().collect()
            } else {
                state
                    .by_wd
                    .get(&wd)
                    .map(|s| s.iter().cloned().collect())
                    .unwrap_or_default()
            };
            if wd != -1 && !state.by_dir.values().any(|w| *w == wd) {
                state.by_wd.remove(&wd);
            }
            ids
        };
        // Which kernel nodes show those documents: collected under our
        // locks, invalidated with none held (the kernel may wait for the
        // FUSE thread, which may wait for our locks).
        let mut nodes: Vec<(Option<u64>, u64, std::ffi::OsString)> = Vec::new();
        {
            let table = shared.table.read();
            let inodes = lock(&shared.inodes);
            for id in &ids {
                let Some(doc) = table.get(id) else { continue };
                let doc_name = doc.name();
                if name.is_some_and(|n| OsStr::from_bytes(n) != doc_name) {
                    continue;
                }
                let views = std::iter::once("").chain(doc.apps.keys().map(String::as_str));
                for view in views {
                    let file = Node::File {
                        view: view.to_owned(),
                        id: id.clone(),
                        name: doc_name.to_owned(),
                    };
                    let Some(ino) = inodes.known(&file) else {
                        continue;
                    };
                    let dir = inodes.known(&Node::DocDir {
                        view: view.to_owned(),
                        id: id.clone(),
                    });
                    nodes.push((dir, ino, doc_name.to_owned()));
                }
            }
        }
        for (dir, ino, doc_name) in nodes {
            // Offset -1: attributes only; the kernel drops the pages itself
            // if the attributes it fetches next differ (see above).
            let _ = notifier.inval_inode(ino, -1, 0);
            if entry && let Some(dir) = dir {
                let _ = notifier.inval_entry(dir, &doc_name);
            }
        }
    }
}
