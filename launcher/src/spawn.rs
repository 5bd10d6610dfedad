//! Starting the app from pid 1 with `posix_spawn(3)`: glibc implements it
//! with `clone(CLONE_VM|CLONE_VFORK)`, so the app's process never copies our
//! page tables and takes no copy-on-write faults before `execve`; that is a
//! measurable part of a launch. Session, signal mask and working directory
//! are spawn attributes. (glibc tries clone3 first; the sandbox's filter
//! answers ENOSYS and glibc falls back to clone, as intended.)

use std::ffi::CString;
use std::mem::MaybeUninit;

use nix::sys::signal::SigSet;

/// Spawn failure: the errno of the failed `execve` (or attribute step).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SpawnError(pub i32);

/// Attributes and file actions, destroyed on drop.
struct Spawn {
    attr: libc::posix_spawnattr_t,
    actions: libc::posix_spawn_file_actions_t,
}

impl Drop for Spawn {
    fn drop(&mut self) {
        // SAFETY: both objects were initialised in `Spawn::new` and are
        // destroyed exactly once, here.
        unsafe {
            libc::posix_spawnattr_destroy(&mut self.attr);
            libc::posix_spawn_file_actions_destroy(&mut self.actions);
        }
    }
}

impl Spawn {
    fn new(mask: &SigSet, cwd: &CString) -> Result<Self, SpawnError> {
        let mut attr = MaybeUninit::<libc::posix_spawnattr_t>::uninit();
        let mut actions = MaybeUninit::<libc::posix_spawn_file_actions_t>::uninit();
        // SAFETY: the init functions initialise the objects they are given;
        // we only assume them initialised after both returned 0.
        let s = unsafe {
            if libc::posix_spawnattr_init(attr.as_mut_ptr()) != 0 {
                return Err(SpawnError(libc::ENOMEM));
            }
            if libc::posix_spawn_file_actions_init(actions.as_mut_ptr()) != 0 {
                libc::posix_spawnattr_destroy(attr.as_mut_ptr());
                return Err(SpawnError(libc::ENOMEM));
            }
            Spawn {
                attr: attr.assume_init(),
                actions: actions.assume_init(),
            }
        };
        let mut s = s;
        // SETSIGDEF: our process ignores SIGPIPE (errors instead of death on
        // a closed pipe); an ignored signal survives exec, so without this
        // the app would start with SIGPIPE ignored, unlike under bwrap.
        let flags = libc::POSIX_SPAWN_SETSID
            | libc::POSIX_SPAWN_SETSIGMASK as libc::c_short
            | libc::POSIX_SPAWN_SETSIGDEF as libc::c_short;
        let mut default_signals = SigSet::empty();
        default_signals.add(nix::sys::signal::Signal::SIGPIPE);
        // SAFETY: `s.attr` is initialised; `mask` points at a valid sigset_t
        // that the call copies; `cwd` is a NUL-terminated string that the
        // file action copies.
        let rc = unsafe {
            let mut rc = libc::posix_spawnattr_setflags(&mut s.attr, flags);
            if rc == 0 {
                rc = libc::posix_spawnattr_setsigmask(&mut s.attr, mask.as_ref());
            }
            if rc == 0 {
                rc = libc::posix_spawnattr_setsigdefault(&mut s.attr, default_signals.as_ref());
            }
            if rc == 0 {
                rc = libc::posix_spawn_file_actions_addchdir_np(&mut s.actions, cwd.as_ptr());
            }
            // Nothing but stdin, stdout and stderr reaches the app, even a
            // descriptor someone forgot to open with O_CLOEXEC.
            if rc == 0 {
                rc = libc::posix_spawn_file_actions_addclosefrom_np(&mut s.actions, 3);
            }
            rc
        };
        if rc != 0 {
            return Err(SpawnError(rc));
        }
        Ok(s)
    }
}

/// Starts the first of `paths` that exists with `argv` and `envp` in a new
/// session, with signal mask `mask`, in directory `cwd`.
pub fn spawn(
    paths: &[CString],
    argv: &[CString],
    envp: &[CString],
    mask: &SigSet,
    cwd: &CString,
) -> Result<libc::pid_t, SpawnError> {
    let s = Spawn::new(mask, cwd)?;
    let mut argv_p: Vec<*mut libc::c_char> = argv.iter().map(|a| a.as_ptr() as *mut _).collect();
    argv_p.push(std::ptr::null_mut());
    let mut envp_p: Vec<*mut libc::c_char> = envp.iter().map(|a| a.as_ptr() as *mut _).collect();
    envp_p.push(std::ptr::null_mut());
    let mut last = libc::ENOENT;
    for path in paths {
        let mut pid: libc::pid_t = 0;
        // SAFETY: all pointers are valid for the call: the path and every
        // argv/envp entry are NUL-terminated strings owned by the caller,
        // the arrays are null-terminated, attr and actions are initialised.
        // posix_spawn does not keep any of them after it returns.
        let rc = unsafe {
            libc::posix_spawn(
                &mut pid,
                path.as_ptr(),
                &s.actions,
                &s.attr,
                argv_p.as_ptr(),
                envp_p.as_ptr(),
            )
        };
        match rc {
            0 => return Ok(pid),
            libc::ENOENT => continue,
            e => last = e,
        }
    }
    Err(SpawnError(last))
}
