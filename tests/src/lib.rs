//! The test harness: a private `dbus-daemon` per test and our services (or
//! the upstream anchors) on it, all stopped by PID when the test ends
//! ([`bus`], feature `bus`, on by default); our built binaries and commands
//! run with a hard time-out ([`process`]); and the one rule for a test that
//! cannot run its real parts here ([`skip`]); a FUSE file that never
//! answers a read ([`stuck_fuse`], feature `bus`).
//!
//! The launcher's tests use this crate without the `bus` feature, so that
//! the launcher's dependency tree holds no zbus or tokio.

#[cfg(feature = "bus")]
pub mod bus;
pub mod process;
pub mod skip;
#[cfg(feature = "bus")]
pub mod stuck_fuse;

#[cfg(feature = "bus")]
pub use bus::{Bus, ExampleIface, START_TIMEOUT, Service, call_error_name, serve_example};
pub use process::{bin, bin_dir, example, pid_alive, run_with_timeout, signal_and_wait};
pub use skip::{anchor_present, running_as_root, skipped, under_ci};
