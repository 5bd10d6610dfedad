//! The launcher's raw system calls, each wrapped once: the descriptor
//! calls ([`fd`]: `openat2`, `close_range`), the mount API ([`mount`]:
//! `open_tree`, `move_mount`, `mount_setattr`, `fsopen`/`fsconfig`/`fsmount`,
//! `pivot_root`) and process handles ([`pidfd`]: `pidfd_open`,
//! `pidfd_send_signal`). Every other module calls these; none has a copy.
//!
//! Most go through rustix, whose raw syscalls neither allocate nor touch
//! libc's `errno`: they are sound after `fork` in a multi-threaded process
//! (the D-Bus proxy's child), in pid 1 and in the `clone(CLONE_VM)` janitor
//! (which shares our TLS, so it must not write errno). rustix has no
//! `mount_setattr` or `close_range`: those two are small `libc` calls here,
//! each with its safety argument. Paths are `&CStr` so that no wrapper needs
//! to allocate a C string; errors are plain `io::Error` (built from the
//! errno value without allocating) for the caller to put in its own
//! context (the operation and the path, STYLE.md "Errors").
//!
//! Calls that belong to one kernel feature and one stage keep their single
//! wrapper in the module named for that feature: `clone`/`clone3` and
//! `setns` in [`crate::namespace`], `capset` in [`crate::capability`], the
//! `landlock_*` calls in [`crate::landlock`], `seccomp` in
//! [`crate::seccomp`]. The probe (`porthole-probe`) makes raw calls on
//! purpose, with hostile arguments, to see what the filter answers.

pub mod fd;
pub mod mount;
pub mod pidfd;
