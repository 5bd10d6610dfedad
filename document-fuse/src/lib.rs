//! The document store: `org.freedesktop.portal.Documents` and the FUSE file
//! system at `$XDG_RUNTIME_DIR/doc` that shows each app only the files the
//! user gave it.
//!
//! - [`permissions`]: the four document permissions and their strings;
//! - [`document`]: one document as upstream stores it (the permission
//!   store's `documents` table, data `(ayttu)`);
//! - [`table`]: every document, in memory, shared by the D-Bus side and the
//!   FUSE threads (no D-Bus round trip on the read path);
//! - [`backing`]: the table kept in the permission store through its D-Bus
//!   interface (loaded at start, written through, refreshed from `Changed`);
//! - [`fd_path`]: what file a caller's fd names, and whether the caller may
//!   export it (upstream's `xdp_app_info_get_path_for_fd`);
//! - [`portal`]: the D-Bus interface;
//! - [`transfer`]: `org.freedesktop.portal.FileTransfer`, on the same object;
//! - [`fs`]: the FUSE file system, its inodes and its cache invalidation.

pub mod backing;
pub mod document;
pub mod fd_path;
pub mod fs;
pub mod permissions;
pub mod portal;
pub mod table;
pub mod transfer;

pub use document::{DocFlags, Document};
pub use permissions::Perms;
pub use table::{SharedTable, Table};

/// The well-known name the service owns.
pub const BUS_NAME: &str = "org.freedesktop.portal.Documents";
/// Where the Documents interface is served.
pub const OBJECT_PATH: &str = "/org/freedesktop/portal/documents";
/// The permission store's table holding the documents, as upstream names it.
pub const TABLE: &str = "documents";
