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
