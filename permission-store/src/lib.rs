//! The permission store: what the user approved, per table, id and app.
//!
//! The data model is xdg-permission-store's (table -> id -> {app ->
//! [permission]} plus one data value per id) kept in SQLite, so a change is a
//! row update rather than a rewrite of the whole table. One writer task owns
//! the only write connection and commits queued writes together; reads go
//! through a pool of read-only connections that never wait for it (WAL).
//!
//! `gvdb_import` and `gvdb_export` read and write xdg-permission-store's
//! GVDB files, so grants move both ways and upstream's document portal can
//! read our documents table.
//!
//! `service` puts the store on D-Bus; `permctl` uses the same [`Store`] when
//! no service runs. Clients of the service use `porthole-permission-store-client`,
//! which holds the proxies and the wire types without linking SQLite.

mod cache;
pub mod data;
pub mod error;
pub mod gvdb_export;
pub mod gvdb_import;
pub mod gvdb_table;
pub mod model;
pub mod open;
mod overlay;
pub mod service;
pub mod store;
mod writer;

pub use data::Data;
pub use error::StoreError;
pub use model::{Change, Entry, Grant, validate_table};
pub use open::{OpenError, default_db_path, moved_aside};
pub use store::Store;
pub use writer::Author;
