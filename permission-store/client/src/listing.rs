//! The shapes of `org.porthole.PermissionStore1`'s listings. Expiries are
//! Unix seconds; 0 means the grant never expires.

use std::collections::BTreeMap;

use zvariant::OwnedValue;

/// One app's grant on one id: `(permissions, expires)`, D-Bus `(asx)`.
pub type GrantEntry = (Vec<String>, i64);

/// One id of a table as `ListEntries` returns it: `(id, {app: grant},
/// data)`, D-Bus `(sa{s(asx)}v)`.
pub type ListEntry = (String, BTreeMap<String, GrantEntry>, OwnedValue);

/// One live grant of an app as `ListApp` returns it: `(table, id,
/// permissions, expires)`, D-Bus `(ssasx)`.
pub type AppGrant = (String, String, Vec<String>, i64);

/// One table as `ListTables` returns it: `(name, number of ids)`, D-Bus
/// `(su)`.
pub type TableCount = (String, u32);
