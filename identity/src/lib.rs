//! Who is calling.
//!
//! Every Porthole service needs the same three answers: is this string a valid
//! app id, what does an instance-info keyfile (`/.flatpak-info`) say, and which
//! app sits behind a D-Bus sender. They live here once so that the launcher that
//! writes the keyfile and the services that read it can never disagree. So
//! does a fourth, for the portals that take files: which file a caller's fd
//! names and whether the caller showed it may read and write it
//! ([`fd_path`]).
//!
//! The lookup from a D-Bus sender (`CallerLookup`, feature `dbus`) needs
//! zbus and tokio; the launcher, which only checks app ids and writes and
//! reads keyfiles, builds without that feature and so without either.

pub mod app_id;
pub mod caller;
pub mod fd_path;
#[doc(hidden)]
pub mod fuzz;
pub mod keyfile;

pub use app_id::{AppId, AppIdError};
#[cfg(feature = "dbus")]
pub use caller::CallerLookup;
pub use caller::{AppInfo, CallerError, identify_pid};
pub use fd_path::{FdError, FdPath};
pub use keyfile::{KeyFile, KeyFileError};
