//! Process handles: a pidfd names one process for as long as it is held,
//! where a pid may be reused (xdg-desktop-portal issue 913).

use std::io;
use std::os::fd::{BorrowedFd, OwnedFd};

/// `pidfd_open(pid, 0)`.
pub fn open(pid: i32) -> io::Result<OwnedFd> {
    // Pid::from_raw debug-asserts a non-negative pid; a pid read from an
    // instance record or /proc is checked here instead.
    if pid <= 0 {
        return Err(io::ErrorKind::InvalidInput.into());
    }
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsFd;
    use std::os::unix::process::ExitStatusExt;

    #[test]
    fn a_pidfd_signals_its_process_and_only_while_it_exists() {
        let mut child = std::process::Command::new("/bin/sleep")
            .arg("30")
            .spawn()
            .unwrap();
        let fd = open(child.id() as i32).unwrap();
        send_signal(fd.as_fd(), libc::SIGKILL).unwrap();
        assert_eq!(child.wait().unwrap().signal(), Some(libc::SIGKILL));
        // Reaped: the pidfd still names that process, which is gone; the
        // signal cannot reach whatever reuses the pid.
        let e = send_signal(fd.as_fd(), libc::SIGKILL).unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::ESRCH), "{e}");
    }

    #[test]
    fn no_pidfd_for_pid_0_or_an_unnamed_signal() {
        assert!(open(0).is_err());
        assert!(open(-1).is_err());
        let me = open(std::process::id() as i32).unwrap();
        assert!(send_signal(me.as_fd(), 0x7fff).is_err());
    }
}
