//! What the portal tests build their calls from: an `a{sv}` of options and
//! the request handle upstream's formula predicts for a caller; and the
//! path a portal's `file://` URI names.

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

/// The path of a `file://` URI, percent-decoded (None: not a file URI, or
/// a bad escape).
pub fn file_uri_path(uri: &str) -> Option<std::path::PathBuf> {
    use std::os::unix::ffi::OsStringExt;
    let rest = uri.strip_prefix("file://")?;
    let mut bytes = Vec::with_capacity(rest.len());
    let mut it = rest.bytes();
    while let Some(b) = it.next() {
        if b == b'%' {
            let hex = [it.next()?, it.next()?];
            let hex = std::str::from_utf8(&hex).ok()?;
            bytes.push(u8::from_str_radix(hex, 16).ok()?);
        } else {
            bytes.push(b);
        }
    }
    Some(std::ffi::OsString::from_vec(bytes).into())
}
