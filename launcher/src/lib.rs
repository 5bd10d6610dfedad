//! The launcher: `porthole run` starts an app in a minimal sandbox, `ps`,
//! `kill` and `enter` act on running instances. Layout and names follow
//! DESIGN.md, "The sandbox (inside view)".
//!
//! Stages of a launch, one module each:
//! [`permissions`] (what was granted) → [`plan`] (mount plan, pure) →
//! [`launch`] (host side, then pid 1) → [`namespace`] → [`rootfs`] (executes
//! the plan with [`mount`]) → [`capability`] + [`seccomp`] → exec, with
//! [`init`] supervising and [`instance`] / [`cgroup`] recording; [`bus`]
//! starts the instance's filtering D-Bus proxy beside the sandbox; [`socks`]
//! serves the sandbox's SOCKS5 endpoint from the monitor. Every raw
//! syscall wrapped for more than one stage lives once in [`sys`].

pub mod bus;
pub mod capability;
pub mod cgroup;
pub mod cleanup;
pub mod documents;
pub mod enter;
pub mod environ;
pub mod exit_code;
pub mod flatpak;
pub mod flatpak_info;
pub mod init;
pub mod instance;
pub mod io_error;
pub mod janitor;
pub mod landlock;
pub mod launch;
pub mod mount;
pub mod namespace;
pub mod permissions;
pub mod plan;
pub mod rootfs;
pub mod seccomp;
pub mod socks;
pub mod spawn;
pub mod sys;
pub mod systemd;
pub mod warning;
pub mod wayland;

pub use launch::{LaunchError, Prepared, RunRequest};
pub use warning::{Warning, Warnings};
