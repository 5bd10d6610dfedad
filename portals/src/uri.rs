//! `file://` URIs to paths and back, as GLib's `g_file_new_for_uri` /
//! `g_filename_to_uri` read and write them: percent-escapes decoded to raw
//! bytes; an empty or `localhost` authority; on the way out every byte
//! escaped except the unreserved set and the path's allowed sub-delimiters.

use std::ffi::OsString;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UriError {
    #[error("not a file:// URI")]
    NotFile,
    #[error("a file URI with a remote host")]
    RemoteHost,
    #[error("a bad percent escape")]
    BadEscape,
    #[error("not an absolute path")]
    NotAbsolute,
    #[error("a NUL byte in the path")]
    Nul,
}

/// The local path a `file://` URI names.
pub fn to_path(uri: &str) -> Result<PathBuf, UriError> {
    let rest = uri.strip_prefix("file://").ok_or(UriError::NotFile)?;
    let rest = rest.split(['?', '#']).next().unwrap_or_default();
    let (host, path) = match rest.find('/') {
        Some(i) => rest.split_at(i),
        None => return Err(UriError::NotAbsolute),
    };
    if !host.is_empty() && !host.eq_ignore_ascii_case("localhost") {
        return Err(UriError::RemoteHost);
    }
    let bytes = unescape(path)?;
    if bytes.contains(&0) {
        return Err(UriError::Nul);
    }
    Ok(PathBuf::from(OsString::from_vec(bytes)))
}

fn unescape(s: &str) -> Result<Vec<u8>, UriError> {
    let raw = s.as_bytes();
    let mut out = Vec::with_capacity(raw.len());
    let mut i = 0;
    while i < raw.len() {
        if raw[i] == b'%' {
            let hex = raw.get(i + 1..i + 3).ok_or(UriError::BadEscape)?;
            let hex = std::str::from_utf8(hex).map_err(|_| UriError::BadEscape)?;
            out.push(u8::from_str_radix(hex, 16).map_err(|_| UriError::BadEscape)?);
            i += 3;
        } else {
            out.push(raw[i]);
            i += 1;
        }
    }
    Ok(out)
}

/// The `file://` URI of an absolute path.
pub fn from_path(path: &Path) -> String {
    let mut uri = String::from("file://");
    for &b in path.as_os_str().as_bytes() {
        let keep = b.is_ascii_alphanumeric() || b"-._~/!$&'()*+,;=:@".contains(&b);
        if keep {
            uri.push(b as char);
        } else {
            uri.push_str(&format!("%{b:02X}"));
        }
    }
    uri
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_refusals() {
        assert_eq!(
            to_path("file:///tmp/a%20b.txt").unwrap(),
            Path::new("/tmp/a b.txt")
        );
        assert_eq!(to_path("file://localhost/x").unwrap(), Path::new("/x"));
        assert_eq!(to_path("file:///x?q#f").unwrap(), Path::new("/x"));
        assert_eq!(to_path("https://x/y"), Err(UriError::NotFile));
        assert_eq!(to_path("file://example.org/y"), Err(UriError::RemoteHost));
        assert_eq!(to_path("file:///a%2"), Err(UriError::BadEscape));
        assert_eq!(to_path("file:///a%00b"), Err(UriError::Nul));
        let odd = Path::new("/tmp/ä b%#?.txt");
        let uri = from_path(odd);
        assert_eq!(uri, "file:///tmp/%C3%A4%20b%25%23%3F.txt");
        assert_eq!(to_path(&uri).unwrap(), odd);
    }
}
