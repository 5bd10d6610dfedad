//! Process handles: a pidfd names one process for as long as it is held,
//! where a pid may be reused (xdg-desktop-portal issue 913).

use std::io;
use std::os::fd::{BorrowedFd, OwnedFd};

/// `pidfd_open(pid, 0)`.
pub fn open(pid: i32) -> io::Result<OwnedFd> {
    let pid = rustix::process::Pid::from_raw(pid).ok_or(io::ErrorKind::InvalidInput)?;
    Ok(rustix::process::pidfd_open(
        pid,
        rustix::process::PidfdFlags::empty(),
    )?)
}

/// `pidfd_send_signal(pidfd, sig, NULL, 0)`.
pub fn send_signal(pidfd: BorrowedFd<'_>, sig: libc::c_int) -> io::Result<()> {
    let sig = rustix::process::Signal::from_named_raw(sig).ok_or(io::ErrorKind::InvalidInput)?;
    Ok(rustix::process::pidfd_send_signal(pidfd, sig)?)
}
