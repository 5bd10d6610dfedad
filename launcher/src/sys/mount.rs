//! The mount API (Linux 5.2; `mount_setattr` 5.12), fd-based, plus the
//! two old-API steps a new root still needs (`MS_SLAVE`, `pivot_root`).
//!
//! No wrapper allocates (paths are `&CStr`), so the D-Bus proxy's child
//! uses them between `fork` and `execve` as the sandbox's pid 1 does.

use std::ffi::CStr;
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, OwnedFd};

pub use rustix::fs::CWD;
pub use rustix::mount::{MoveMountFlags, OpenTreeFlags};

/// `MOUNT_ATTR_*` bits (include/uapi/linux/mount.h), for [`set_attr`] and
/// [`fsmount`].
pub const MOUNT_ATTR_RDONLY: u64 = 0x1;
pub const MOUNT_ATTR_NOSUID: u64 = 0x2;
pub const MOUNT_ATTR_NODEV: u64 = 0x4;
pub const MOUNT_ATTR_NOEXEC: u64 = 0x8;

/// `open_tree(dir, path, flags | OPEN_TREE_CLOEXEC)`; with
/// `OPEN_TREE_CLONE` a detached copy of the mount tree there (like
/// `mount --rbind` with `AT_RECURSIVE`), not yet attached anywhere.
pub fn open_tree(dir: BorrowedFd<'_>, path: &CStr, flags: OpenTreeFlags) -> io::Result<OwnedFd> {
    Ok(rustix::mount::open_tree(
        dir,
        path,
        flags | OpenTreeFlags::OPEN_TREE_CLOEXEC,
    )?)
}

/// `move_mount(from, from_path, to, to_path, flags)`: attaches the detached
/// mount `from` (with `MOVE_MOUNT_F_EMPTY_PATH`) at `to`/`to_path`.
pub fn move_mount(
    from: BorrowedFd<'_>,
    from_path: &CStr,
    to: BorrowedFd<'_>,
    to_path: &CStr,
    flags: MoveMountFlags,
) -> io::Result<()> {
    Ok(rustix::mount::move_mount(
        from, from_path, to, to_path, flags,
    )?)
}

/// `struct mount_attr` from include/uapi/linux/mount.h.
#[repr(C)]
struct MountAttr {
    attr_set: u64,
    attr_clr: u64,
    propagation: u64,
    userns_fd: u64,
}

/// `mount_setattr(fd, "", AT_EMPTY_PATH[|AT_RECURSIVE], {set, clr})`: only
/// the named `MOUNT_ATTR_*` flags change; locked flags and atime settings
/// stay as they were. rustix does not offer this call.
pub fn set_attr(fd: BorrowedFd<'_>, set: u64, clr: u64, recursive: bool) -> io::Result<()> {
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
    // SAFETY: `attr` is a fully initialised mount_attr whose size we pass
    // and the path an empty C string literal; the kernel only reads both,
    // during the call. `fd` is borrowed, so it stays open for the call.
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
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// `fsopen(fstype, FSOPEN_CLOEXEC)`: a new file system context.
pub fn fsopen(fstype: &CStr) -> io::Result<OwnedFd> {
    Ok(rustix::mount::fsopen(
        fstype,
        rustix::mount::FsOpenFlags::FSOPEN_CLOEXEC,
    )?)
}

/// `fsconfig(fs, FSCONFIG_SET_STRING, key, value, 0)`.
pub fn fsconfig_set_string(fs: BorrowedFd<'_>, key: &CStr, value: &CStr) -> io::Result<()> {
    Ok(rustix::mount::fsconfig_set_string(fs, key, value)?)
}

/// `fsconfig(fs, FSCONFIG_SET_FLAG, key, NULL, 0)`.
pub fn fsconfig_set_flag(fs: BorrowedFd<'_>, key: &CStr) -> io::Result<()> {
    Ok(rustix::mount::fsconfig_set_flag(fs, key)?)
}

/// `fsconfig(fs, FSCONFIG_CMD_CREATE, NULL, NULL, 0)`: the superblock.
pub fn fsconfig_create(fs: BorrowedFd<'_>) -> io::Result<()> {
    Ok(rustix::mount::fsconfig_create(fs)?)
}

/// `fsmount(fs, FSMOUNT_CLOEXEC, attrs)`: a detached mount of the created
/// superblock, with the `MOUNT_ATTR_*` bits `attrs`.
pub fn fsmount(fs: BorrowedFd<'_>, attrs: u64) -> io::Result<OwnedFd> {
    Ok(rustix::mount::fsmount(
        fs,
        rustix::mount::FsMountFlags::FSMOUNT_CLOEXEC,
        rustix::mount::MountAttrFlags::from_bits_retain(attrs as libc::c_uint),
    )?)
}

/// `mount(NULL, "/", NULL, MS_REC|MS_SLAVE, NULL)`: nothing mounted from
/// here on propagates back to the host; host unmounts still reach us.
pub fn make_rslave_root() -> io::Result<()> {
    use rustix::mount::MountPropagationFlags as P;
    Ok(rustix::mount::mount_change(c"/", P::DOWNSTREAM | P::REC)?)
}

/// Makes the mount behind `root` the root of this mount namespace:
/// `fchdir(root)`, `pivot_root(".", ".")`, `umount2(".", MNT_DETACH)`.
/// Stacking the old root on the new one and detaching it is the idiom from
/// pivot_root(2) ("new_root and put_old may be the same"). On failure, the
/// step that failed and the kernel's answer.
pub fn pivot_into(root: BorrowedFd<'_>) -> Result<(), (&'static str, io::Error)> {
    rustix::process::fchdir(root).map_err(|e| ("fchdir new root", e.into()))?;
    rustix::process::pivot_root(c".", c".").map_err(|e| ("pivot_root", e.into()))?;
    rustix::mount::unmount(c".", rustix::mount::UnmountFlags::DETACH)
        .map_err(|e| ("umount2(MNT_DETACH) old root", e.into()))
}
