//! `porthole-prompt`: our dialog backend. It owns
//! `org.freedesktop.impl.portal.desktop.porthole` and serves the
//! `org.freedesktop.impl.portal` FileChooser, AppChooser ([`app_chooser`]) and
//! Access interfaces at
//! `/org/freedesktop/portal/desktop`, found by the frontend through
//! `data/porthole.portal` like any backend.
//!
//! Each dialog is answered from a script ([`script`], scripted mode) or by
//! the person at the prompt's terminal ([`terminal`], terminal mode), and
//! recorded ([`record`]); the D-Bus side is [`dialog`]. It also serves `org.freedesktop.impl.portal.Settings`
//! (appearance) from a key file ([`settings`]).

pub mod app_chooser;
pub mod dialog;
pub mod in_order;
pub mod record;
pub mod script;
pub mod settings;
pub mod terminal;

pub use dialog::{BUS_NAME, Dialogs, OBJECT_PATH};
pub use record::Record;
pub use script::{Script, ScriptError};
