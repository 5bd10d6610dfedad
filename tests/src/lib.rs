//! The test harness: a private `dbus-daemon` per test and our services (or
//! the upstream anchors) on it, all stopped by PID when the test ends
//! ([`bus`], feature `bus`, on by default); our built binaries and commands
//! run with a hard time-out ([`process`]); and the one rule for a test that
//! cannot run its real parts here ([`skip`]); a FUSE file that never
//! answers a read ([`stuck_fuse`], feature `bus`); the options and
//! request handles of portal calls ([`portal`], feature `bus`); the
//! settings and medians of the benchmarks ([`bench`]).
//!
//! The launcher's tests use this crate without the `bus` feature, so that
//! the launcher's dependency tree holds no zbus or tokio.

pub mod bench;
#[cfg(feature = "bus")]
pub mod bus;
#[cfg(feature = "bus")]
pub mod portal;
pub mod process;
pub mod skip;
#[cfg(feature = "bus")]
pub mod stuck_fuse;

#[cfg(feature = "bus")]
pub use bus::{Bus, ExampleIface, START_TIMEOUT, Service, call_error_name, serve_example};
pub use process::{bin, bin_dir, example, pid_alive, run_with_timeout, signal_and_wait};
pub use skip::{anchor_present, running_as_root, skipped, under_ci};
