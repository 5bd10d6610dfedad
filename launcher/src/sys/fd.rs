//! Descriptor calls: `openat2` with `RESOLVE_*` flags, `close_range`.

use std::ffi::CStr;
use std::io;
use std::os::fd::{BorrowedFd, OwnedFd};

pub use rustix::fs::{OFlags, ResolveFlags};

/// `openat2(dir, path, {flags | O_CLOEXEC, 0, resolve | RESOLVE_NO_MAGICLINKS})`.
/// Magic links (`/proc/PID/fd/N`, `/proc/PID/root`) are never followed:
/// nothing the launcher opens inside a tree it resolves should jump out of
/// it through one (openat2(2); CVE-2019-5736 was such a jump).
pub fn openat2(
    dir: BorrowedFd<'_>,
    path: &CStr,
    flags: OFlags,
    resolve: ResolveFlags,
) -> io::Result<OwnedFd> {
    Ok(rustix::fs::openat2(
        dir,
        path,
        flags | OFlags::CLOEXEC,
        rustix::fs::Mode::empty(),
        resolve | ResolveFlags::NO_MAGICLINKS,
    )?)
}

/// `close_range(first, last, 0)`: closes the descriptors `first..=last`.
/// Reads errno only when the call failed (EINVAL for `first > last` is its
/// only failure on the kernels we support).
pub fn close_range(first: libc::c_uint, last: libc::c_uint) -> io::Result<()> {
    range(first, last, 0)
}

/// `close_range(first, last, CLOSE_RANGE_CLOEXEC)` (Linux 5.11): marks the
/// descriptors `first..=last` close-on-exec instead of closing them, so
/// that the ones a child still needs until its `execve` stay usable.
pub fn set_cloexec_range(first: libc::c_uint, last: libc::c_uint) -> io::Result<()> {
    range(first, last, libc::CLOSE_RANGE_CLOEXEC)
}

fn range(first: libc::c_uint, last: libc::c_uint, flags: libc::c_uint) -> io::Result<()> {
    // SAFETY: close_range takes no memory; every caller owns the whole
    // range (after fork or clone, or in the single-threaded pid 1), so no
    // OwnedFd elsewhere refers to a descriptor closed here.
    if unsafe { libc::close_range(first, last, flags as libc::c_int) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::{AsFd, AsRawFd};

    fn dir_fd(path: &std::path::Path) -> OwnedFd {
        std::fs::File::open(path).unwrap().into()
    }

    #[test]
    fn openat2_resolves_an_absolute_symlink_inside_the_root() {
        let tmp = tempfile::tempdir().unwrap();
        std::os::unix::fs::symlink("/etc", tmp.path().join("link")).unwrap();
        let root = dir_fd(tmp.path());
        // With RESOLVE_IN_ROOT, /etc is the tree's own /etc, which is absent.
        let e = openat2(
            root.as_fd(),
            c"link/passwd",
            OFlags::PATH,
            ResolveFlags::IN_ROOT,
        )
        .unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::ENOENT), "{e}");
        // With RESOLVE_NO_SYMLINKS, the link itself is refused.
        let e = openat2(
            root.as_fd(),
            c"link",
            OFlags::PATH,
            ResolveFlags::NO_SYMLINKS,
        )
        .unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::ELOOP), "{e}");
        // The tree's own files open, close-on-exec.
        std::fs::write(tmp.path().join("f"), b"x").unwrap();
        let f = openat2(root.as_fd(), c"f", OFlags::RDONLY, ResolveFlags::IN_ROOT).unwrap();
        let fl = nix::fcntl::fcntl(f.as_fd(), nix::fcntl::FcntlArg::F_GETFD).unwrap();
        assert_ne!(fl & libc::FD_CLOEXEC, 0);
    }

    #[test]
    fn openat2_never_follows_a_magic_link() {
        let proc_self = dir_fd(std::path::Path::new("/proc/self"));
        // /proc/self/root is a magic link to our root: followed, it would
        // open "/"; the layer always adds RESOLVE_NO_MAGICLINKS.
        let e = openat2(
            proc_self.as_fd(),
            c"root",
            OFlags::PATH,
            ResolveFlags::empty(),
        )
        .unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::ELOOP), "{e}");
    }

    #[test]
    fn cloexec_range_marks_and_a_reversed_range_is_refused() {
        // Opened without O_CLOEXEC (nix adds nothing).
        let fd = nix::fcntl::open(
            "/dev/null",
            nix::fcntl::OFlag::O_RDONLY,
            nix::sys::stat::Mode::empty(),
        )
        .unwrap();
        let flags = || nix::fcntl::fcntl(fd.as_fd(), nix::fcntl::FcntlArg::F_GETFD).unwrap();
        assert_eq!(flags() & libc::FD_CLOEXEC, 0);
        let n = fd.as_raw_fd() as libc::c_uint;
        set_cloexec_range(n, n).unwrap();
        assert_ne!(flags() & libc::FD_CLOEXEC, 0);
        // first > last: EINVAL, and nothing closed.
        let e = close_range(n + 1, n).unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::EINVAL));
        assert_ne!(flags() & libc::FD_CLOEXEC, 0);
    }
}
