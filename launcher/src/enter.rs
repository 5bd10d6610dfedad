//! Acting on a running instance: `porthole enter` joins its namespaces (one
//! `setns` on a pidfd) and execs with the same last steps as the app;
//! `porthole kill` signals its pid 1. Both go through a pidfd checked against
//! the recorded start time, so a reused pid is never hit.

use std::ffi::OsString;
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd};
use std::path::Path;

use nix::sys::signal::Signal;
use nix::unistd::Pid;

use crate::exit_code;
use crate::init::{self, Reap};
use crate::instance::{self, Record};
use crate::namespace::{self, NamespaceError};
use crate::seccomp::{Filters, SeccompError};

/// Errors of `enter` and `kill`.
#[derive(Debug, thiserror::Error)]
pub enum EnterError {
    #[error("instance {0} has ended")]
    Gone(String),
    #[error("{op}: {source}")]
    Io {
        op: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Namespace(#[from] NamespaceError),
    #[error(transparent)]
    Seccomp(#[from] SeccompError),
}

impl EnterError {
    pub fn exit_code(&self) -> i32 {
        match self {
            EnterError::Gone(_) => exit_code::NO_SUCH_INSTANCE,
            _ => exit_code::SETUP_FAILED,
        }
    }
}

/// A pidfd for the instance's pid 1, verified against the record.
fn pidfd(r: &Record) -> Result<OwnedFd, EnterError> {
    // SAFETY: pidfd_open takes a pid and flags, no memory.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, r.pid, 0) };
    if fd < 0 {
        return Err(EnterError::Gone(r.instance.clone()));
    }
    // SAFETY: pidfd_open just returned this fd.
    let fd = unsafe { OwnedFd::from_raw_fd(fd as i32) };
    // Checked after opening: from here on the pidfd pins the process, so if
    // the start time still matches, the pidfd is ours.
    if !instance::is_alive(r) {
        return Err(EnterError::Gone(r.instance.clone()));
    }
    Ok(fd)
}

/// Sends `sig` to the instance's pid 1 (SIGKILL ends the whole sandbox).
pub fn signal(r: &Record, sig: Signal) -> Result<(), EnterError> {
    let fd = pidfd(r)?;
    // SAFETY: pidfd_send_signal with a live pidfd, a signal number, a null
    // siginfo (kernel fills it in) and no flags.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_pidfd_send_signal,
            fd.as_raw_fd(),
            sig as libc::c_int,
            std::ptr::null::<libc::siginfo_t>(),
            0,
        )
    };
    if rc < 0 {
        return Err(EnterError::Io {
            op: "pidfd_send_signal",
            source: std::io::Error::last_os_error(),
        });
    }
    if sig == Signal::SIGKILL {
        // Wait (briefly) until the monitor has cleaned up its record.
        for _ in 0..200 {
            if !instance::is_alive(r) {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
    }
    Ok(())
}

fn ns_differs(pid: i32, name: &str) -> bool {
    let a = std::fs::metadata(format!("/proc/self/ns/{name}"));
    let b = std::fs::metadata(format!("/proc/{pid}/ns/{name}"));
    use std::os::unix::fs::MetadataExt;
    match (a, b) {
        (Ok(a), Ok(b)) => a.ino() != b.ino() || a.dev() != b.dev(),
        _ => false,
    }
}

/// Runs `argv` inside the instance; returns its exit code.
pub fn enter(r: &Record, argv: &[OsString]) -> Result<i32, EnterError> {
    let filters = Filters::builtin();
    let fd = pidfd(r)?;
    // Join the instance's cgroup(s) first, while the host's /sys is visible.
    for cg in &r.cgroups {
        let _ = std::fs::write(
            Path::new(cg).join("cgroup.procs"),
            std::process::id().to_string(),
        );
    }
    let mut flags = libc::CLONE_NEWUSER
        | libc::CLONE_NEWNS
        | libc::CLONE_NEWPID
        | libc::CLONE_NEWIPC
        | libc::CLONE_NEWUTS;
    for (name, flag) in [
        ("net", libc::CLONE_NEWNET),
        ("cgroup", libc::CLONE_NEWCGROUP),
    ] {
        if ns_differs(r.pid, name) {
            flags |= flag;
        }
    }
    namespace::join(fd.as_fd(), flags)?;
    drop(fd);
    let old_mask = init::block_signals().map_err(|e| EnterError::Io {
        op: "sigprocmask",
        source: e.into(),
    })?;
    // SAFETY: single-threaded process (the launcher starts no threads).
    match unsafe { nix::unistd::fork() } {
        Err(e) => Err(EnterError::Io {
            op: "fork",
            source: e.into(),
        }),
        Ok(nix::unistd::ForkResult::Child) => {
            crate::launch::exec_joined(&filters, argv, &r.env, Path::new(&r.home), &old_mask)
        }
        Ok(nix::unistd::ForkResult::Parent { child }) => Ok(init::supervise(
            Pid::from_raw(child.as_raw()),
            Reap::MainOnly,
        )),
    }
}
