//! `porthole-portals`: the portal frontend. It owns
//! `org.freedesktop.portal.Desktop` and serves, on
//! `/org/freedesktop/portal/desktop`, the portals a sandboxed app talks to:
//! so far `org.freedesktop.portal.FileChooser`, with upstream's request
//! objects ([`request`]), `org.freedesktop.portal.OpenURI` ([`open_uri`]:
//! handlers from [`mime_apps`] and [`desktop_entry`], changes sent to an
//! open dialog by [`app_monitor`], files checked by
//! [`fd_path`] and [`content_type`]), `org.freedesktop.portal.Settings`
//! ([`settings`]) and `org.freedesktop.portal.NetworkMonitor`
//! ([`network_monitor`]), and our `org.porthole.NetworkAccess1`
//! ([`network_access`]): connections the user approves per destination.
//! Backends are found as upstream finds them ([`config`]); options are filtered as upstream filters them
//! ([`options`]); chosen files reach sandboxed apps through the document
//! store ([`documents`]).

pub mod app_monitor;
pub mod config;
pub mod content_type;
pub mod desktop;
pub mod desktop_entry;
pub mod documents;
pub mod fd_path;
pub mod file_chooser;
pub mod mime_apps;
pub mod network_access;
pub mod network_monitor;
pub mod open_uri;
pub mod options;
pub mod request;
pub mod settings;
pub mod uri;

pub use desktop::{BUS_NAME, OBJECT_PATH};
