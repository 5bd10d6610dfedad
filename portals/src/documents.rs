//! Chosen files handed to a sandboxed app through the document store, as
//! upstream's `xdp_register_document` does (`documents.c`): the file (or,
//! for a save, its parent directory) opened `O_PATH` and passed to
//! `AddFull` (`AddNamedFull` with the name for a save) with
//! reuse-existing | persistent | as-needed-by-app (| directory), granting
//! the app `read`, `write` when the file may be written, and
//! `grant-permissions`. An empty document id means the app can already
//! reach the path: the URI stays as it was. Otherwise the app gets
//! `file:///run/user/UID/doc/ID/NAME`, where the launcher shows it the
//! store's view of its documents.

use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use zvariant::{Fd, OwnedValue};

use crate::uri;

pub const BUS_NAME: &str = "org.freedesktop.portal.Documents";
pub const OBJECT_PATH: &str = "/org/freedesktop/portal/documents";
pub const INTERFACE: &str = "org.freedesktop.portal.Documents";

/// `AddFull` / `AddNamedFull` flags (`document-enums.h`).
const REUSE_EXISTING: u32 = 1;
const PERSISTENT: u32 = 2;
const AS_NEEDED_BY_APP: u32 = 4;
const EXPORT_DIRECTORY: u32 = 8;

/// How a chosen file is handed over (upstream's `XdpDocumentFlags`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Handover {
    pub writable: bool,
    pub directory: bool,
    pub for_save: bool,
}

impl Handover {
    /// The permissions the app gets.
    pub fn permissions(self) -> Vec<&'static str> {
        let mut p = vec!["read"];
        if self.writable || self.for_save {
            p.push("write");
        }
        p.push("grant-permissions");
        p
    }

    /// The flags for AddFull / AddNamedFull.
    pub fn flags(self) -> u32 {
        let mut f = REUSE_EXISTING | PERSISTENT | AS_NEEDED_BY_APP;
        if self.directory && !self.for_save {
            f |= EXPORT_DIRECTORY;
        }
        f
    }
}

#[derive(Debug, thiserror::Error)]
pub enum DocumentError {
    #[error("{uri}: {source}")]
    Uri { uri: String, source: uri::UriError },
    #[error("{path} has no file name")]
    NoName { path: PathBuf },
    #[error("opening {path}: {source}")]
    Open {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("the document store refused {path}: {source}")]
    Store { path: PathBuf, source: zbus::Error },
}

/// Where a sandboxed app sees its documents (the launcher binds the
/// store's `by-app/APP_ID` view there, as Flatpak does).
pub fn sandbox_doc_dir() -> PathBuf {
    PathBuf::from(format!(
        "/run/user/{}/doc",
        rustix::process::getuid().as_raw()
    ))
}

/// Exports the file behind `file_uri` to `app_id`; returns the URI the app
/// uses.
pub async fn register(
    conn: &zbus::Connection,
    file_uri: &str,
    app_id: &str,
    how: Handover,
) -> Result<String, DocumentError> {
    let path = uri::to_path(file_uri).map_err(|source| DocumentError::Uri {
        uri: file_uri.to_owned(),
        source,
    })?;
    let name = path
        .file_name()
        .ok_or_else(|| DocumentError::NoName { path: path.clone() })?
        .to_owned();
    let target = if how.for_save {
        path.parent().unwrap_or(Path::new("/")).to_owned()
    } else {
        path.clone()
    };
    // The open may meet a slow or hostile file system: off the runtime.
    let opened = tokio::task::spawn_blocking({
        let target = target.clone();
        move || open_path(&target)
    })
    .await
    .map_err(|e| DocumentError::Open {
        path: target.clone(),
        source: std::io::Error::other(e),
    })?;
    let fd = opened.map_err(|source| DocumentError::Open {
        path: target.clone(),
        source,
    })?;
    let store_err = |source| DocumentError::Store {
        path: path.clone(),
        source,
    };
    let permissions = how.permissions();
    let doc_id = if how.for_save {
        let mut name_z = name.as_bytes().to_vec();
        name_z.push(0);
        let reply = conn
            .call_method(
                Some(BUS_NAME),
                OBJECT_PATH,
                Some(INTERFACE),
                "AddNamedFull",
                &(
                    Fd::from(fd.as_fd()),
                    name_z,
                    how.flags(),
                    app_id,
                    &permissions,
                ),
            )
            .await
            .map_err(store_err)?;
        let (id, _extra): (String, std::collections::HashMap<String, OwnedValue>) =
            reply.body().deserialize().map_err(store_err)?;
        id
    } else {
        let reply = conn
            .call_method(
                Some(BUS_NAME),
                OBJECT_PATH,
                Some(INTERFACE),
                "AddFull",
                &(
                    vec![Fd::from(fd.as_fd())],
                    how.flags(),
                    app_id,
                    &permissions,
                ),
            )
            .await
            .map_err(store_err)?;
        let (ids, _extra): (Vec<String>, std::collections::HashMap<String, OwnedValue>) =
            reply.body().deserialize().map_err(store_err)?;
        ids.into_iter().next().unwrap_or_default()
    };
    if doc_id.is_empty() {
        return Ok(uri::from_path(&path));
    }
    Ok(uri::from_path(&sandbox_doc_dir().join(&doc_id).join(&name)))
}

fn open_path(path: &Path) -> std::io::Result<OwnedFd> {
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_PATH)
        .open(path)?;
    Ok(file.into())
}

/// The document id in a path under a `/run/user/…/doc/` mount, as
/// upstream guesses it (`looks_like_document_portal_path`).
pub fn doc_id_in(path: &[u8]) -> Option<String> {
    let text = std::str::from_utf8(path).ok()?;
    let rest = text.strip_prefix("/run/user/")?;
    let after = &rest[rest.find("/doc/")? + "/doc/".len()..];
    let id = after.split('/').next().unwrap_or_default();
    (!id.is_empty()).then(|| id.to_owned())
}

/// The host path of a document (`Info`), None when the store does not
/// know it.
pub async fn host_path(conn: &zbus::Connection, doc_id: &str) -> Option<Vec<u8>> {
    let reply = conn
        .call_method(
            Some(BUS_NAME),
            OBJECT_PATH,
            Some(INTERFACE),
            "Info",
            &(doc_id,),
        )
        .await;
    let reply = match reply {
        Ok(r) => r,
        Err(e) => {
            tracing::debug!(doc_id, "document store Info: {e}");
            return None;
        }
    };
    let (mut path, _apps): (Vec<u8>, std::collections::HashMap<String, Vec<String>>) =
        reply.body().deserialize().ok()?;
    if path.last() == Some(&0) {
        path.pop();
    }
    Some(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn permissions_and_flags_as_upstream() {
        let open = Handover {
            writable: true,
            directory: false,
            for_save: false,
        };
        assert_eq!(open.permissions(), ["read", "write", "grant-permissions"]);
        assert_eq!(open.flags(), 7);
        let ro_dir = Handover {
            writable: false,
            directory: true,
            for_save: false,
        };
        assert_eq!(ro_dir.permissions(), ["read", "grant-permissions"]);
        assert_eq!(ro_dir.flags(), 15);
        let save = Handover {
            writable: false,
            directory: false,
            for_save: true,
        };
        assert_eq!(save.permissions(), ["read", "write", "grant-permissions"]);
        assert_eq!(save.flags(), 7);
    }

    #[test]
    fn doc_ids_are_found_in_doc_paths() {
        assert_eq!(
            doc_id_in(b"/run/user/1000/doc/abc/x.txt").as_deref(),
            Some("abc")
        );
        assert_eq!(doc_id_in(b"/run/user/1000/doc/abc").as_deref(), Some("abc"));
        assert_eq!(doc_id_in(b"/run/user/1000/doc/"), None);
        assert_eq!(doc_id_in(b"/home/me/doc/abc"), None);
    }
}
