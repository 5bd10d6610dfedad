//! One document as upstream keeps it in the permission store's `documents`
//! table: the data value is `(ayttu)`: the host path as a NUL-terminated
//! byte string, the device and inode of the directory that holds it (of the
//! directory itself for a directory document), and the entry flags; the
//! per-app permissions are the store's `a{sas}` (`document-portal.c`,
//! `do_create_doc`; `document-store.c`).

use std::collections::BTreeMap;
use std::ffi::{OsStr, OsString};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::{Path, PathBuf};

use zvariant::{OwnedValue, Structure, Value};

use crate::permissions::Perms;

/// Upstream's `DOCUMENT_ENTRY_FLAG_*`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct DocFlags(pub u32);

impl DocFlags {
    /// Added without reuse-existing: never handed out for another Add.
    pub const UNIQUE: u32 = 1;
    /// Not persistent: kept in memory only, gone when the service ends.
    pub const TRANSIENT: u32 = 2;
    /// A directory document.
    pub const DIRECTORY: u32 = 4;

    pub fn unique(self) -> bool {
        self.0 & Self::UNIQUE != 0
    }
    pub fn transient(self) -> bool {
        self.0 & Self::TRANSIENT != 0
    }
    pub fn directory(self) -> bool {
        self.0 & Self::DIRECTORY != 0
    }
}

/// Why a stored value is not a document.
#[derive(Debug, thiserror::Error)]
pub enum DocumentError {
    #[error("document data is not (ayttu): {0}")]
    BadData(String),
    #[error("document path {0:?} is not absolute")]
    RelativePath(PathBuf),
}

/// A document: which host file, and who may do what with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Document {
    /// The host path (absolute, no trailing NUL).
    pub path: PathBuf,
    /// Device and inode of the directory the file is in (of the directory
    /// itself for a directory document): checked before every use, so a
    /// directory swapped for another (or a symlink) after export exposes
    /// nothing.
    pub dev: u64,
    pub ino: u64,
    pub flags: DocFlags,
    /// Per-app permissions; an app with none is absent.
    pub apps: BTreeMap<String, Perms>,
}

impl Document {
    /// What `app` may do: everything for the host (`""`), as upstream.
    pub fn perms_of(&self, app: &str) -> Perms {
        if app.is_empty() {
            return Perms::ALL;
        }
        self.apps.get(app).copied().unwrap_or_default()
    }

    /// Sets `app`'s permissions; none removes the app.
    pub fn set_perms(&mut self, app: &str, perms: Perms) {
        if perms.is_empty() {
            self.apps.remove(app);
        } else {
            self.apps.insert(app.to_owned(), perms);
        }
    }

    /// The name the document has in its FUSE directory.
    pub fn name(&self) -> &OsStr {
        self.path.file_name().unwrap_or(OsStr::new("/"))
    }

    /// The real directory holding the file (the directory itself for a
    /// directory document).
    pub fn dir(&self) -> &Path {
        if self.flags.directory() {
            &self.path
        } else {
            self.path.parent().unwrap_or(Path::new("/"))
        }
    }

    /// Whether `other` names the same file the same way (upstream's
    /// `permission_db_list_ids_by_value`: the whole data value).
    pub fn same_value(&self, other: &Document) -> bool {
        self.path == other.path
            && self.dev == other.dev
            && self.ino == other.ino
            && self.flags == other.flags
    }

    /// The path as upstream's byte string: NUL-terminated.
    pub fn path_bytestring(path: &Path) -> Vec<u8> {
        let mut bytes = path.as_os_str().as_bytes().to_vec();
        bytes.push(0);
        bytes
    }

    /// The store's data value, `(ayttu)`.
    pub fn data_value(&self) -> Value<'static> {
        Value::from(Structure::from((
            Self::path_bytestring(&self.path),
            self.dev,
            self.ino,
            self.flags.0,
        )))
    }

    /// The store's `a{sas}` for this document.
    pub fn app_permissions(&self) -> BTreeMap<String, Vec<String>> {
        self.apps
            .iter()
            .map(|(app, p)| (app.clone(), p.to_strings()))
            .collect()
    }

    /// Reads a stored entry back.
    pub fn from_stored(
        data: &Value<'_>,
        apps: &BTreeMap<String, Vec<String>>,
    ) -> Result<Document, DocumentError> {
        let bad = |what: &str| DocumentError::BadData(format!("{what} in {data}"));
        let data = match data {
            Value::Value(inner) => inner.as_ref(),
            other => other,
        };
        let Value::Structure(s) = data else {
            return Err(bad("not a structure"));
        };
        let fields = s.fields();
        let [path, dev, ino, flags] = fields else {
            return Err(bad("not four fields"));
        };
        let path: Vec<u8> = match path {
            Value::Array(a) => a
                .iter()
                .map(|v| match v {
                    Value::U8(b) => Ok(*b),
                    _ => Err(bad("path is not ay")),
                })
                .collect::<Result<_, _>>()?,
            _ => return Err(bad("path is not ay")),
        };
        let (Value::U64(dev), Value::U64(ino), Value::U32(flags)) = (dev, ino, flags) else {
            return Err(bad("not ttu"));
        };
        let path = PathBuf::from(OsString::from_vec(strip_nul(path)));
        if !path.is_absolute() {
            return Err(DocumentError::RelativePath(path));
        }
        let apps = apps
            .iter()
            .map(|(app, p)| (app.clone(), Perms::from_stored(p)))
            .filter(|(_, p)| !p.is_empty())
            .collect();
        Ok(Document {
            path,
            dev: *dev,
            ino: *ino,
            flags: DocFlags(*flags),
            apps,
        })
    }

    pub fn from_owned(
        data: &OwnedValue,
        apps: &BTreeMap<String, Vec<String>>,
    ) -> Result<Document, DocumentError> {
        Self::from_stored(
            &Value::from(
                data.try_clone()
                    .map_err(|e| DocumentError::BadData(e.to_string()))?,
            ),
            apps,
        )
    }
}

/// A byte string as GLib's `g_variant_get_bytestring` reads it: up to the
/// first NUL.
pub fn strip_nul(mut bytes: Vec<u8>) -> Vec<u8> {
    if let Some(end) = bytes.iter().position(|b| *b == 0) {
        bytes.truncate(end);
    }
    bytes
}

#[cfg(test)]
mod tests {
    use super::*;

    fn doc() -> Document {
        Document {
            path: "/home/u/a b.txt".into(),
            dev: 2049,
            ino: 77,
            flags: DocFlags(DocFlags::UNIQUE),
            apps: BTreeMap::from([("org.example.A".to_string(), Perms::READ | Perms::WRITE)]),
        }
    }

    #[test]
    fn data_is_upstreams_ayttu_with_a_nul_terminated_path() {
        let v = doc().data_value();
        assert_eq!(v.value_signature().to_string(), "(ayttu)");
        let Value::Structure(s) = &v else { panic!() };
        let Value::Array(a) = &s.fields()[0] else {
            panic!()
        };
        assert_eq!(a.len(), "/home/u/a b.txt".len() + 1);
        assert_eq!(a.get(a.len() - 1).unwrap(), Some(0u8));
    }

    #[test]
    fn stored_entries_round_trip() {
        let d = doc();
        let back = Document::from_stored(&d.data_value(), &d.app_permissions()).unwrap();
        assert_eq!(back, d);
        // Wrapped in a variant, as the store's Lookup answers.
        let wrapped = Value::Value(Box::new(d.data_value()));
        assert_eq!(
            Document::from_stored(&wrapped, &d.app_permissions()).unwrap(),
            d
        );
    }

    #[test]
    fn foreign_values_are_errors_not_panics() {
        let none = BTreeMap::new();
        for v in [
            Value::U8(0),
            Value::from("x"),
            Value::from(Structure::from((vec![b'/', 0], 1u64, 2u64))),
            Value::from(Structure::from((vec![b'a', 0], 1u64, 2u64, 0u32))),
            Value::from(Structure::from(("/x", 1u64, 2u64, 0u32))),
        ] {
            assert!(Document::from_stored(&v, &none).is_err(), "{v}");
        }
    }

    #[test]
    fn the_host_has_every_permission_and_empty_grants_vanish() {
        let mut d = doc();
        assert_eq!(d.perms_of(""), Perms::ALL);
        assert_eq!(d.perms_of("org.example.B"), Perms::NONE);
        d.set_perms("org.example.A", Perms::NONE);
        assert!(d.apps.is_empty());
        assert_eq!(d.name(), "a b.txt");
        assert_eq!(d.dir(), Path::new("/home/u"));
    }
}
