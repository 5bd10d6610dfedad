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
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::path::Path;

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
    fn last(op: &'static str, path: impl AsRef<Path>) -> Self {
        MountError {
            op,
            path: path.as_ref().display().to_string(),
            source: std::io::Error::last_os_error(),
        }
    }
}

// include/uapi/linux/mount.h
pub(crate) const OPEN_TREE_CLONE: libc::c_uint = 1;
const OPEN_TREE_CLOEXEC: libc::c_uint = libc::O_CLOEXEC as libc::c_uint;
pub(crate) const MOVE_MOUNT_F_EMPTY_PATH: libc::c_uint = 0x4;
const MOVE_MOUNT_T_EMPTY_PATH: libc::c_uint = 0x40;
const FSOPEN_CLOEXEC: libc::c_uint = 0x1;
const FSMOUNT_CLOEXEC: libc::c_uint = 0x1;
const FSCONFIG_SET_FLAG: libc::c_uint = 0;
pub(crate) const FSCONFIG_SET_STRING: libc::c_uint = 1;
pub(crate) const FSCONFIG_CMD_CREATE: libc::c_uint = 6;
pub const MOUNT_ATTR_RDONLY: u64 = 0x1;
pub const MOUNT_ATTR_NOSUID: u64 = 0x2;
pub const MOUNT_ATTR_NODEV: u64 = 0x4;
pub const MOUNT_ATTR_NOEXEC: u64 = 0x8;

/// `struct mount_attr` from include/uapi/linux/mount.h.
#[repr(C)]
pub(crate) struct MountAttr {
    pub(crate) attr_set: u64,
    pub(crate) attr_clr: u64,
    pub(crate) propagation: u64,
    pub(crate) userns_fd: u64,
}

fn cstr(path: &Path) -> CString {
    CString::new(path.as_os_str().as_encoded_bytes())
        .unwrap_or_else(|_| c"/nonexistent-nul".to_owned())
}

fn owned(fd: libc::c_long) -> OwnedFd {
    // SAFETY: callers pass the non-negative return value of a syscall that
    // just created this fd; nothing else owns it.
    unsafe { OwnedFd::from_raw_fd(fd as RawFd) }
}

/// `openat2(dirfd, path, O_PATH|O_CLOEXEC|O_NOFOLLOW, RESOLVE_IN_ROOT|RESOLVE_NO_SYMLINKS|RESOLVE_NO_MAGICLINKS)`:
/// an `O_PATH` handle on exactly the object named, relative to `dirfd` as root.
pub fn open_path(dirfd: BorrowedFd<'_>, path: &Path) -> Result<OwnedFd, MountError> {
    let c = cstr(path);
    // SAFETY: open_how is plain old data; all-zero is valid (and required
    // for fields we do not set).
    let mut how: libc::open_how = unsafe { std::mem::zeroed() };
    how.flags = (libc::O_PATH | libc::O_CLOEXEC | libc::O_NOFOLLOW) as u64;
    how.resolve = libc::RESOLVE_IN_ROOT | libc::RESOLVE_NO_SYMLINKS | libc::RESOLVE_NO_MAGICLINKS;
    // SAFETY: `c` is NUL-terminated and `how` is a fully initialised open_how
    // whose size we pass; both outlive the call, the kernel only reads them.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_openat2,
            dirfd.as_raw_fd(),
            c.as_ptr(),
            &how as *const libc::open_how,
            std::mem::size_of::<libc::open_how>(),
        )
    };
    if fd < 0 {
        return Err(MountError::last("openat2", path));
    }
    Ok(owned(fd))
}

/// `open_tree(fd, "", OPEN_TREE_CLONE|AT_RECURSIVE)`: a detached copy of the
/// mount tree at `fd` (like `mount --rbind`, not yet attached anywhere).
pub fn clone_tree(fd: BorrowedFd<'_>, what: &Path) -> Result<OwnedFd, MountError> {
    // SAFETY: the path is the empty C string literal; `fd` is a live fd.
    let tree = unsafe {
        libc::syscall(
            libc::SYS_open_tree,
            fd.as_raw_fd(),
            c"".as_ptr(),
            OPEN_TREE_CLONE
                | OPEN_TREE_CLOEXEC
                | (libc::AT_EMPTY_PATH | libc::AT_RECURSIVE) as libc::c_uint,
        )
    };
    if tree < 0 {
        return Err(MountError::last("open_tree(OPEN_TREE_CLONE)", what));
    }
    Ok(owned(tree))
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
    let attr = MountAttr {
        attr_set: set,
        attr_clr: clr,
        propagation: 0,
        userns_fd: 0,
    };
    let mut flags = libc::AT_EMPTY_PATH as libc::c_uint;
    if recursive {
        flags |= libc::AT_RECURSIVE as libc::c_uint;
    }
    // SAFETY: `attr` is a fully initialised mount_attr (size passed) and the
    // path is an empty C string; the kernel only reads both.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_mount_setattr,
            fd.as_raw_fd(),
            c"".as_ptr(),
            flags,
            &attr as *const MountAttr,
            std::mem::size_of::<MountAttr>(),
        )
    };
    if rc < 0 {
        return Err(MountError::last("mount_setattr", what));
    }
    Ok(())
}

/// `move_mount(mnt, "", target, "", F_EMPTY_PATH|T_EMPTY_PATH)`: attach a
/// detached mount onto the object `target` refers to.
pub fn attach(mnt: BorrowedFd<'_>, target: BorrowedFd<'_>, what: &Path) -> Result<(), MountError> {
    // SAFETY: both fds are live for the call and both paths are empty C
    // strings; move_mount does not retain any pointer.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_move_mount,
            mnt.as_raw_fd(),
            c"".as_ptr(),
            target.as_raw_fd(),
            c"".as_ptr(),
            MOVE_MOUNT_F_EMPTY_PATH | MOVE_MOUNT_T_EMPTY_PATH,
        )
    };
    if rc < 0 {
        return Err(MountError::last("move_mount", what));
    }
    Ok(())
}

/// A new, detached file system instance: `fsopen` + `fsconfig` + `fsmount`.
/// `options` are string options; a value of `None` sets a flag option.
pub fn new_fs(
    fstype: &CStr,
    options: &[(&CStr, Option<&CStr>)],
    attrs: u64,
    what: &Path,
) -> Result<OwnedFd, MountError> {
    // SAFETY: `fstype` is a NUL-terminated string valid for the call.
    let fsfd = unsafe { libc::syscall(libc::SYS_fsopen, fstype.as_ptr(), FSOPEN_CLOEXEC) };
    if fsfd < 0 {
        return Err(MountError::last("fsopen", what));
    }
    let fsfd = owned(fsfd);
    for (key, value) in options {
        let (cmd, vptr) = match value {
            Some(v) => (FSCONFIG_SET_STRING, v.as_ptr()),
            None => (FSCONFIG_SET_FLAG, std::ptr::null()),
        };
        // SAFETY: key/value are NUL-terminated strings (or null for a flag,
        // as fsconfig(2) requires) valid for the call; aux is 0.
        let rc = unsafe {
            libc::syscall(
                libc::SYS_fsconfig,
                fsfd.as_raw_fd(),
                cmd,
                key.as_ptr(),
                vptr,
                0,
            )
        };
        if rc < 0 {
            return Err(MountError::last("fsconfig", what));
        }
    }
    // SAFETY: FSCONFIG_CMD_CREATE takes no key, value or aux.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_fsconfig,
            fsfd.as_raw_fd(),
            FSCONFIG_CMD_CREATE,
            std::ptr::null::<libc::c_char>(),
            std::ptr::null::<libc::c_char>(),
            0,
        )
    };
    if rc < 0 {
        return Err(MountError::last("fsconfig(CREATE)", what));
    }
    // SAFETY: fsfd is a configured fs context; attrs are MOUNT_ATTR_* bits.
    let mnt = unsafe { libc::syscall(libc::SYS_fsmount, fsfd.as_raw_fd(), FSMOUNT_CLOEXEC, attrs) };
    if mnt < 0 {
        return Err(MountError::last("fsmount", what));
    }
    Ok(owned(mnt))
}

/// `mount(NULL, "/", NULL, MS_REC|MS_SLAVE, NULL)`: nothing we mount from
/// here on propagates back to the host, host unmounts still reach us.
pub fn make_rslave_root() -> Result<(), MountError> {
    nix::mount::mount(
        None::<&str>,
        "/",
        None::<&str>,
        nix::mount::MsFlags::MS_REC | nix::mount::MsFlags::MS_SLAVE,
        None::<&str>,
    )
    .map_err(|e| MountError {
        op: "mount(MS_REC|MS_SLAVE)",
        path: "/".into(),
        source: e.into(),
    })
}

/// Makes the mount behind `root` the root of this mount namespace:
/// `fchdir(root)`, `pivot_root(".", ".")`, `umount2(".", MNT_DETACH)`,
/// `chdir("/")`. Stacking the old root on the new one and detaching it is the
/// idiom from pivot_root(2) ("new_root and put_old may be the same").
pub fn pivot_into(root: BorrowedFd<'_>) -> Result<(), MountError> {
    nix::unistd::fchdir(root).map_err(|e| MountError {
        op: "fchdir",
        path: "new root".into(),
        source: e.into(),
    })?;
    nix::unistd::pivot_root(".", ".").map_err(|e| MountError {
        op: "pivot_root",
        path: ".".into(),
        source: e.into(),
    })?;
    nix::mount::umount2(".", nix::mount::MntFlags::MNT_DETACH).map_err(|e| MountError {
        op: "umount2(MNT_DETACH)",
        path: "old root".into(),
        source: e.into(),
    })?;
    nix::unistd::chdir("/").map_err(|e| MountError {
        op: "chdir",
        path: "/".into(),
        source: e.into(),
    })
}
