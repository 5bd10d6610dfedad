//! `porthole-dbus-wire`: the one D-Bus framing implementation of the
//! workspace, for the programs that speak D-Bus without zbus: the proxy
//! (whose hot path is header parsing), the launcher's call to the systemd
//! user manager and the probe's attacks. No async runtime and no
//! allocation on the parsing path; `thiserror` is the only dependency, so
//! the launcher, built for size, carries only the few kilobytes it uses.
//!
//! - [`header`]: the fixed header and header fields, both byte orders,
//!   alignment and length limits; building messages.
//! - [`marshal`]: reading body values in place and encoding bodies.
//! - [`auth`]: the SASL EXTERNAL client and the proxy's SASL relay.
//! - [`address`]: bus address lists with `%` escapes.
//! - `fuzz`: entry points for the fuzz targets in `dbus-wire/fuzz`,
//!   smoke-tested with the unit tests.

pub mod address;
pub mod auth;
#[doc(hidden)]
pub mod fuzz;
pub mod header;
pub mod marshal;

pub use address::{Address, AddressError, UnixTarget};
pub use header::{
    Builder, ERROR, FLAG_NO_AUTO_START, FLAG_NO_REPLY_EXPECTED, Header, MAX_MESSAGE_LEN,
    METHOD_CALL, METHOD_RETURN, SIGNAL, WireError, body_offset, message_len, rewrite_strv_body,
};
pub use marshal::{Arg, Encoder, Endian, Reader};
