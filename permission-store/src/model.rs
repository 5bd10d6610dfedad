//! The values the store deals in.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::data::Data;
use crate::error::StoreError;

/// One app's permissions on one id.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Grant {
    pub permissions: Vec<String>,
    /// Unix seconds after which the grant is gone; `None`: never.
    pub expires: Option<i64>,
}

impl Grant {
    /// From the D-Bus form of our interface, where an expiry of 0 means
    /// never.
    pub fn from_wire(permissions: Vec<String>, expires: i64) -> Self {
        Self {
            permissions,
            expires: (expires != 0).then_some(expires),
        }
    }
}

/// Everything stored under one id. Apps are ordered by id, as upstream
/// returns them.
#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    pub data: Data,
    pub apps: BTreeMap<String, Grant>,
}

impl Entry {
    pub fn new(data: Data) -> Self {
        Self {
            data,
            apps: BTreeMap::new(),
        }
    }

    /// The permissions `app` holds here (none without a grant).
    pub fn permissions_of(&self, app: &str) -> Vec<String> {
        self.apps
            .get(app)
            .map(|g| g.permissions.clone())
            .unwrap_or_default()
    }

    /// The `a{sas}` view of the grants.
    pub fn permissions(&self) -> BTreeMap<String, Vec<String>> {
        self.apps
            .iter()
            .map(|(app, g)| (app.clone(), g.permissions.clone()))
            .collect()
    }
}

/// What one committed write did to one id; the service turns it into the
/// `Changed` signal.
#[derive(Debug, Clone, PartialEq)]
pub struct Change {
    pub table: String,
    pub id: String,
    pub deleted: bool,
    /// The entry after the change; for a deletion the last entry with its
    /// grants cleared, as upstream signals it.
    pub entry: Entry,
}

/// Longest table name we accept: a file name's limit, as upstream keeps one
/// file per table.
pub const MAX_TABLE_LEN: usize = 255;

/// Table names: upstream uses them as file names unchecked. We accept exactly
/// the names that work as a file name there, so the same valid calls behave
/// the same, and refuse the rest with InvalidArgument instead of a file error.
pub fn validate_table(name: &str) -> Result<(), StoreError> {
    let bad = |reason| {
        Err(StoreError::BadTable {
            name: name.chars().take(64).collect(),
            reason,
        })
    };
    if name.is_empty() {
        return bad("it is empty");
    }
    if name.len() > MAX_TABLE_LEN {
        return bad("it is longer than 255 bytes");
    }
    if name.contains('/') {
        return bad("it contains '/'");
    }
    if name == "." || name == ".." {
        return bad("it is '.' or '..'");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_names() {
        for ok in ["devices", "notifications", "a b", "x.y", "ünïcode"] {
            assert!(validate_table(ok).is_ok(), "{ok}");
        }
        for bad in ["", ".", "..", "a/b", &"x".repeat(256)] {
            assert!(
                matches!(validate_table(bad), Err(StoreError::BadTable { .. })),
                "{bad}"
            );
        }
    }
}
