//! Safe wrappers around the mount syscalls, fd-based throughout.
//!
//! We use the "new" mount API (Linux 5.2; `mount_setattr` 5.12): a bind is an
//! `open_tree(OPEN_TREE_CLONE)` of an fd opened with `openat2`, its flags are
//! set with `mount_setattr(AT_RECURSIVE)` while it is still detached (so it is
//! never visible writable or with suid/dev, and submounts get the same flags),
//! and `move_mount` attaches it onto an `O_PATH` fd of the destination. No
//! path string is ever re-resolved after it was checked (bubblewrap issues 195
//! and 390 are the symlink races this avoids).
//!
//! Each wrapper returns [`MountError`] naming the operation and the path.

use std::ffi::{CStr, CString};
use std::os::fd::{BorrowedFd, OwnedFd};
use std::path::Path;

use crate::sys::mount::{MoveMountFlags, OpenTreeFlags};

pub use crate::sys::mount::{
    MOUNT_ATTR_NODEV, MOUNT_ATTR_NOEXEC, MOUNT_ATTR_NOSUID, MOUNT_ATTR_RDONLY,
};

/// A mount step that failed: the operation, the path and the kernel's answer.
#[derive(Debug, thiserror::Error)]
#[error("{op} {path}: {source}")]
pub struct MountError {
    pub op: &'static str,
    pub path: String,
    #[source]
    pub source: std::io::Error,
}

impl MountError {
    /// For `map_err`: the step `op` on `path` failed with `source`.
    fn on<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(std::io::Error) -> Self + use<'a> {
        move |source| MountError {
            op,
            path: path.display().to_string(),
            source,
        }
    }
}

fn cstr(path: &Path) -> CString {
    CString::new(path.as_os_str().as_encoded_bytes())
        .unwrap_or_else(|_| c"/nonexistent-nul".to_owned())
}

/// `openat2(dirfd, path, O_PATH|O_CLOEXEC|O_NOFOLLOW, RESOLVE_IN_ROOT|RESOLVE_NO_SYMLINKS|RESOLVE_NO_MAGICLINKS)`:
/// an `O_PATH` handle on exactly the object named, relative to `dirfd` as root.
pub fn open_path(dirfd: BorrowedFd<'_>, path: &Path) -> Result<OwnedFd, MountError> {
    use crate::sys::fd::{OFlags, ResolveFlags};
    crate::sys::fd::openat2(
        dirfd,
        &cstr(path),
        OFlags::PATH | OFlags::NOFOLLOW,
        ResolveFlags::IN_ROOT | ResolveFlags::NO_SYMLINKS,
    )
    .map_err(MountError::on("openat2", path))
}

/// `open_tree(fd, "", OPEN_TREE_CLONE|AT_RECURSIVE)`: a detached copy of the
/// mount tree at `fd` (like `mount --rbind`, not yet attached anywhere).
pub fn clone_tree(fd: BorrowedFd<'_>, what: &Path) -> Result<OwnedFd, MountError> {
    crate::sys::mount::open_tree(
        fd,
        c"",
        OpenTreeFlags::OPEN_TREE_CLONE | OpenTreeFlags::AT_EMPTY_PATH | OpenTreeFlags::AT_RECURSIVE,
    )
    .map_err(MountError::on("open_tree(OPEN_TREE_CLONE)", what))
}

/// `mount_setattr(fd, "", AT_EMPTY_PATH[|AT_RECURSIVE], {set, clr})`. Only the
/// named flags change; locked flags and atime settings stay as they were.
pub fn set_attr(
    fd: BorrowedFd<'_>,
    set: u64,
    clr: u64,
    recursive: bool,
    what: &Path,
) -> Result<(), MountError> {
    crate::sys::mount::set_attr(fd, set, clr, recursive)
        .map_err(MountError::on("mount_setattr", what))
}

/// `move_mount(mnt, "", target, "", F_EMPTY_PATH|T_EMPTY_PATH)`: attach a
/// detached mount onto the object `target` refers to.
pub fn attach(mnt: BorrowedFd<'_>, target: BorrowedFd<'_>, what: &Path) -> Result<(), MountError> {
    crate::sys::mount::move_mount(
        mnt,
        c"",
        target,
        c"",
        MoveMountFlags::MOVE_MOUNT_F_EMPTY_PATH | MoveMountFlags::MOVE_MOUNT_T_EMPTY_PATH,
    )
    .map_err(MountError::on("move_mount", what))
}

/// A new, detached file system instance: `fsopen` + `fsconfig` + `fsmount`.
/// `options` are string options; a value of `None` sets a flag option.
pub fn new_fs(
    fstype: &CStr,
    options: &[(&CStr, Option<&CStr>)],
    attrs: u64,
    what: &Path,
) -> Result<OwnedFd, MountError> {
    use crate::sys::mount as sys;
    use std::os::fd::AsFd;
    let fs = sys::fsopen(fstype).map_err(MountError::on("fsopen", what))?;
    for (key, value) in options {
        match value {
            Some(v) => sys::fsconfig_set_string(fs.as_fd(), key, v),
            None => sys::fsconfig_set_flag(fs.as_fd(), key),
        }
        .map_err(MountError::on("fsconfig", what))?;
    }
    sys::fsconfig_create(fs.as_fd()).map_err(MountError::on("fsconfig(CREATE)", what))?;
    sys::fsmount(fs.as_fd(), attrs).map_err(MountError::on("fsmount", what))
}

/// `mount(NULL, "/", NULL, MS_REC|MS_SLAVE, NULL)`: nothing we mount from
/// here on propagates back to the host, host unmounts still reach us.
pub fn make_rslave_root() -> Result<(), MountError> {
    crate::sys::mount::make_rslave_root()
        .map_err(MountError::on("mount(MS_REC|MS_SLAVE)", Path::new("/")))
}

/// Makes the mount behind `root` the root of this mount namespace
/// ([`crate::sys::mount::pivot_into`]), then `chdir("/")`.
pub fn pivot_into(root: BorrowedFd<'_>) -> Result<(), MountError> {
    crate::sys::mount::pivot_into(root).map_err(|(op, source)| MountError {
        op,
        path: ".".into(),
        source,
    })?;
    nix::unistd::chdir("/").map_err(|e| MountError {
        op: "chdir",
        path: "/".into(),
        source: e.into(),
    })
}
