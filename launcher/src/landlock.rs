//! Landlock: a second layer under the mount plan, applied by pid 1 with the
//! rest of the lock-down and inherited by the app. Read and execute below
//! `/`; writing only below the directories the sandbox is meant to write
//! (see [`restrict`]); from ABI 6 on, abstract unix sockets and signals are
//! scoped to the sandbox, so with `--share=network` the app still cannot
//! reach a host abstract socket such as `@/tmp/.X11-unix/X0`.
//! Kernels without Landlock (ENOSYS, or EOPNOTSUPP when disabled at boot)
//! are skipped quietly (landlock(7)).

use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};

/// Errors while building or applying the ruleset.
#[derive(Debug, thiserror::Error)]
pub enum LandlockError {
    #[error("{op}: {source}")]
    Syscall {
        op: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("open {path} for a Landlock rule: {source}")]
    Open {
        path: PathBuf,
        #[source]
        source: nix::Error,
    },
}

// <linux/landlock.h>
const CREATE_RULESET_VERSION: u32 = 1 << 0;
const RULE_PATH_BENEATH: libc::c_int = 1;

const FS_EXECUTE: u64 = 1 << 0;
const FS_WRITE_FILE: u64 = 1 << 1;
const FS_READ_FILE: u64 = 1 << 2;
const FS_READ_DIR: u64 = 1 << 3;
/// REMOVE_DIR up to MAKE_SYM: bits 4 to 12 (ABI 1).
const FS_ABI1_ALL: u64 = (1 << 13) - 1;
/// ABI 2: LANDLOCK_ACCESS_FS_REFER.
const FS_REFER: u64 = 1 << 13;
/// ABI 3: LANDLOCK_ACCESS_FS_TRUNCATE.
const FS_TRUNCATE: u64 = 1 << 14;
/// ABI 5: LANDLOCK_ACCESS_FS_IOCTL_DEV.
const FS_IOCTL_DEV: u64 = 1 << 15;

/// ABI 6: LANDLOCK_SCOPE_ABSTRACT_UNIX_SOCKET, LANDLOCK_SCOPE_SIGNAL.
const SCOPE_ABSTRACT_UNIX_SOCKET: u64 = 1 << 0;
const SCOPE_SIGNAL: u64 = 1 << 1;

#[repr(C)]
struct RulesetAttr {
    handled_access_fs: u64,
    handled_access_net: u64,
    scoped: u64,
}

/// `struct landlock_path_beneath_attr` is packed in the kernel's header.
#[repr(C, packed)]
struct PathBeneathAttr {
    allowed_access: u64,
    parent_fd: i32,
}

fn last(op: &'static str) -> LandlockError {
    LandlockError::Syscall {
        op,
        source: std::io::Error::last_os_error(),
    }
}

/// The kernel's Landlock ABI version; None when it has no Landlock.
fn abi() -> Option<u32> {
    // SAFETY: with a null attribute, size 0 and the VERSION flag the call
    // reads no memory and only returns the ABI version.
    let v = unsafe {
        libc::syscall(
            libc::SYS_landlock_create_ruleset,
            std::ptr::null::<RulesetAttr>(),
            0usize,
            CREATE_RULESET_VERSION,
        )
    };
    (v > 0).then_some(v as u32)
}

/// Every filesystem right the kernel's ABI knows.
fn fs_rights(abi: u32) -> u64 {
    let mut all = FS_ABI1_ALL;
    if abi >= 2 {
        all |= FS_REFER;
    }
    if abi >= 3 {
        all |= FS_TRUNCATE;
    }
    if abi >= 5 {
        all |= FS_IOCTL_DEV;
    }
    all
}

/// Rights that apply to a file (the others only make sense on directories
/// and are refused with EINVAL on a file).
const FILE_RIGHTS: u64 = FS_EXECUTE | FS_WRITE_FILE | FS_READ_FILE | FS_TRUNCATE | FS_IOCTL_DEV;

fn add_fd_rule(ruleset: &OwnedFd, fd: i32, allowed: u64) -> std::io::Result<()> {
    let attr = PathBeneathAttr {
        allowed_access: allowed,
        parent_fd: fd,
    };
    // SAFETY: `attr` is a packed landlock_path_beneath_attr that outlives
    // the call; the kernel only reads it. Both fds are live.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_landlock_add_rule,
            ruleset.as_raw_fd(),
            RULE_PATH_BENEATH,
            &attr as *const PathBeneathAttr,
            0u32,
        )
    };
    if rc != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

fn add_rule(ruleset: &OwnedFd, path: &Path, allowed: u64) -> Result<(), LandlockError> {
    let fd = match nix::fcntl::open(
        path,
        nix::fcntl::OFlag::O_PATH | nix::fcntl::OFlag::O_CLOEXEC,
        nix::sys::stat::Mode::empty(),
    ) {
        Ok(fd) => fd,
        // A directory the plan did not create (no /var/tmp, say): nothing
        // to allow there.
        Err(nix::Error::ENOENT) => return Ok(()),
        Err(source) => {
            return Err(LandlockError::Open {
                path: path.to_owned(),
                source,
            });
        }
    };
    let is_dir = nix::sys::stat::fstat(&fd)
        .map(|st| st.st_mode & libc::S_IFMT == libc::S_IFDIR)
        .unwrap_or(false);
    // A --filesystem grant may name a file.
    let allowed = if is_dir {
        allowed
    } else {
        allowed & FILE_RIGHTS
    };
    add_fd_rule(ruleset, fd.as_raw_fd(), allowed).map_err(|source| LandlockError::Syscall {
        op: "landlock_add_rule",
        source,
    })
}

/// Restricts this process (and what it spawns) to: read and execute below
/// `/`, every filesystem right below each of `writable`, and (ABI >= 6) no
/// abstract unix socket or signal beyond the sandbox. Requires
/// no_new_privs. Returns Ok(false) when the kernel has no Landlock.
pub fn restrict(writable: &[PathBuf]) -> Result<bool, LandlockError> {
    let Some(abi) = abi() else {
        return Ok(false);
    };
    let all = fs_rights(abi);
    let attr = RulesetAttr {
        handled_access_fs: all,
        handled_access_net: 0,
        scoped: if abi >= 6 {
            SCOPE_ABSTRACT_UNIX_SOCKET | SCOPE_SIGNAL
        } else {
            0
        },
    };
    // Older kernels know a shorter struct; they accept ours only if the
    // fields they do not know are zero, which `scoped` is below ABI 6.
    // SAFETY: `attr` is a live landlock_ruleset_attr of the size passed.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_landlock_create_ruleset,
            &attr as *const RulesetAttr,
            std::mem::size_of::<RulesetAttr>(),
            0u32,
        )
    };
    if fd < 0 {
        let e = std::io::Error::last_os_error();
        if matches!(e.raw_os_error(), Some(libc::ENOSYS | libc::EOPNOTSUPP)) {
            return Ok(false);
        }
        return Err(LandlockError::Syscall {
            op: "landlock_create_ruleset",
            source: e,
        });
    }
    // SAFETY: the syscall just returned this descriptor; nothing else owns it.
    let ruleset = unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd as i32) };
    add_rule(
        &ruleset,
        Path::new("/"),
        FS_EXECUTE | FS_READ_FILE | FS_READ_DIR,
    )?;
    for p in writable {
        add_rule(&ruleset, p, all)?;
    }
    // stdin, stdout and stderr may be host files or terminals, outside the
    // sandbox's tree: reopening them (`> /dev/stderr`, `cmp /dev/stdin`)
    // must keep working. Pipes and sockets need no rule (Landlock does not
    // mediate them) and are refused here with EBADFD: ignored.
    for fd in 0..=2 {
        let _ = add_fd_rule(&ruleset, fd, all & FILE_RIGHTS & !FS_EXECUTE);
    }
    // SAFETY: landlock_restrict_self takes an fd and flags, no memory.
    if unsafe { libc::syscall(libc::SYS_landlock_restrict_self, ruleset.as_raw_fd(), 0u32) } != 0 {
        return Err(last("landlock_restrict_self"));
    }
    Ok(true)
}
