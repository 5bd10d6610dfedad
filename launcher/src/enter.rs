//! Acting on a running instance: `porthole enter` joins its namespaces (one
//! `setns` on a pidfd) and execs with the same last steps as the app;
//! `porthole kill` signals its pid 1. Both go through a pidfd checked against
//! the recorded start time, so a reused pid is never hit.

use std::ffi::OsString;
use std::os::fd::{AsFd, OwnedFd};
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
    #[error("join the instance's cgroup {path}: {source}")]
    Cgroup {
        path: String,
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
    let fd = crate::sys::pidfd::open(r.pid).map_err(|_| EnterError::Gone(r.instance.clone()))?;
    // Checked after opening: from here on the pidfd pins the process, so if
    // the start time still matches, the pidfd is ours.
    if !instance::is_alive(r) {
        return Err(EnterError::Gone(r.instance.clone()));
    }
    Ok(fd)
}

/// The parent pid in /proc/PID/stat.
fn parent_of(pid: i32) -> Option<i32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &stat[stat.rfind(')')? + 2..];
    rest.split_whitespace().nth(1)?.parse().ok()
}

/// Children of `pid` (host pids): /proc/PID/task/PID/children, or a scan
/// of /proc when the kernel lacks CONFIG_PROC_CHILDREN.
fn children_of(pid: i32) -> Vec<i32> {
    if let Ok(s) = std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children")) {
        return s
            .split_whitespace()
            .filter_map(|p| p.parse().ok())
            .collect();
    }
    let mut out: Vec<i32> = std::fs::read_dir("/proc")
        .map(|rd| {
            rd.flatten()
                .filter_map(|e| e.file_name().to_str()?.parse().ok())
                .filter(|&c| parent_of(c) == Some(pid))
                .collect()
        })
        .unwrap_or_default();
    out.sort_unstable();
    out
}

/// A pidfd for a process whose namespaces `enter` joins: a child of the
/// instance's pid 1 (normally the app). Pid 1 itself is not dumpable (the
/// app must not reach its memory), so the kernel refuses setns on it to an
/// unprivileged caller (setns(2) needs ptrace read access to the target);
/// its children share all its namespaces, and the sandbox's filter keeps
/// them from making new ones.
fn join_target(r: &Record, init: &OwnedFd) -> Result<(i32, OwnedFd), EnterError> {
    let _ = init; // held open: pid 1 cannot be reused while we look
    for child in children_of(r.pid) {
        let Ok(fd) = crate::sys::pidfd::open(child) else {
            continue;
        };
        // Checked after opening: the pidfd pins the child, and pid 1 is
        // pinned by `init`, so a child of it now is the process we hold.
        if parent_of(child) == Some(r.pid) && instance::is_alive(r) {
            return Ok((child, fd));
        }
    }
    Err(EnterError::Gone(r.instance.clone()))
}

/// Sends `sig` to the instance's pid 1 (SIGKILL ends the whole sandbox).
pub fn signal(r: &Record, sig: Signal) -> Result<(), EnterError> {
    let fd = pidfd(r)?;
    crate::sys::pidfd::send_signal(fd.as_fd(), sig as libc::c_int).map_err(|source| {
        EnterError::Io {
            op: "pidfd_send_signal",
            source,
        }
    })?;
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

/// Whether `pid` is in another `name` namespace than we are. Fails closed:
/// an error (the target not dumpable at this instant: the stat needs
/// ptrace read access, like setns) is returned, never read as "the same"
/// (which would leave an entered command in the host's network namespace).
fn ns_differs(pid: i32, name: &str) -> std::io::Result<bool> {
    use std::os::unix::fs::MetadataExt;
    let a = std::fs::metadata(format!("/proc/self/ns/{name}"))?;
    let b = std::fs::metadata(format!("/proc/{pid}/ns/{name}"))?;
    Ok(a.ino() != b.ino() || a.dev() != b.dev())
}

/// Runs `argv` inside the instance; returns its exit code.
pub fn enter(r: &Record, argv: &[OsString]) -> Result<i32, EnterError> {
    // The instance's own filter: an entered debugger of a `devel` instance
    // may ptrace, one of a default instance may not. Names this launcher
    // does not know (a newer record) add nothing.
    let mut features = crate::seccomp::Features::default();
    for name in &r.features {
        let _ = crate::permissions::parse_allow(name, &mut features);
    }
    let filters = Filters::builtin(features);
    let init_fd = pidfd(r)?;
    // Join the instance's cgroup(s) first, while the host's /sys is visible.
    // A command that cannot join would run outside the instance's limits:
    // refuse instead.
    for cg in &r.cgroups {
        join_cgroup(Path::new(cg)).map_err(|source| EnterError::Cgroup {
            path: cg.clone(),
            source,
        })?;
    }
    // Between pid 1's fork and the app's exec, the app's process inherits
    // pid 1's "not dumpable", and setns needs ptrace read access to its
    // target: an enter right after start-up gets EPERM for a moment (seen
    // under load in CI). Retrying with a fresh target rides that out; a
    // lasting EPERM is reported.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(2);
    let retry = |e: &std::io::Error| {
        matches!(e.raw_os_error(), Some(libc::EPERM | libc::EACCES))
            && std::time::Instant::now() < deadline
    };
    loop {
        let (target, fd) = join_target(r, &init_fd)?;
        let mut flags = libc::CLONE_NEWUSER
            | libc::CLONE_NEWNS
            | libc::CLONE_NEWPID
            | libc::CLONE_NEWIPC
            | libc::CLONE_NEWUTS;
        let mut probed = Ok(());
        for (name, flag) in [
            ("net", libc::CLONE_NEWNET),
            ("cgroup", libc::CLONE_NEWCGROUP),
        ] {
            match ns_differs(target, name) {
                Ok(true) => flags |= flag,
                Ok(false) => {}
                Err(e) => probed = Err(e),
            }
        }
        let joined = probed.and_then(|()| {
            namespace::join(fd.as_fd(), flags).map_err(|e| match e {
                namespace::NamespaceError::Join { source, .. } => source,
                other => std::io::Error::other(other.to_string()),
            })
        });
        match joined {
            Ok(()) => break,
            Err(e) if retry(&e) => std::thread::sleep(std::time::Duration::from_millis(5)),
            Err(source) => {
                return Err(EnterError::Io {
                    op: "join the instance's namespaces",
                    source,
                });
            }
        }
    }
    drop(init_fd);
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

/// Moves us into the cgroup `dir`: its existing `cgroup.procs` only
/// (O_NOFOLLOW, no O_CREAT, no O_TRUNC), and only on a cgroup file system,
/// since `dir` comes from an instance record on disk.
fn join_cgroup(dir: &Path) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(dir.join("cgroup.procs"))?;
    let fs = nix::sys::statfs::fstatfs(&f)?;
    let magic = fs.filesystem_type();
    if magic != nix::sys::statfs::CGROUP2_SUPER_MAGIC
        && magic != nix::sys::statfs::CGROUP_SUPER_MAGIC
    {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            "not a cgroup file system",
        ));
    }
    f.write_all(std::process::id().to_string().as_bytes())
}
