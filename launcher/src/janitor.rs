//! Removing the instance's cgroup after `porthole run` has exited.
//!
//! The sandbox's pid 1 reports the app's exit status before its own exit
//! and the teardown of its namespaces (half a millisecond and more), and
//! `porthole run` reports it at once, as bwrap does. The instance's cgroup
//! can only be removed once that teardown is over, so a janitor does it: a
//! child that shares our memory (`clone(CLONE_VM)`: no page tables to copy,
//! some 20 us instead of a fork's 200), waits on a pidfd of pid 1 and
//! removes the directories.
//!
//! Sharing memory with a process that exits under it is sound as long as
//! nothing the janitor uses is freed or unmapped: all it touches is leaked
//! on purpose (its job, its stack), and the kernel keeps the address space
//! for as long as one user is left. It makes only raw, async-signal-safe
//! calls. It also shares our TLS, so errno: it never reads errno (it tells
//! a removed directory by access(2), not by rmdir's error), and it is
//! started after the last of porthole's work whose errors matter, so its
//! writes to errno can only reach drops and exit paths that ignore it.

use std::ffi::CString;
use std::os::fd::{AsRawFd, OwnedFd};

/// What the janitor needs, leaked for its lifetime.
struct Job {
    pidfd: OwnedFd,
    null: Option<OwnedFd>,
    dirs: Vec<CString>,
}

const STACK: usize = 64 * 1024;

/// Starts the janitor for `dirs` once the process behind `pidfd` is gone.
/// Returns false when it could not be started (the caller removes the
/// directories itself).
pub fn remove_when_gone(pidfd: OwnedFd, dirs: Vec<CString>) -> bool {
    let null = std::fs::File::options()
        .read(true)
        .write(true)
        .open("/dev/null")
        .ok()
        .map(OwnedFd::from);
    let job: &'static mut Job = Box::leak(Box::new(Job { pidfd, null, dirs }));
    // Its stack: an anonymous mapping, of which only the page or two the
    // janitor touches become resident (a zeroed heap buffer would count in
    // porthole's peak RSS whole). Never unmapped.
    // SAFETY: a fresh private anonymous mapping; no existing memory named.
    let stack = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            STACK,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_STACK,
            -1,
            0,
        )
    };
    if stack == libc::MAP_FAILED {
        return false;
    }
    // The stack grows down: pass its end (page-aligned, so 16-byte aligned).
    let top = stack as usize + STACK;
    // SAFETY: `janitor` runs on the leaked `stack` with the leaked `job`,
    // both valid for the rest of the process's (and the janitor's) life;
    // CLONE_VM shares the address space, which the kernel keeps while the
    // janitor runs. SIGCHLD as exit signal, so whoever adopts it reaps it.
    let pid = unsafe {
        libc::clone(
            janitor,
            top as *mut libc::c_void,
            libc::CLONE_VM | libc::SIGCHLD,
            job as *mut Job as *mut libc::c_void,
        )
    };
    pid > 0
}

/// The janitor: detaches from the caller's session and stdio, waits for the pidfd to
/// report the exit, removes the directories (retrying while the kernel
/// still counts the exiting processes in them), exits.
extern "C" fn janitor(arg: *mut libc::c_void) -> libc::c_int {
    // SAFETY: `arg` is the leaked Job passed by `remove_when_gone`, never
    // freed and used by this process alone from here on.
    let job = unsafe { &*(arg as *const Job) };
    // Its own session: whoever ends porthole's process group once porthole
    // has exited (a shell's job control, a test harness) must not end the
    // clean-up with it.
    // SAFETY: setsid(2) takes no arguments.
    unsafe { libc::setsid() };
    if let Some(null) = &job.null {
        for target in 0..3 {
            // SAFETY: dup2 onto the standard descriptors, which are ours
            // (CLONE_VM without CLONE_FILES: a copy of the fd table).
            unsafe { libc::dup2(null.as_raw_fd(), target) };
        }
    }
    // Nothing else of ours stays open in it either (a pipe someone reads
    // to EOF, a lock): everything from 3 up but the pidfd.
    // close_range is glibc's wrapper, which writes the shared errno only
    // on failure, and it fails only for first > last, which the range here
    // excludes (see the module notes); nothing to do about a failure anyway.
    let keep = job.pidfd.as_raw_fd() as libc::c_uint;
    if keep > 3 {
        crate::sys::fd::close_range(3, keep - 1).ok();
    }
    crate::sys::fd::close_range(keep + 1, libc::c_uint::MAX).ok();
    // The caller's blocked signals are not ours to keep: a SIGTERM for the
    // janitor ends it.
    // SAFETY: an empty set, built and passed by pointer for the call only.
    unsafe {
        let mut none: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut none);
        libc::sigprocmask(libc::SIG_SETMASK, &none, std::ptr::null_mut());
    }
    let mut pfd = libc::pollfd {
        fd: job.pidfd.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    // Bounded: pid 1 is already exiting when we start; an interrupted or
    // failed poll only moves on to the removal attempts below. No errno is
    // read anywhere here (it is the caller's, see the module notes).
    // SAFETY: poll(2) on one valid pollfd.
    unsafe { libc::poll(&mut pfd, 1, 10_000) };
    for dir in &job.dirs {
        for _ in 0..1000 {
            // SAFETY: rmdir(2) and access(2) with a NUL-terminated path.
            let gone = unsafe {
                libc::rmdir(dir.as_ptr()) == 0 || libc::access(dir.as_ptr(), libc::F_OK) != 0
            };
            if gone {
                break;
            }
            // Still there: the kernel still counts the exiting processes.
            let pause = libc::timespec {
                tv_sec: 0,
                tv_nsec: 1_000_000,
            };
            // SAFETY: nanosleep(2) reads `pause`; no remainder wanted.
            unsafe { libc::nanosleep(&pause, std::ptr::null_mut()) };
        }
    }
    // SAFETY: ends the janitor without running any exit handler.
    unsafe { libc::_exit(0) }
}
