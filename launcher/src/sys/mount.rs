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

#[cfg(test)]
mod tests {
    use super::*;
    use std::ffi::CString;
    use std::os::fd::AsFd;

    fn c(p: std::path::PathBuf) -> CString {
        CString::new(p.into_os_string().into_encoded_bytes()).unwrap()
    }

    /// A tmpfs made with fsopen/fsconfig/fsmount, attached with move_mount,
    /// cloned with open_tree, made read-only with mount_setattr, all in a
    /// forked child's own mount namespace (the host's stays untouched).
    /// The child uses only the layer and raw libc calls on strings made
    /// before fork; its exit code names the step that failed.
    #[test]
    fn new_mount_api_round_trip() {
        if !porthole_tests::running_as_root("new_mount_api_round_trip (a mount namespace)") {
            return;
        }
        let tmp = tempfile::tempdir().unwrap();
        std::fs::create_dir(tmp.path().join("a")).unwrap();
        std::fs::create_dir(tmp.path().join("b")).unwrap();
        let (a, b) = (c(tmp.path().join("a")), c(tmp.path().join("b")));
        let (f1, f2) = (c(tmp.path().join("a/f1")), c(tmp.path().join("a/f2")));
        let f1_in_b = c(tmp.path().join("b/f1"));
        let create = |p: &CString| {
            // SAFETY: open(2) with a NUL-terminated path; the fd is closed.
            unsafe {
                let fd = libc::open(p.as_ptr(), libc::O_CREAT | libc::O_WRONLY, 0o600);
                if fd >= 0 {
                    libc::close(fd);
                }
                fd >= 0
            }
        };
        let child = || -> i32 {
            // SAFETY: unshare(2) takes flags only.
            if unsafe { libc::unshare(libc::CLONE_NEWNS) } != 0 {
                return 10;
            }
            if make_rslave_root().is_err() {
                return 11;
            }
            let Ok(fs) = fsopen(c"tmpfs") else { return 12 };
            if fsconfig_set_string(fs.as_fd(), c"mode", c"0755").is_err()
                || fsconfig_create(fs.as_fd()).is_err()
            {
                return 13;
            }
            let Ok(mnt) = fsmount(fs.as_fd(), MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV) else {
                return 14;
            };
            if move_mount(
                mnt.as_fd(),
                c"",
                CWD,
                &a,
                MoveMountFlags::MOVE_MOUNT_F_EMPTY_PATH,
            )
            .is_err()
            {
                return 15;
            }
            if !create(&f1) {
                return 16;
            }
            let Ok(copy) = open_tree(
                CWD,
                &a,
                OpenTreeFlags::OPEN_TREE_CLONE | OpenTreeFlags::AT_RECURSIVE,
            ) else {
                return 17;
            };
            if move_mount(
                copy.as_fd(),
                c"",
                CWD,
                &b,
                MoveMountFlags::MOVE_MOUNT_F_EMPTY_PATH,
            )
            .is_err()
            {
                return 18;
            }
            // SAFETY: access(2) with a NUL-terminated path.
            if unsafe { libc::access(f1_in_b.as_ptr(), libc::F_OK) } != 0 {
                return 19;
            }
            if set_attr(mnt.as_fd(), MOUNT_ATTR_RDONLY, 0, false).is_err() {
                return 20;
            }
            // Read-only now: creating fails with EROFS.
            if create(&f2) || std::io::Error::last_os_error().raw_os_error() != Some(libc::EROFS) {
                return 21;
            }
            0
        };
        // SAFETY: the child makes only raw syscalls on data made before
        // fork (no allocation, no lock) and leaves with _exit.
        match unsafe { nix::unistd::fork() }.unwrap() {
            nix::unistd::ForkResult::Child => {
                let code = child();
                // SAFETY: ends the forked child without running the test
                // harness's exit handlers.
                unsafe { libc::_exit(code) }
            }
            nix::unistd::ForkResult::Parent { child } => {
                let status = nix::sys::wait::waitpid(child, None).unwrap();
                assert_eq!(status, nix::sys::wait::WaitStatus::Exited(child, 0));
            }
        }
        // The host's view: nothing was mounted here.
        assert!(!tmp.path().join("a/f1").exists());
    }
}
