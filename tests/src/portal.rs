//! What the portal tests build their calls from: an `a{sv}` of options and
//! the request handle upstream's formula predicts for a caller.

use std::collections::HashMap;

use zvariant::{OwnedValue, Value};

/// A portal method's `a{sv}` options.
pub type Options = HashMap<String, OwnedValue>;

/// One option's value.
pub fn opt(value: Value<'_>) -> OwnedValue {
    OwnedValue::try_from(value).unwrap()
}

/// Options from (name, value) pairs.
pub fn options(pairs: Vec<(&str, Value<'_>)>) -> Options {
    pairs
        .into_iter()
        .map(|(k, v)| (k.to_owned(), opt(v)))
        .collect()
}

/// The handle upstream's formula predicts for this connection and token:
/// the unique name without `:`, dots as underscores.
pub fn predicted(conn: &zbus::Connection, token: &str) -> String {
    let sender = conn.unique_name().unwrap().as_str();
    format!(
        "/org/freedesktop/portal/desktop/request/{}/{token}",
        sender.trim_start_matches(':').replace('.', "_")
    )
}
