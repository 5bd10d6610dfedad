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

/// The scheme of an absolute URI (`ALPHA *( ALPHA / DIGIT / "+" / "-" /
/// "." ) ":"`), as GLib's `g_uri_parse_scheme` finds it; None when there is
/// none.
pub fn scheme(uri: &str) -> Option<&str> {
    let (scheme, _) = uri.split_once(':')?;
    let mut bytes = scheme.bytes();
    let first = bytes.next()?;
    (first.is_ascii_alphabetic()
        && bytes.all(|b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'-' | b'.')))
    .then_some(scheme)
}

/// Whether `uri` is an absolute URI that GLib's `g_uri_is_valid` accepts
/// with no flags (strict RFC 3986): a scheme; only printable ASCII; every
/// `%` followed by two hex digits; an authority's port all digits and at
/// most 65535, an IP literal in brackets a valid IPv6 address (or an
/// `IPvFuture`), no `%00` in the host.
pub fn is_valid(uri: &str) -> bool {
    let Some(scheme) = scheme(uri) else {
        return false;
    };
    if !uri.bytes().all(|b| b.is_ascii_graphic()) {
        return false;
    }
    let raw = uri.as_bytes();
    for (i, &b) in raw.iter().enumerate() {
        if b == b'%'
            && !raw
                .get(i + 1..i + 3)
                .is_some_and(|h| h.iter().all(u8::is_ascii_hexdigit))
        {
            return false;
        }
    }
    let rest = &uri[scheme.len() + 1..];
    let Some(after) = rest.strip_prefix("//") else {
        return true;
    };
    let authority = after.split(['/', '?', '#']).next().unwrap_or_default();
    let host_port = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    let (host, port) = if let Some(literal) = host_port.strip_prefix('[') {
        let Some((inside, tail)) = literal.split_once(']') else {
            return false;
        };
        let ok = if inside.starts_with(['v', 'V']) {
            inside.contains('.')
        } else {
            inside.parse::<std::net::Ipv6Addr>().is_ok()
        };
        if !ok {
            return false;
        }
        match tail {
            "" => ("", None),
            t => match t.strip_prefix(':') {
                Some(p) => ("", Some(p)),
                None => return false,
            },
        }
    } else {
        match host_port.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (host_port, None),
        }
    };
    if host.contains("%00") || host.contains(['[', ']']) {
        return false;
    }
    match port {
        None | Some("") => true,
        Some(p) => {
            p.bytes().all(|b| b.is_ascii_digit()) && p.parse::<u32>().is_ok_and(|n| n <= 65535)
        }
    }
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

    #[test]
    fn uris_are_checked_as_glib_checks_them() {
        assert_eq!(scheme("HTTPS://x"), Some("HTTPS"));
        assert_eq!(scheme("a+b.c-d:x"), Some("a+b.c-d"));
        for none in ["", "x", ":x", "1a:x", "a b:x", "/path:x"] {
            assert_eq!(scheme(none), None, "{none:?}");
        }
        for ok in [
            "https://example.org/a?b#c",
            "http://user:pw@[::1]:8080/",
            "mailto:me@example.org",
            "xdg-desktop-portal-test://x",
            "https://example.org:/x",
            "https://a%20b/",
        ] {
            assert!(is_valid(ok), "{ok:?}");
        }
        for bad in [
            "not a uri",
            "https://exa mple.org/",
            "https://example.org/%zz",
            "https://example.org:99999/",
            "https://example.org:8o/",
            "https://[::g]/",
            "https://[::1/",
            "https://a%00b/",
            "https://example.org/\u{e4}",
            "nocolon",
        ] {
            assert!(!is_valid(bad), "{bad:?}");
        }
    }
}
