//! `porthole-dbus-proxy`: a filtering D-Bus proxy that accepts
//! xdg-dbus-proxy's command line and policy, so either can stand in for the
//! other.
//!
//! - [`cli`]: the order-dependent command line (`ADDRESS PATH [OPTION...]`).
//! - [`policy`]: names, levels (see < talk < own) and call/broadcast rules.
//! - [`busy_poll`]: a bounded spin before the event loop sleeps, only with
//!   `--busy-poll`.
//! - [`match_rule`]: AddMatch rules read as dbus-daemon reads them.
//! - [`filter`]: the per-client decisions.
//! - [`socket`]: recvmsg/sendmsg with fds, and the receive buffer.
//! - [`proxy`]: listeners and per-client sessions on tokio.
//!
//! Message framing and header parsing (the hot path), the SASL relay and
//! bus addresses are the workspace's `porthole-dbus-wire` crate, shared
//! with the launcher and the probe.

pub mod busy_poll;
pub mod cli;
pub mod filter;
#[doc(hidden)]
pub mod fuzz;
pub mod match_rule;
pub mod policy;
pub mod proxy;
pub mod socket;

pub use cli::{Args, ProxySpec};
pub use filter::ClientFilter;
pub use policy::{Level, Policy};
pub use proxy::Listener;
