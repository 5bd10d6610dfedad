//! The permission store as its clients see it: proxies for
//! `org.freedesktop.impl.portal.PermissionStore` and our
//! `org.porthole.PermissionStore1`, and the wire types both sides share.
//!
//! This crate holds no store and links no SQLite: `permctl`, the document
//! store and the portals talk to the service through it, and the service
//! encodes its replies with the same types, so the two sides cannot drift.

pub mod history;
pub mod listing;
pub mod names;
pub mod proxy;

pub use history::{HistoryFilter, HistoryRecord, Limit};
pub use listing::{AppGrant, GrantEntry, ListEntry, TableCount};
pub use names::{BUS_NAME, INTERFACE, OBJECT_PATH, PORTHOLE_INTERFACE};
pub use proxy::{ChangedArgs, ChangedStream, PermissionStoreProxy, PortholeStoreProxy};
