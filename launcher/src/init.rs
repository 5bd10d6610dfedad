//! Process supervision: the sandbox's pid 1 and the host-side monitor share
//! one loop. Signals are blocked and taken with `sigwait` (no handlers, no
//! async-signal-safety traps): SIGCHLD reaps, the others are forwarded.
//!
//! A pid-namespace init only receives signals from its parent namespace when
//! it handles them or has them blocked (signal(7), pid_namespaces(7)); we
//! block them, so SIGTERM to `porthole run` reaches the app through us.

use nix::sys::signal::{SigSet, SigmaskHow, Signal};
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::Pid;

/// Signals passed on to the app.
pub const FORWARDED: [Signal; 8] = [
    Signal::SIGHUP,
    Signal::SIGINT,
    Signal::SIGQUIT,
    Signal::SIGTERM,
    Signal::SIGUSR1,
    Signal::SIGUSR2,
    Signal::SIGCONT,
    Signal::SIGWINCH,
];

fn supervised_set() -> SigSet {
    let mut set = SigSet::empty();
    for s in FORWARDED {
        set.add(s);
    }
    set.add(Signal::SIGCHLD);
    set
}

/// Blocks the supervised signals; returns the previous mask.
pub fn block_signals() -> nix::Result<SigSet> {
    let mut old = SigSet::empty();
    nix::sys::signal::sigprocmask(
        SigmaskHow::SIG_BLOCK,
        Some(&supervised_set()),
        Some(&mut old),
    )?;
    Ok(old)
}

/// Restores a mask saved by [`block_signals`] (in the app, before exec).
pub fn restore_signals(old: &SigSet) -> nix::Result<()> {
    nix::sys::signal::sigprocmask(SigmaskHow::SIG_SETMASK, Some(old), None)
}

/// The shell's convention for an exit status.
pub fn exit_code(status: WaitStatus) -> Option<i32> {
    match status {
        WaitStatus::Exited(_, code) => Some(code),
        WaitStatus::Signaled(_, sig, _) => Some(128 + sig as i32),
        _ => None,
    }
}

/// Who to reap.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reap {
    /// Only `main` (the host-side monitor).
    MainOnly,
    /// Every child (pid 1 adopts orphans and must reap them).
    All,
}

/// Forwards signals to `main` and waits for it; returns its exit code.
/// Requires the supervised signals to be blocked (see [`block_signals`]).
pub fn supervise(main: Pid, reap: Reap) -> i32 {
    let set = supervised_set();
    loop {
        // Reap first: SIGCHLD may have been consumed before we got here.
        if let Some(code) = reap_exited(main, reap) {
            return code;
        }
        match set.wait() {
            Ok(Signal::SIGCHLD) => {}
            Ok(sig) => {
                // Cannot fail: `main` is our child until reaped here (a zombie
                // takes the signal too).
                let _ = nix::sys::signal::kill(main, sig);
            }
            Err(_) => {}
        }
    }
}

/// How [`supervise_with_status`] ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ended {
    /// `main` sent the app's exit status on the status pipe; `main` itself
    /// may still be exiting (and is not reaped).
    Reported(i32),
    /// `main` exited and was reaped; its own exit code.
    Reaped(i32),
}

/// As [`supervise`] with [`Reap::MainOnly`], but also returns as soon as
/// `main` writes one status byte on `status` (the sandbox's pid 1 does so
/// when the app has exited, before its own exit and the teardown of its
/// namespaces). EOF on `status` (pid 1 killed before it could write) falls
/// back to waiting for `main`.
pub fn supervise_with_status(main: Pid, status: std::os::fd::BorrowedFd<'_>) -> Ended {
    use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
    use nix::sys::signalfd::{SfdFlags, SignalFd};
    use std::os::fd::AsFd;
    let set = supervised_set();
    let Ok(sfd) = SignalFd::with_flags(&set, SfdFlags::SFD_NONBLOCK | SfdFlags::SFD_CLOEXEC) else {
        return Ended::Reaped(supervise(main, Reap::MainOnly));
    };
    loop {
        if let Some(code) = reap_exited(main, Reap::MainOnly) {
            return Ended::Reaped(code);
        }
        let mut fds = [
            PollFd::new(status, PollFlags::POLLIN),
            PollFd::new(sfd.as_fd(), PollFlags::POLLIN),
        ];
        match poll(&mut fds, PollTimeout::NONE) {
            Ok(_) | Err(nix::Error::EINTR) => {}
            Err(_) => return Ended::Reaped(supervise(main, Reap::MainOnly)),
        }
        if fds[0].any().unwrap_or(false) {
            let mut b = [0u8; 1];
            match nix::unistd::read(status, &mut b) {
                Ok(1) => return Ended::Reported(i32::from(b[0])),
                Err(nix::Error::EINTR | nix::Error::EAGAIN) => {}
                // EOF: pid 1 is gone without a word; its exit says it all.
                _ => return Ended::Reaped(supervise(main, Reap::MainOnly)),
            }
        }
        while let Ok(Some(info)) = sfd.read_signal() {
            if let Ok(sig) = Signal::try_from(info.ssi_signo as i32)
                && sig != Signal::SIGCHLD
            {
                // Cannot fail: `main` is our child until reaped here (a zombie
                // takes the signal too).
                let _ = nix::sys::signal::kill(main, sig);
            }
        }
    }
}

/// Reaps what has exited, without blocking: `main`'s exit code once it has
/// exited (127 when there is no child left to wait for), else None.
fn reap_exited(main: Pid, reap: Reap) -> Option<i32> {
    let target = match reap {
        Reap::MainOnly => main,
        Reap::All => Pid::from_raw(-1),
    };
    loop {
        match waitpid(target, Some(WaitPidFlag::WNOHANG | WaitPidFlag::__WALL)) {
            Ok(WaitStatus::StillAlive) => return None,
            Ok(status) => {
                if status.pid() == Some(main)
                    && let Some(code) = exit_code(status)
                {
                    return Some(code);
                }
            }
            Err(nix::Error::EINTR) => continue,
            Err(nix::Error::ECHILD) => return Some(127),
            Err(_) => return None,
        }
    }
}

/// PR_SET_PDEATHSIG: `sig` when the parent exits. One prctl(2), no
/// allocation: also used between fork and exec (the D-Bus proxy's child).
pub fn parent_death_signal(sig: Signal) -> nix::Result<()> {
    nix::sys::prctl::set_pdeathsig(Some(sig))
}

/// Closes every descriptor from 3 up except those in `keep`, with
/// close_range(2). Pid 1 is a clone of the host-side launcher and never
/// execs, so O_CLOEXEC does not protect it: whatever the caller of
/// `porthole` left open (a directory fd is a way out of any mount
/// namespace) would otherwise stay reachable through /proc/1/fd.
pub fn close_fds_from_3_except(keep: &[std::os::fd::RawFd]) -> std::io::Result<()> {
    let mut keep: Vec<libc::c_uint> = keep
        .iter()
        .filter(|&&fd| fd >= 3)
        .map(|&fd| fd as libc::c_uint)
        .collect();
    keep.sort_unstable();
    keep.dedup();
    let mut first: libc::c_uint = 3;
    for fd in keep.into_iter().chain(std::iter::once(libc::c_uint::MAX)) {
        if fd > first {
            crate::sys::fd::close_range(first, fd - 1)?;
        }
        first = fd.saturating_add(1);
    }
    Ok(())
}

/// PR_SET_DUMPABLE 0 for pid 1: the app runs as the same uid, and a
/// dumpable pid 1 lets it open /proc/1/mem read-write (run code in pid 1,
/// clear its parent-death signal) and read /proc/1/environ. Not dumpable,
/// those need CAP_SYS_PTRACE over pid 1's memory, which the app never has
/// (proc(5), ptrace(2) "Ptrace access mode checking").
pub fn not_dumpable() -> nix::Result<()> {
    nix::sys::prctl::set_dumpable(false)
}

/// Wipes the host environment from pid 1's memory: pid 1 is a clone of the
/// host launcher, so the block the kernel shows as /proc/1/environ (from
/// env_start to env_end in /proc/self/stat, proc(5)) still holds every
/// variable of whoever started `porthole`. Zeroes that block, then
/// clearenv(3) so nothing reads the zeroed strings. Must run while the
/// host's /proc is still mounted (before the new root).
pub fn wipe_environment() -> std::io::Result<()> {
    let stat = std::fs::read_to_string("/proc/self/stat")?;
    let bad = || std::io::Error::from(std::io::ErrorKind::InvalidData);
    // Fields after "(comm)" start at field 3; env_start and env_end are
    // fields 50 and 51.
    let rest = stat.rsplit_once(')').ok_or_else(bad)?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let start: usize = fields
        .get(50 - 3)
        .ok_or_else(bad)?
        .parse()
        .map_err(|_| bad())?;
    let end: usize = fields
        .get(51 - 3)
        .ok_or_else(bad)?
        .parse()
        .map_err(|_| bad())?;
    // SAFETY: clearenv only resets libc's `environ` pointer; the launcher
    // is single-threaded, so no other thread reads the environment.
    if unsafe { libc::clearenv() } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    if start == 0 || end <= start {
        return Ok(());
    }
    // SAFETY: [start, end) is the environment block the kernel placed on
    // our initial stack (writable, mapped for the life of the process).
    // Nothing references it any more: clearenv above dropped libc's
    // pointers into it, and Rust's std::env reads through libc.
    unsafe { std::ptr::write_bytes(start as *mut u8, 0, end - start) };
    Ok(())
}

static ORIGINAL_PARENT: std::sync::atomic::AtomicI32 = std::sync::atomic::AtomicI32::new(0);

/// Records our parent pid; called first thing in `main`, so that a parent
/// that dies during start-up is noticed (see [`original_parent`]).
pub fn record_parent() {
    ORIGINAL_PARENT.store(
        nix::unistd::getppid().as_raw(),
        std::sync::atomic::Ordering::Relaxed,
    );
}

/// The parent pid recorded by [`record_parent`], if it was called.
pub fn original_parent() -> Option<Pid> {
    match ORIGINAL_PARENT.load(std::sync::atomic::Ordering::Relaxed) {
        0 => None,
        pid => Some(Pid::from_raw(pid)),
    }
}
