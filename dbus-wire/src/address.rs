//! D-Bus server addresses (the spec's "Server Addresses"): a `;`-separated
//! list of `transport:key=value,key=value` entries whose values escape
//! bytes as `%XX`. `DBUS_SESSION_BUS_ADDRESS` and the proxy's ADDRESS
//! argument are such lists, and a client uses the first entry it can
//! connect to.
//!
//! Values are unescaped to bytes (a socket path need not be UTF-8). Like
//! libdbus we refuse a `%` that is not followed by two hex digits; unlike
//! libdbus (and like GDBus) we take other bytes that should have been
//! escaped as themselves, so an address some other client accepts is not
//! refused here.

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use thiserror::Error;

/// Why an address list cannot be used.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum AddressError {
    #[error("empty D-Bus address")]
    Empty,
    #[error("D-Bus address entry {0:?} has no transport (expected transport:key=value,...)")]
    NoTransport(String),
    #[error("D-Bus address entry {entry:?}: {pair:?} is not key=value")]
    NotKeyValue { entry: String, pair: String },
    #[error("D-Bus address entry {entry:?}: key {key} appears twice")]
    DuplicateKey { entry: String, key: String },
    #[error("D-Bus address entry {entry:?}: '%' must be followed by two hex digits in {value:?}")]
    BadEscape { entry: String, value: String },
    #[error(
        "D-Bus address entry {0:?}: a unix address to connect to needs exactly one of path= and abstract= \
         (runtime=, dir= and tmpdir= are for servers)"
    )]
    UnixTarget(String),
    #[error(
        "no D-Bus address in {0:?} is one we can connect to (only unix:path= and unix:abstract=)"
    )]
    Unsupported(String),
}

/// One entry of an address list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Address {
    transport: String,
    params: Vec<(String, Vec<u8>)>,
    /// The entry as written, for messages.
    text: String,
}

/// Where a unix-socket address leads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UnixTarget {
    /// `unix:path=`: a socket in the file system.
    Path(PathBuf),
    /// `unix:abstract=`: a name in the abstract namespace (without the
    /// leading NUL byte).
    Abstract(Vec<u8>),
}

/// Parses an address list, every entry of it.
pub fn parse_list(list: &str) -> Result<Vec<Address>, AddressError> {
    let entries: Vec<&str> = list.split(';').filter(|e| !e.is_empty()).collect();
    if entries.is_empty() {
        return Err(AddressError::Empty);
    }
    entries.into_iter().map(Address::parse).collect()
}

/// The first entry of `list` that we can connect to and where it leads:
/// what a client does with `DBUS_SESSION_BUS_ADDRESS`. Entries of other
/// transports are passed over; when no entry will do, the error names the
/// first unix entry's fault, if there is one.
pub fn first_unix_target(list: &str) -> Result<(Address, UnixTarget), AddressError> {
    let mut first_err = None;
    for a in parse_list(list)? {
        if a.transport() == "unix" {
            match a.unix_target() {
                Ok(t) => return Ok((a, t)),
                Err(e) => {
                    first_err.get_or_insert(e);
                }
            }
        }
    }
    Err(first_err.unwrap_or_else(|| AddressError::Unsupported(list.to_owned())))
}

/// `unix:path=PATH` with the path escaped, for a socket we name ourselves.
pub fn unix_path(path: &Path) -> String {
    format!("unix:path={}", escape(path.as_os_str().as_bytes()))
}

/// Escapes `value` for an address: bytes outside the spec's
/// optionally-escaped set `[-0-9A-Za-z_/.\*]` become `%XX`.
pub fn escape(value: &[u8]) -> String {
    let mut out = String::with_capacity(value.len());
    for &b in value {
        if b.is_ascii_alphanumeric() || b"-_/.\\*".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02x}"));
        }
    }
    out
}

/// `%XX` → the byte; other bytes as they are.
fn unescape(value: &str) -> Option<Vec<u8>> {
    let b = value.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = |c: u8| (c as char).to_digit(16);
            let hi = hex(*b.get(i + 1)?)?;
            let lo = hex(*b.get(i + 2)?)?;
            out.push((hi * 16 + lo) as u8);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    Some(out)
}

impl Address {
    /// Parses one entry (`transport:key=value,...`, no `;`).
    pub fn parse(entry: &str) -> Result<Address, AddressError> {
        let (transport, rest) = entry
            .split_once(':')
            .filter(|(t, _)| !t.is_empty())
            .ok_or_else(|| AddressError::NoTransport(entry.to_owned()))?;
        let mut params: Vec<(String, Vec<u8>)> = Vec::new();
        for pair in rest.split(',').filter(|p| !p.is_empty()) {
            let (key, value) = pair
                .split_once('=')
                .filter(|(k, _)| !k.is_empty())
                .ok_or_else(|| AddressError::NotKeyValue {
                    entry: entry.to_owned(),
                    pair: pair.to_owned(),
                })?;
            if params.iter().any(|(k, _)| k == key) {
                return Err(AddressError::DuplicateKey {
                    entry: entry.to_owned(),
                    key: key.to_owned(),
                });
            }
            let value = unescape(value).ok_or_else(|| AddressError::BadEscape {
                entry: entry.to_owned(),
                value: value.to_owned(),
            })?;
            params.push((key.to_owned(), value));
        }
        Ok(Address {
            transport: transport.to_owned(),
            params,
            text: entry.to_owned(),
        })
    }

    /// `unix`, `tcp`, `autolaunch`, ...
    pub fn transport(&self) -> &str {
        &self.transport
    }

    /// The unescaped value of `key`.
    pub fn get(&self, key: &str) -> Option<&[u8]> {
        self.params
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_slice())
    }

    /// The server's GUID, when the address names one.
    pub fn guid(&self) -> Option<&str> {
        self.get("guid").and_then(|g| std::str::from_utf8(g).ok())
    }

    /// The socket a client connects to for a `unix:` entry.
    pub fn unix_target(&self) -> Result<UnixTarget, AddressError> {
        if self.transport != "unix" {
            return Err(AddressError::Unsupported(self.text.clone()));
        }
        match (self.get("path"), self.get("abstract")) {
            (Some(p), None) if !p.is_empty() => {
                Ok(UnixTarget::Path(PathBuf::from(OsStr::from_bytes(p))))
            }
            (None, Some(a)) if !a.is_empty() => Ok(UnixTarget::Abstract(a.to_vec())),
            _ => Err(AddressError::UnixTarget(self.text.clone())),
        }
    }

    /// The entry as written.
    pub fn as_str(&self) -> &str {
        &self.text
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unix_path_and_guid() {
        let (a, t) = first_unix_target("unix:path=/run/user/0/bus,guid=0123abcd").unwrap();
        assert_eq!(t, UnixTarget::Path("/run/user/0/bus".into()));
        assert_eq!(a.guid(), Some("0123abcd"));
        assert_eq!(a.transport(), "unix");
    }

    #[test]
    fn percent_escapes() {
        let (_, t) = first_unix_target("unix:path=/tmp/a%20b%2cc%3Bd%25").unwrap();
        assert_eq!(t, UnixTarget::Path("/tmp/a b,c;d%".into()));
        // Non-UTF-8 bytes in a path.
        let (_, t) = first_unix_target("unix:path=/tmp/%ff").unwrap();
        assert_eq!(
            t,
            UnixTarget::Path(PathBuf::from(OsStr::from_bytes(b"/tmp/\xff")))
        );
        // Unescaped bytes that should have been escaped pass as themselves.
        let (_, t) = first_unix_target("unix:path=/tmp/x~y+z").unwrap();
        assert_eq!(t, UnixTarget::Path("/tmp/x~y+z".into()));
    }

    #[test]
    fn bad_escapes() {
        for bad in [
            "unix:path=/tmp/%",
            "unix:path=/tmp/%2",
            "unix:path=/tmp/%zz",
            "unix:path=/tmp/%2g",
            "unix:abstract=%%41",
        ] {
            assert!(
                matches!(first_unix_target(bad), Err(AddressError::BadEscape { .. })),
                "{bad}"
            );
        }
    }

    #[test]
    fn lists_take_the_first_unix_entry() {
        let (a, t) = first_unix_target(
            "tcp:host=x,port=1;unix:abstract=/tmp/dbus-a%2cb,guid=1;unix:path=/b",
        )
        .unwrap();
        assert_eq!(t, UnixTarget::Abstract(b"/tmp/dbus-a,b".to_vec()));
        assert_eq!(a.as_str(), "unix:abstract=/tmp/dbus-a%2cb,guid=1");
        let all = parse_list("unix:path=/a;;autolaunch:").unwrap();
        assert_eq!(all.len(), 2);
        assert_eq!(all[1].transport(), "autolaunch");
        assert_eq!(all[0].get("path"), Some(&b"/a"[..]));
        assert_eq!(
            first_unix_target("tcp:host=x;autolaunch:"),
            Err(AddressError::Unsupported("tcp:host=x;autolaunch:".into()))
        );
    }

    #[test]
    fn malformed_entries() {
        assert_eq!(parse_list(""), Err(AddressError::Empty));
        assert_eq!(parse_list(";"), Err(AddressError::Empty));
        assert!(matches!(
            parse_list("/run/user/0/bus"),
            Err(AddressError::NoTransport(_))
        ));
        assert!(matches!(
            parse_list(":path=/x"),
            Err(AddressError::NoTransport(_))
        ));
        assert!(matches!(
            parse_list("unix:path"),
            Err(AddressError::NotKeyValue { .. })
        ));
        assert!(matches!(
            parse_list("unix:=x"),
            Err(AddressError::NotKeyValue { .. })
        ));
        assert!(matches!(
            parse_list("unix:path=/a,path=/b"),
            Err(AddressError::DuplicateKey { .. })
        ));
        // An error in a later entry spoils the list, as in libdbus.
        assert!(matches!(
            parse_list("unix:path=/a;unix:path=%"),
            Err(AddressError::BadEscape { .. })
        ));
    }

    #[test]
    fn unix_targets_need_one_socket() {
        for bad in [
            "unix:runtime=yes",
            "unix:tmpdir=/tmp",
            "unix:dir=/tmp",
            "unix:path=/a,abstract=b",
            "unix:path=",
            "unix:guid=12",
        ] {
            assert_eq!(
                first_unix_target(bad),
                Err(AddressError::UnixTarget(bad.into())),
                "{bad}"
            );
        }
    }

    #[test]
    fn escape_round_trips() {
        let p = Path::new("/run/user/1000/my bus,x;y=z%");
        let s = unix_path(p);
        assert_eq!(s, "unix:path=/run/user/1000/my%20bus%2cx%3by%3dz%25");
        let (_, t) = first_unix_target(&s).unwrap();
        assert_eq!(t, UnixTarget::Path(p.into()));
        assert_eq!(
            unix_path(Path::new("/run/user/0/bus")),
            "unix:path=/run/user/0/bus"
        );
    }
}
