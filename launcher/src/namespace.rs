//! Namespaces: the `clone(2)` that creates them all at once, the 1:1 id maps,
//! and the loopback interface of a new network namespace.

use std::os::fd::{FromRawFd, OwnedFd};

/// Errors while creating or entering namespaces.
#[derive(Debug, thiserror::Error)]
pub enum NamespaceError {
    #[error("clone({flags}): {source}")]
    Clone {
        flags: String,
        #[source]
        source: std::io::Error,
    },
    #[error("write {path}: {source}")]
    IdMap {
        path: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("bring up lo: {0}")]
    Loopback(#[source] std::io::Error),
    #[error("{op}: {source}")]
    Join {
        op: &'static str,
        #[source]
        source: std::io::Error,
    },
}

/// The namespaces of a sandbox.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Namespaces {
    pub network: bool,
}

impl Namespaces {
    /// `clone(2)` flags: user, mount, pid, ipc, uts, and net unless shared.
    /// The cgroup namespace is entered later, after the host side has put us
    /// into the instance's cgroup (its root is fixed at creation).
    pub fn clone_flags(&self) -> libc::c_int {
        let mut f = libc::CLONE_NEWUSER
            | libc::CLONE_NEWNS
            | libc::CLONE_NEWPID
            | libc::CLONE_NEWIPC
            | libc::CLONE_NEWUTS;
        if self.network {
            f |= libc::CLONE_NEWNET;
        }
        f
    }
}

/// Result of [`fork_into`].
#[derive(Debug)]
pub enum Forked {
    Parent { child: libc::pid_t },
    Child,
}

/// `clone(flags|SIGCHLD)` with fork semantics (no new stack: the child runs
/// on a copy of ours). Raw syscall because glibc's `clone()` wrapper needs a
/// separate stack and function; like fork, it is only sound while the
/// process has a single thread, which the launcher guarantees (it never
/// starts threads).
pub fn fork_into(flags: libc::c_int) -> Result<Forked, NamespaceError> {
    // SAFETY: fork-like clone of a single-threaded process: the child gets a
    // copy-on-write copy of the whole address space including this stack, so
    // returning into Rust code in the child is as sound as after fork(2). The
    // pointer arguments are null (no tid writes, no TLS change).
    let rc = unsafe {
        libc::syscall(
            libc::SYS_clone,
            (flags | libc::SIGCHLD) as libc::c_ulong,
            0usize,
            0usize,
            0usize,
            0usize,
        )
    };
    match rc {
        -1 => Err(NamespaceError::Clone {
            flags: format!("{flags:#x}"),
            source: std::io::Error::last_os_error(),
        }),
        0 => Ok(Forked::Child),
        pid => Ok(Forked::Parent {
            child: pid as libc::pid_t,
        }),
    }
}

/// `struct clone_args` (include/uapi/linux/sched.h, CLONE_ARGS_SIZE_VER2);
/// public for the probe, which tries clone3 from inside the sandbox.
#[repr(C)]
#[derive(Default)]
pub struct CloneArgs {
    pub flags: u64,
    pub pidfd: u64,
    pub child_tid: u64,
    pub parent_tid: u64,
    pub exit_signal: u64,
    pub stack: u64,
    pub stack_size: u64,
    pub tls: u64,
    pub set_tid: u64,
    pub set_tid_size: u64,
    pub cgroup: u64,
}

const CLONE_INTO_CGROUP: u64 = 0x2_0000_0000;

/// Like [`fork_into`], but the child is born in the cgroup `cgroup` (a v2
/// directory fd): `clone3(CLONE_INTO_CGROUP)`, Linux 5.7. Callers fall back
/// to [`fork_into`] on any error (older kernel, v1-only host, EBUSY...).
pub fn fork_into_cgroup(
    flags: libc::c_int,
    cgroup: std::os::fd::BorrowedFd<'_>,
) -> Result<Forked, NamespaceError> {
    use std::os::fd::AsRawFd;
    let args = CloneArgs {
        flags: flags as u32 as u64 | CLONE_INTO_CGROUP,
        exit_signal: libc::SIGCHLD as u64,
        cgroup: cgroup.as_raw_fd() as u64,
        ..Default::default()
    };
    // SAFETY: as for `fork_into`: a fork-like clone (stack 0: the child runs
    // on a copy-on-write copy of this stack) of a single-threaded process.
    // `args` is a fully initialised clone_args whose size we pass; the
    // kernel reads it during the call only.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_clone3,
            &args as *const CloneArgs,
            std::mem::size_of::<CloneArgs>(),
        )
    };
    match rc {
        -1 => Err(NamespaceError::Clone {
            flags: format!("{flags:#x}|CLONE_INTO_CGROUP"),
            source: std::io::Error::last_os_error(),
        }),
        0 => Ok(Forked::Child),
        pid => Ok(Forked::Parent {
            child: pid as libc::pid_t,
        }),
    }
}

/// Maps `uid` and `gid` to themselves in our new user namespace. An
/// unprivileged process may map exactly its own ids, and only after
/// denying setgroups(2) (user_namespaces(7), CVE-2014-8989).
pub fn map_ids_1to1(uid: u32, gid: u32) -> Result<(), NamespaceError> {
    let w = |path: &'static str, data: String| {
        std::fs::write(path, data).map_err(|source| NamespaceError::IdMap { path, source })
    };
    w("/proc/self/setgroups", "deny".into())?;
    w("/proc/self/uid_map", format!("{uid} {uid} 1\n"))?;
    w("/proc/self/gid_map", format!("{gid} {gid} 1\n"))?;
    Ok(())
}

/// Sets IFF_UP on `lo` (a new network namespace starts with it down).
pub fn loopback_up() -> Result<(), NamespaceError> {
    // SAFETY: plain socket(2) call; the fd is owned right after.
    let s = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if s < 0 {
        return Err(NamespaceError::Loopback(std::io::Error::last_os_error()));
    }
    // SAFETY: socket(2) just returned this fd.
    let sock = unsafe { OwnedFd::from_raw_fd(s) };
    // SAFETY: ifreq is plain old data; all-zero is a valid value.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (dst, src) in req.ifr_name.iter_mut().zip(b"lo\0") {
        *dst = *src as libc::c_char;
    }
    use std::os::fd::AsRawFd;
    // SAFETY: SIOCGIFFLAGS reads ifr_name and writes ifr_flags of `req`,
    // which is a valid, exclusively borrowed ifreq.
    if unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCGIFFLAGS, &mut req) } < 0 {
        return Err(NamespaceError::Loopback(std::io::Error::last_os_error()));
    }
    // SAFETY: the union member ifru_flags is the one SIOCGIFFLAGS filled.
    unsafe {
        req.ifr_ifru.ifru_flags |= libc::IFF_UP as libc::c_short;
    }
    // SAFETY: SIOCSIFFLAGS only reads `req`.
    if unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCSIFFLAGS, &req) } < 0 {
        return Err(NamespaceError::Loopback(std::io::Error::last_os_error()));
    }
    Ok(())
}

/// `setns(pidfd, flags)`: joins several namespaces of a process at once
/// (Linux 5.8), atomically, with the user namespace first.
pub fn join(pidfd: std::os::fd::BorrowedFd<'_>, flags: libc::c_int) -> Result<(), NamespaceError> {
    use std::os::fd::AsRawFd;
    // SAFETY: setns on a live pidfd; no memory is passed.
    if unsafe { libc::setns(pidfd.as_raw_fd(), flags) } < 0 {
        return Err(NamespaceError::Join {
            op: "setns(pidfd)",
            source: std::io::Error::last_os_error(),
        });
    }
    Ok(())
}

/// `unshare(CLONE_NEWCGROUP)`: the current cgroup becomes this namespace's root.
pub fn unshare_cgroup() -> Result<(), NamespaceError> {
    nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWCGROUP).map_err(|e| NamespaceError::Join {
        op: "unshare(CLONE_NEWCGROUP)",
        source: e.into(),
    })
}
