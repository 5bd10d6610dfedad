//! `porthole run`: the stages of a launch, one submodule each.
//!
//! - [`prepare`]: the host side resolves everything (app dir, runtime,
//!   grants, sockets, the mount plan, the environment) without changing
//!   anything, so `--dry-run` can print it.
//! - [`monitor`]: creates the app's data dir, the cgroup and the instance
//!   record, clones into the namespaces and supervises until the end.
//! - [`sandbox`]: pid 1 of the new pid namespace: id maps, the root file
//!   system, loopback, cgroup namespace, lock-down (capabilities,
//!   no_new_privs, seccomp), then spawns the app, which inherits all of it.

mod monitor;
mod prepare;
mod resources;
mod sandbox;

pub use monitor::execute;
pub use prepare::{Prepared, describe, ensure_app_data, prepare};
pub use sandbox::exec_joined;

use std::ffi::{CString, OsString};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use nix::sys::signal::Signal;
use nix::unistd::Pid;
use porthole_identity::AppId;

use crate::bus;
use crate::capability::{self, CapabilityError};
use crate::cgroup::{self, CgroupError, Limits};
use crate::environ::{self, EnvInput};
use crate::exit_code;
use crate::flatpak_info::{self, InfoInput};
use crate::init::{self, Reap};
use crate::instance::{self, InstanceDir, InstanceError, Record};
use crate::namespace::{self, Forked, NamespaceError, Namespaces};
use crate::permissions::{PermissionError, Permissions, Socket};
use crate::plan::{self, Op, PlanError, PlanInput};
use crate::rootfs;
use crate::seccomp::{Filters, SeccompError};
use crate::spawn;
use crate::warning::{Warning, Warnings};
use crate::wayland;

/// A request to run an app, as parsed from the command line.
#[derive(Debug, Clone)]
pub struct RunRequest {
    pub app_id: AppId,
    pub command: Vec<OsString>,
    pub permissions: Permissions,
    pub app_dir: Option<PathBuf>,
    pub runtime: Option<PathBuf>,
    pub limits: Limits,
    pub die_with_parent: bool,
    /// Bind the document store's view of this app at /run/user/UID/doc
    /// (false: `--no-documents-portal`).
    pub documents_portal: bool,
    /// A Flatpak-installed app (`porthole run APP_ID` without a command):
    /// its files, runtime, permissions and identity replace `app_dir`.
    pub installed: Option<Box<crate::flatpak::Installed>>,
}

/// Errors of a launch, each with its exit code.
#[derive(Debug, thiserror::Error)]
pub enum LaunchError {
    #[error("app dir {path}: {reason}")]
    AppDir { path: PathBuf, reason: String },
    #[error("runtime {path}: {reason}")]
    Runtime { path: PathBuf, reason: String },
    #[error("--filesystem={path}: {reason}")]
    Filesystem { path: PathBuf, reason: String },
    #[error(transparent)]
    Permission(#[from] PermissionError),
    #[error(transparent)]
    Plan(#[from] PlanError),
    #[error(transparent)]
    Seccomp(#[from] SeccompError),
    #[error(transparent)]
    Namespace(#[from] NamespaceError),
    #[error(transparent)]
    Instance(#[from] InstanceError),
    #[error(transparent)]
    Cgroup(#[from] CgroupError),
    #[error("app data dir {path}: {reason}")]
    AppData { path: PathBuf, reason: String },
    #[error("{op}: {source}")]
    Io {
        op: &'static str,
        #[source]
        source: std::io::Error,
    },
}

impl LaunchError {
    pub fn exit_code(&self) -> i32 {
        match self {
            LaunchError::AppDir { .. }
            | LaunchError::Runtime { .. }
            | LaunchError::Filesystem { .. } => exit_code::UNREADABLE_PATH,
            LaunchError::Permission(_) | LaunchError::Plan(_) => exit_code::USAGE,
            _ => exit_code::SETUP_FAILED,
        }
    }
}

/// `PORTHOLE_STARTUP_TRACE=1`: microseconds since boot at each start-up
/// stage on stderr (CLOCK_MONOTONIC, comparable across our processes), for
/// finding where launch time goes without strace's distortion.
fn trace_stage(on: bool, stage: &str) {
    if on {
        let mut ts = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        // SAFETY: clock_gettime writes one timespec into `ts`.
        unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
        let t = ts.tv_sec * 1_000_000 + ts.tv_nsec / 1000;
        // One write(2) per line, so that the lines of our processes do not
        // interleave (eprintln! may write a line in pieces).
        let line = format!("porthole-trace {t} {} {stage}\n", std::process::id());
        let _ = nix::unistd::write(std::io::stderr(), line.as_bytes());
    }
}

fn fail(stage: &str, e: impl std::fmt::Display) -> ! {
    eprintln!("porthole: sandbox setup failed: {stage}: {e}");
    // SAFETY: _exit is async-signal-safe and skips atexit handlers and stdio
    // flushing that belong to the parent's copy of the process.
    unsafe { libc::_exit(exit_code::SETUP_FAILED) }
}
