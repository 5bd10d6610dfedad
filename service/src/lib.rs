//! What every Porthole daemon shares, so that each service is only its own
//! interfaces: the life on the bus ([`lifecycle`]), logging ([`logging`]),
//! who is calling as a type ([`caller`]), the portal error names
//! ([`error`]), GDBus-style argument checking ([`strict`]) and the check of
//! a live object against upstream's interface XML ([`conformance`]).

pub mod caller;
pub mod conformance;
pub mod error;
pub mod lifecycle;
pub mod logging;
pub mod strict;

pub use caller::{Caller, Callers, PendingCaller};
pub use error::PortalError;
pub use lifecycle::{CommonArgs, Daemon, Ended, LifecycleError, block_on};
pub use strict::Strict;
