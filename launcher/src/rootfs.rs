//! Executes a [`crate::plan`] inside the new mount namespace and pivots into
//! the result.
//!
//! Order matters: every bind source is opened and cloned first, while the
//! host tree is still complete (the root tmpfs is then attached over `/tmp`,
//! which would hide sources below it). Destinations are created by us on
//! file systems that nobody else can see yet, and opened with
//! `RESOLVE_IN_ROOT|RESOLVE_NO_SYMLINKS` so that a symlink inside a granted
//! host directory can never redirect a mount.

use std::ffi::CString;
use std::io::Write;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};

use crate::io_error::PathIoError;
use crate::mount::{
    self, MOUNT_ATTR_NODEV, MOUNT_ATTR_NOEXEC, MOUNT_ATTR_NOSUID, MOUNT_ATTR_RDONLY, MountError,
};
use crate::plan::{FsKind, Op};

/// Errors while building the root.
#[derive(Debug, thiserror::Error)]
pub enum RootfsError {
    #[error(transparent)]
    Mount(#[from] MountError),
    #[error(transparent)]
    Io(#[from] PathIoError),
}

/// Path relative to a root fd ("/usr/bin" -> "usr/bin").
fn rel(p: &Path) -> &Path {
    p.strip_prefix("/").unwrap_or(p)
}

fn open_dir_fd(path: &str) -> Result<OwnedFd, RootfsError> {
    let fd = nix::fcntl::open(
        path,
        nix::fcntl::OFlag::O_PATH | nix::fcntl::OFlag::O_DIRECTORY | nix::fcntl::OFlag::O_CLOEXEC,
        nix::sys::stat::Mode::empty(),
    )
    .map_err(PathIoError::with("open", Path::new(path)))?;
    Ok(fd)
}

/// `O_PATH` fds of directories of the new root by their path inside it,
/// so that the ops below one directory (`/dev/*`, `/etc/*`, ...) do not
/// resolve and re-open it each time: about a third of the syscalls of
/// assembling the root. A mount attached at a path covers the directory
/// held for that path and everything below it, so [`Dirs::covered`] drops
/// those entries; the next lookup resolves through the new mount.
struct Dirs<'r> {
    root: BorrowedFd<'r>,
    held: Vec<(PathBuf, OwnedFd)>,
}

impl<'r> Dirs<'r> {
    fn new(root: BorrowedFd<'r>) -> Self {
        Dirs {
            root,
            held: Vec::with_capacity(16),
        }
    }

    /// `mkdir -p` below the root, never following a symlink; an `O_PATH` fd
    /// of the final directory. New directories get mode 0755 (less the
    /// umask).
    fn get(&mut self, dest: &Path) -> Result<BorrowedFd<'_>, RootfsError> {
        if rel(dest).as_os_str().is_empty() {
            return Ok(self.root);
        }
        let i = self.index(dest)?;
        Ok(self.held[i].1.as_fd())
    }

    fn index(&mut self, dest: &Path) -> Result<usize, RootfsError> {
        if let Some(i) = self.held.iter().position(|(p, _)| p == dest) {
            return Ok(i);
        }
        let (parent, name) = parent_and_name(dest);
        let parent_held =
            rel(parent).as_os_str().is_empty() || self.held.iter().any(|(p, _)| p == parent);
        // Most destinations sit in directories that already exist: with the
        // parent unknown, try the whole path at once first.
        let fd = if !parent_held {
            match mount::open_path(self.root, rel(dest)) {
                Ok(fd) => Some(fd),
                Err(e) if e.source.raw_os_error() == Some(libc::ENOENT) => None,
                Err(e) => return Err(e.into()),
            }
        } else {
            None
        };
        let fd = match fd {
            Some(fd) => fd,
            None => {
                // mkdir first: below the new root nearly every directory is
                // new, and EEXIST costs no more than a failed open would
                // (mkdirat(2) reports an existing name before any write or
                // permission check, and never follows a symlink there; the
                // open below then refuses one).
                let dir = self.get(parent)?;
                match nix::sys::stat::mkdirat(
                    dir,
                    name,
                    nix::sys::stat::Mode::from_bits_truncate(0o755),
                ) {
                    Ok(()) | Err(nix::Error::EEXIST) => {}
                    Err(e) => return Err(PathIoError::new("mkdir", dest, e).into()),
                }
                mount::open_path(dir, Path::new(name))?
            }
        };
        self.held.push((dest.to_owned(), fd));
        Ok(self.held.len() - 1)
    }

    /// A mount was attached at `dest`: forget what it covers.
    fn covered(&mut self, dest: &Path) {
        self.held.retain(|(p, _)| !p.starts_with(dest));
    }
}

/// chmod of a directory held as an `O_PATH` fd (the umask narrowed mkdir).
fn set_mode(dir: BorrowedFd<'_>, mode: u32, what: &Path) -> Result<(), RootfsError> {
    let reopened = nix::fcntl::openat(
        dir,
        ".",
        nix::fcntl::OFlag::O_RDONLY | nix::fcntl::OFlag::O_DIRECTORY | nix::fcntl::OFlag::O_CLOEXEC,
        nix::sys::stat::Mode::empty(),
    )
    .map_err(PathIoError::with("open", what))?;
    nix::sys::stat::fchmod(
        reopened.as_fd(),
        nix::sys::stat::Mode::from_bits_truncate(mode),
    )
    .map_err(PathIoError::with("chmod", what))?;
    Ok(())
}

fn parent_and_name(dest: &Path) -> (&Path, &std::ffi::OsStr) {
    (
        dest.parent().unwrap_or(Path::new("/")),
        dest.file_name()
            .unwrap_or_else(|| std::ffi::OsStr::new(".")),
    )
}

/// Creates an empty regular file to serve as a mount point; returns the fd
/// of that creation (a single name opened relative to a directory fd with
/// O_NOFOLLOW names exactly the file made, so it serves as the target of
/// `move_mount` without a second lookup).
fn touch(dirs: &mut Dirs<'_>, dest: &Path) -> Result<OwnedFd, RootfsError> {
    let (parent, name) = parent_and_name(dest);
    let dir = dirs.get(parent)?;
    match nix::fcntl::openat(
        dir,
        name,
        nix::fcntl::OFlag::O_CREAT
            | nix::fcntl::OFlag::O_WRONLY
            | nix::fcntl::OFlag::O_NOFOLLOW
            | nix::fcntl::OFlag::O_CLOEXEC,
        nix::sys::stat::Mode::from_bits_truncate(0o444),
    ) {
        Ok(fd) => Ok(fd),
        Err(e) => Err(PathIoError::new("create mount point", dest, e).into()),
    }
}

fn write_file(
    dirs: &mut Dirs<'_>,
    dest: &Path,
    contents: &[u8],
    mode: u32,
) -> Result<(), RootfsError> {
    let (parent, name) = parent_and_name(dest);
    let dir = dirs.get(parent)?;
    let fd = nix::fcntl::openat(
        dir,
        name,
        nix::fcntl::OFlag::O_CREAT
            | nix::fcntl::OFlag::O_EXCL
            | nix::fcntl::OFlag::O_WRONLY
            | nix::fcntl::OFlag::O_NOFOLLOW
            | nix::fcntl::OFlag::O_CLOEXEC,
        nix::sys::stat::Mode::from_bits_truncate(mode),
    )
    .map_err(PathIoError::with("create", dest))?;
    let mut file = std::fs::File::from(fd);
    file.write_all(contents)
        .map_err(PathIoError::with("write", dest))?;
    // The umask may have narrowed the mode.
    nix::sys::stat::fchmod(file.as_fd(), nix::sys::stat::Mode::from_bits_truncate(mode))
        .map_err(PathIoError::with("chmod", dest))?;
    Ok(())
}

fn symlink(dirs: &mut Dirs<'_>, target: &Path, dest: &Path) -> Result<(), RootfsError> {
    let (parent, name) = parent_and_name(dest);
    let dir = dirs.get(parent)?;
    nix::unistd::symlinkat(target, dir, name).map_err(PathIoError::with("symlink", dest))?;
    Ok(())
}

fn fs_of(kind: FsKind, dest: &Path, attrs: u64) -> Result<OwnedFd, RootfsError> {
    let fd = match kind {
        FsKind::Tmpfs { mode } => {
            let m = CString::new(format!("{mode:o}")).expect("octal digits");
            mount::new_fs(c"tmpfs", &[(c"mode", Some(m.as_c_str()))], attrs, dest)?
        }
        FsKind::Proc => mount::new_fs(c"proc", &[], attrs, dest)?,
        FsKind::Devpts => mount::new_fs(
            c"devpts",
            &[
                (c"newinstance", None),
                (c"ptmxmode", Some(c"0666")),
                (c"mode", Some(c"620")),
            ],
            attrs,
            dest,
        )?,
    };
    Ok(fd)
}

/// A bind source, cloned before the root is assembled.
struct Source {
    tree: OwnedFd,
    is_dir: bool,
}

fn clone_source(host_root: BorrowedFd<'_>, src: &Path, attrs: u64) -> Result<Source, RootfsError> {
    let fd = mount::open_path(host_root, rel(src))?;
    let st = nix::sys::stat::fstat(fd.as_fd()).map_err(PathIoError::with("stat", src))?;
    let is_dir = (st.st_mode & libc::S_IFMT) == libc::S_IFDIR;
    let tree = mount::clone_tree(fd.as_fd(), src)?;
    // Flags are set while the copy is detached, recursively: the mount is
    // never visible with weaker flags, and submounts cannot escape them.
    mount::set_attr(tree.as_fd(), attrs, 0, true, src)?;
    Ok(Source { tree, is_dir })
}

/// Builds the new root from `ops` and makes it `/`. Must run in a fresh mount
/// namespace with CAP_SYS_ADMIN over it (inside our user namespace).
///
/// `bus_ready`: the read end of the D-Bus proxy's sync pipe, read once
/// before the first [`Op::ProxySocket`]; when the proxy exits without
/// listening, its sockets are left out (one warning line) and the app runs
/// without a bus.
pub fn assemble(ops: &[Op], bus_ready: Option<BorrowedFd<'_>>) -> Result<(), RootfsError> {
    mount::make_rslave_root()?;
    let host_root = open_dir_fd("/")?;

    let mut sources: Vec<Source> = Vec::new();
    // The proxy's sockets do not exist yet: their directory (the instance
    // dir) is opened now, before the new root covers /tmp, where a test's
    // XDG_RUNTIME_DIR may live; the socket is looked up inside it later.
    let mut socket_dirs: Vec<OwnedFd> = Vec::new();
    for op in ops {
        match op {
            Op::Bind { src, attrs, .. } => {
                sources.push(clone_source(host_root.as_fd(), src, *attrs)?)
            }
            Op::ProxySocket { src, .. } => {
                let parent = src.parent().unwrap_or(Path::new("/"));
                socket_dirs.push(mount::open_path(host_root.as_fd(), rel(parent))?);
            }
            _ => {}
        }
    }
    let mut sources = sources.into_iter();
    let mut socket_dirs = socket_dirs.into_iter();
    let mut bus_state: Option<bool> = None;

    // The new root: a tmpfs attached over /tmp of this (private) namespace.
    let root = mount::new_fs(
        c"tmpfs",
        &[(c"mode", Some(c"0755"))],
        MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV,
        Path::new("/"),
    )?;
    let base = open_dir_fd("/tmp")?;
    mount::attach(root.as_fd(), base.as_fd(), Path::new("/tmp"))?;
    drop(base);
    let r = root.as_fd();
    let mut dirs = Dirs::new(r);

    for op in ops {
        match op {
            Op::Dir { dest, mode } => {
                let dir = dirs.get(dest)?;
                if *mode != 0o755 {
                    // fchmod does not work on O_PATH fds: go through /proc.
                    set_mode(dir, *mode, dest)?;
                }
            }
            Op::Symlink { target, dest } => symlink(&mut dirs, target, dest)?,
            Op::File {
                dest,
                contents,
                mode,
            } => write_file(&mut dirs, dest, contents, *mode)?,
            Op::Mount { kind, dest, attrs } => {
                let m = fs_of(*kind, dest, *attrs)?;
                mount::attach(m.as_fd(), dirs.get(dest)?, dest)?;
                dirs.covered(dest);
            }
            Op::Bind { dest, .. } => {
                let source = sources.next().expect("cloned above for every bind");
                if source.is_dir {
                    mount::attach(source.tree.as_fd(), dirs.get(dest)?, dest)?;
                } else {
                    let target = touch(&mut dirs, dest)?;
                    mount::attach(source.tree.as_fd(), target.as_fd(), dest)?;
                }
                dirs.covered(dest);
            }
            Op::ProxySocket { src, dest } => {
                let dir = socket_dirs.next().expect("opened above for every socket");
                let listening = *bus_state.get_or_insert_with(|| {
                    let Some(fd) = bus_ready else { return false };
                    match crate::bus::wait_ready(fd) {
                        Ok(()) => true,
                        Err(Some(e)) => {
                            eprintln!(
                                "porthole: warning: cannot execute the D-Bus proxy: {e}; running without a bus"
                            );
                            false
                        }
                        Err(None) => {
                            eprintln!(
                                "porthole: warning: the D-Bus proxy exited before listening; running without a bus"
                            );
                            false
                        }
                    }
                });
                if !listening {
                    continue;
                }
                let name = src.file_name().map(Path::new).unwrap_or(Path::new("bus"));
                let fd = mount::open_path(dir.as_fd(), name)?;
                let tree = mount::clone_tree(fd.as_fd(), src)?;
                mount::set_attr(
                    tree.as_fd(),
                    MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV | MOUNT_ATTR_NOEXEC,
                    0,
                    true,
                    src,
                )?;
                let target = touch(&mut dirs, dest)?;
                mount::attach(tree.as_fd(), target.as_fd(), dest)?;
                dirs.covered(dest);
            }
            Op::ReadOnlyIfExists { dest } => {
                let target = match mount::open_path(r, rel(dest)) {
                    Ok(fd) => fd,
                    Err(e) if e.source.raw_os_error() == Some(libc::ENOENT) => continue,
                    Err(e) => return Err(e.into()),
                };
                let tree = mount::clone_tree(target.as_fd(), dest)?;
                mount::set_attr(
                    tree.as_fd(),
                    MOUNT_ATTR_RDONLY | MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV | MOUNT_ATTR_NOEXEC,
                    0,
                    true,
                    dest,
                )?;
                mount::attach(tree.as_fd(), target.as_fd(), dest)?;
                dirs.covered(dest);
            }
        }
    }
    drop(dirs);
    drop(host_root);

    mount::pivot_into(r)?;
    drop(root);
    // The root tmpfs itself (not its submounts) becomes read-only: the
    // identity file and /etc cannot be changed from inside.
    let slash = open_dir_fd("/")?;
    mount::set_attr(slash.as_fd(), MOUNT_ATTR_RDONLY, 0, false, Path::new("/"))?;
    Ok(())
}
