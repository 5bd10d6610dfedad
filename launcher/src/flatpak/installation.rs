//! Flatpak installations on this machine and what is deployed in them, read
//! as `flatpak run` reads them (flatpak-dir.c, flatpak-utils.c):
//!
//! - the user's: `$FLATPAK_USER_DIR`, else `$XDG_DATA_HOME/flatpak`, else
//!   `~/.local/share/flatpak`;
//! - the system's: `$FLATPAK_SYSTEM_DIR`, else `/var/lib/flatpak`, then the
//!   `Path=` of each `[Installation "ID"]` in
//!   `$FLATPAK_CONFIG_DIR/installations.d/*.conf` (else `/etc/flatpak`),
//!   in file-name order.
//!
//! A deployed ref is `DIR/KIND/ID/ARCH/BRANCH/active`, a symlink to the
//! deploy directory named by its ostree commit, which holds `metadata`,
//! `files/` and `deploy` (a GVariant `(ssasta{sv})`: origin, commit, ...).
//! An app's default branch is the `DIR/app/ID/current` symlink
//! (`ARCH/BRANCH`).

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use porthole_identity::KeyFile;

use super::refs::{Kind, Ref};

/// One installation directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Installation {
    pub path: PathBuf,
    /// The user's installation (overrides are read from it for every app;
    /// a system installation's only for its own apps).
    pub user: bool,
}

/// The installations in `flatpak run`'s search order: the user's first,
/// then the default system one, then the configured extra ones. `env`
/// reads the environment (a parameter so tests can give their own).
pub fn installations(env: &dyn Fn(&str) -> Option<OsString>, home: &Path) -> Vec<Installation> {
    let non_empty = |k: &str| env(k).filter(|v| !v.is_empty()).map(PathBuf::from);
    let user = non_empty("FLATPAK_USER_DIR").unwrap_or_else(|| {
        non_empty("XDG_DATA_HOME")
            .filter(|p| p.is_absolute())
            .unwrap_or_else(|| home.join(".local/share"))
            .join("flatpak")
    });
    let mut out = vec![Installation {
        path: user,
        user: true,
    }];
    out.push(Installation {
        path: non_empty("FLATPAK_SYSTEM_DIR").unwrap_or_else(|| PathBuf::from("/var/lib/flatpak")),
        user: false,
    });
    let config = non_empty("FLATPAK_CONFIG_DIR").unwrap_or_else(|| PathBuf::from("/etc/flatpak"));
    let mut confs: Vec<PathBuf> = std::fs::read_dir(config.join("installations.d"))
        .map(|rd| {
            rd.flatten()
                .map(|e| e.path())
                .filter(|p| p.extension().is_some_and(|e| e == "conf"))
                .collect()
        })
        .unwrap_or_default();
    confs.sort();
    for conf in confs {
        let Ok(text) = std::fs::read_to_string(&conf) else {
            tracing::info!(file = %conf.display(), "unreadable installation config; skipped");
            continue;
        };
        let Ok(kf) = KeyFile::parse(&text) else {
            tracing::info!(file = %conf.display(), "malformed installation config; skipped");
            continue;
        };
        for group in kf.groups() {
            if !group.starts_with("Installation \"") {
                continue;
            }
            if let Some(path) = kf.get(group, "Path").filter(|p| p.starts_with('/')) {
                let path = PathBuf::from(path);
                if !out.iter().any(|i| i.path == path) {
                    out.push(Installation { path, user: false });
                }
            }
        }
    }
    out
}

/// A deployed ref: where it is and which commit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Deploy {
    pub r#ref: Ref,
    pub installation: Installation,
    /// The deploy directory (`.../BRANCH/COMMIT`), symlink-free.
    pub dir: PathBuf,
    /// The ostree commit, from the `deploy` file.
    pub commit: String,
}

impl Deploy {
    pub fn files(&self) -> PathBuf {
        self.dir.join("files")
    }

    pub fn metadata_path(&self) -> PathBuf {
        self.dir.join("metadata")
    }
}

/// A deploy directory that is there but cannot be used.
#[derive(Debug, thiserror::Error)]
#[error("{path}: {reason}")]
pub struct DamagedDeploy {
    pub path: PathBuf,
    pub reason: String,
}

fn is_commit(s: &str) -> bool {
    s.len() == 64
        && s.bytes()
            .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
}

/// The commit recorded in a `deploy` file: its second string. A GVariant
/// `(ssasta{sv})` starts with the two strings, each NUL-terminated, one
/// right after the other (strings have no alignment).
pub fn deploy_commit(bytes: &[u8]) -> Option<String> {
    let mut parts = bytes.splitn(3, |b| *b == 0);
    let _origin = parts.next()?;
    let commit = parts.next()?;
    parts.next()?;
    let commit = std::str::from_utf8(commit).ok()?;
    is_commit(commit).then(|| commit.to_owned())
}

/// The deployment of `r` in `inst`, if there is one. `Ok(None)`: not
/// deployed there; `Err`: deployed but unusable.
pub fn find_deploy(inst: &Installation, r: &Ref) -> Result<Option<Deploy>, DamagedDeploy> {
    let base = inst
        .path
        .join(r.kind.dir())
        .join(&r.id)
        .join(&r.arch)
        .join(&r.branch);
    let active = base.join("active");
    let target = match std::fs::read_link(&active) {
        Ok(t) => t,
        Err(_) => return Ok(None),
    };
    let damaged = |reason: String| DamagedDeploy {
        path: active.clone(),
        reason,
    };
    let name = target.to_str().unwrap_or_default();
    // `active` names a sibling directory; anything else is not Flatpak's.
    if name.contains('/') || name == ".." || name == "." || name.is_empty() {
        return Err(damaged(format!(
            "points to {}, not to a deploy directory beside it",
            target.display()
        )));
    }
    let dir = base.join(name);
    let dir = std::fs::canonicalize(&dir).map_err(|e| damaged(e.to_string()))?;
    let deploy_file = dir.join("deploy");
    let bytes = std::fs::read(&deploy_file).map_err(|e| DamagedDeploy {
        path: deploy_file.clone(),
        reason: e.to_string(),
    })?;
    let commit = deploy_commit(&bytes).ok_or_else(|| DamagedDeploy {
        path: deploy_file.clone(),
        reason: "not a Flatpak deploy file (no commit in it)".into(),
    })?;
    if !dir.join("files").is_dir() {
        return Err(DamagedDeploy {
            path: dir.join("files"),
            reason: "missing".into(),
        });
    }
    Ok(Some(Deploy {
        r#ref: r.clone(),
        installation: inst.clone(),
        dir,
        commit,
    }))
}

/// The first deployment of `r` in `dirs`, in order.
pub fn find_deploy_in(dirs: &[Installation], r: &Ref) -> Result<Option<Deploy>, DamagedDeploy> {
    for inst in dirs {
        if let Some(d) = find_deploy(inst, r)? {
            return Ok(Some(d));
        }
    }
    Ok(None)
}

/// `ARCH/BRANCH` of an app's `current` link in the first installation that
/// has one (flatpak_find_current_ref).
pub fn current(dirs: &[Installation], app_id: &str) -> Option<(String, String)> {
    dirs.iter().find_map(|inst| {
        let link = inst.path.join("app").join(app_id).join("current");
        let target = std::fs::read_link(link).ok()?;
        let s = target.to_str()?;
        let (arch, branch) = s.split_once('/')?;
        Some((arch.to_owned(), branch.to_owned()))
    })
}

/// Branches of `id` deployed for `arch` in any installation (for the case
/// without a `current` link, and for messages).
pub fn branches(dirs: &[Installation], kind: Kind, id: &str, arch: &str) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for inst in dirs {
        let Ok(rd) = std::fs::read_dir(inst.path.join(kind.dir()).join(id).join(arch)) else {
            continue;
        };
        for e in rd.flatten() {
            // The link, dangling or not: a damaged deploy is reported
            // as damaged, not as missing.
            if std::fs::symlink_metadata(e.path().join("active")).is_ok()
                && let Some(n) = e.file_name().to_str()
                && !out.iter().any(|b| b == n)
            {
                out.push(n.to_owned());
            }
        }
    }
    out.sort();
    out
}

/// The override file `overrides/NAME` of an installation (NAME is an app
/// id or `global`), if present.
pub fn override_file(inst: &Installation, name: &str) -> Option<PathBuf> {
    let p = inst.path.join("overrides").join(name);
    p.is_file().then_some(p)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deploy_file_commit() {
        let c = "6c28c87416a4041c0a04a7e6aa4aa9294be3923cd333b24aba81d8ed38f9bac6";
        let mut b = b"test\0".to_vec();
        b.extend_from_slice(c.as_bytes());
        b.extend_from_slice(b"\0\0\0\0\0\0\0\0\0\0\x06\0deploy-version\0");
        assert_eq!(deploy_commit(&b).as_deref(), Some(c));
        assert_eq!(deploy_commit(b"test\0abc\0"), None);
        assert_eq!(deploy_commit(b""), None);
        assert_eq!(deploy_commit(b"test\0"), None);
    }

    #[test]
    fn search_order() {
        let d = tempfile::tempdir().unwrap();
        let conf = d.path().join("config/installations.d");
        std::fs::create_dir_all(&conf).unwrap();
        std::fs::write(
            conf.join("extra.conf"),
            "[Installation \"extra\"]\nPath=/srv/flatpak\nDisplayName=Extra\n",
        )
        .unwrap();
        std::fs::write(conf.join("ignored.txt"), "[Installation \"x\"]\nPath=/x\n").unwrap();
        let cfg = d.path().join("config");
        let env = |k: &str| -> Option<OsString> {
            match k {
                "FLATPAK_CONFIG_DIR" => Some(cfg.clone().into()),
                "XDG_DATA_HOME" => Some("/home/u/data".into()),
                _ => None,
            }
        };
        let dirs = installations(&env, Path::new("/home/u"));
        let paths: Vec<&Path> = dirs.iter().map(|i| i.path.as_path()).collect();
        assert_eq!(
            paths,
            [
                Path::new("/home/u/data/flatpak"),
                Path::new("/var/lib/flatpak"),
                Path::new("/srv/flatpak")
            ]
        );
        assert!(dirs[0].user && !dirs[1].user && !dirs[2].user);
    }
}
