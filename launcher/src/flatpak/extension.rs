//! Extensions a runtime or app asks for (`[Extension NAME]` groups), found
//! as `flatpak run` finds them (flatpak-utils.c `flatpak_list_extensions`):
//! the ref `runtime/NAME/ARCH/BRANCH` for each of `versions=` (or
//! `version=`, or the asking ref's branch), mounted read-only at
//! `TARGET/directory`; with `subdirectories=true` and no `NAME` itself,
//! every installed `NAME.*` at `directory/SUFFIX` on a tmpfs, their
//! `merge-dirs` entries linked side by side. A missing one is skipped, as
//! Flatpak skips it. `add-ld-path` adds to the library path.

use std::path::PathBuf;

use porthole_identity::KeyFile;

use super::installation::{Installation, find_deploy_in};
use super::refs::{Kind, Ref, check_branch};

/// One extension to mount.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Extension {
    /// The installed ref's id (`org.freedesktop.Platform.GL.default`).
    pub id: String,
    pub commit: String,
    /// The extension's files on the host.
    pub files: PathBuf,
    /// Where it appears in the sandbox (`/usr/lib/x86_64-linux-gnu/GL/default`).
    pub dest: PathBuf,
    /// A tmpfs first at this directory (subdirectory extensions).
    pub tmpfs: Option<PathBuf>,
    /// `add-ld-path`, resolved inside the sandbox.
    pub ld_path: Option<PathBuf>,
    /// The extension's directory before `subdirectory-suffix` (Flatpak's
    /// `directory`): `merge-dirs` link from beside it into it.
    pub base: PathBuf,
    /// `merge-dirs=`: directories whose entries every subdirectory
    /// extension shows in one place (the first extension's entry wins).
    pub merge_dirs: Vec<String>,
}

/// `enable-if=`: the reasons we can judge; a reason we cannot is false.
fn enabled(id: &str, reasons: Option<&str>) -> bool {
    let Some(reasons) = reasons.filter(|r| !r.is_empty()) else {
        return true;
    };
    let base = id.rsplit('.').next().unwrap_or(id);
    reasons.split(';').any(|r| {
        if r == "active-gl-driver" {
            // Flatpak's list without a GPU-specific driver: default, host.
            return base == "default" || base == "host";
        }
        if let Some(desktop) = r.strip_prefix("on-xdg-desktop-") {
            return std::env::var("XDG_CURRENT_DESKTOP")
                .map(|v| v.split(':').any(|d| d.eq_ignore_ascii_case(desktop)))
                .unwrap_or(false);
        }
        false
    })
}

/// Installed runtime ids starting with `prefix` for `arch`/`branch`.
fn deployed_with_prefix(
    dirs: &[Installation],
    prefix: &str,
    arch: &str,
    branch: &str,
) -> Vec<String> {
    let mut ids: Vec<String> = Vec::new();
    for inst in dirs {
        let Ok(rd) = std::fs::read_dir(inst.path.join("runtime")) else {
            continue;
        };
        for e in rd.flatten() {
            let Some(name) = e.file_name().to_str().map(str::to_owned) else {
                continue;
            };
            if name.starts_with(prefix)
                && e.path().join(arch).join(branch).join("active").exists()
                && !ids.contains(&name)
            {
                ids.push(name);
            }
        }
    }
    ids.sort();
    ids
}

/// The extensions `meta` asks for, mounted below `target` (`/usr` or
/// `/app`), for the asking ref `owner`; sorted by destination so parents
/// come first. Damaged extension deploys are skipped with a log line.
pub fn list(meta: &KeyFile, owner: &Ref, target: &str, dirs: &[Installation]) -> Vec<Extension> {
    let mut out = Vec::new();
    for group in meta.groups() {
        let Some(ext) = group.strip_prefix("Extension ").filter(|e| !e.is_empty()) else {
            continue;
        };
        let name = ext.split('@').next().unwrap_or(ext);
        let Some(directory) = meta.get(group, "directory") else {
            continue;
        };
        // The directory is below the target, never above it.
        if directory.starts_with('/') || directory.split('/').any(|c| c == ".." || c == ".") {
            tracing::info!(
                group,
                directory,
                "extension directory leaves its target; skipped"
            );
            continue;
        }
        let add_ld_path = meta.get(group, "add-ld-path");
        let merge_dirs: Vec<String> = meta
            .get_list(group, "merge-dirs")
            .unwrap_or_default()
            .into_iter()
            .filter(|d| {
                !d.is_empty() && !d.starts_with('/') && !d.split('/').any(|c| c == ".." || c == ".")
            })
            .collect();
        let enable_if = meta.get(group, "enable-if");
        let suffix = meta.get(group, "subdirectory-suffix").unwrap_or_default();
        let branches = meta
            .get_list(group, "versions")
            .or_else(|| meta.get(group, "version").map(|v| vec![v]))
            .unwrap_or_else(|| vec![owner.branch.clone()]);
        let subdirectories = meta.get(group, "subdirectories").as_deref() == Some("true");
        for branch in branches {
            if check_branch(&branch).is_err() {
                continue;
            }
            let mount = |id: &str, dest: PathBuf, tmpfs: Option<PathBuf>| -> Option<Extension> {
                let r = Ref::new(Kind::Runtime, id, &owner.arch, &branch).ok()?;
                let d = match find_deploy_in(dirs, &r) {
                    Ok(Some(d)) => d,
                    Ok(None) => return None,
                    Err(e) => {
                        tracing::info!(%e, "damaged extension; skipped");
                        return None;
                    }
                };
                if !enabled(id, enable_if.as_deref()) {
                    return None;
                }
                let full = if suffix.is_empty() {
                    dest.clone()
                } else {
                    dest.join(&suffix)
                };
                Some(Extension {
                    id: id.to_owned(),
                    commit: d.commit.clone(),
                    files: d.files(),
                    ld_path: add_ld_path.as_ref().map(|p| full.join(p)),
                    base: dest,
                    dest: full,
                    tmpfs,
                    merge_dirs: merge_dirs.clone(),
                })
            };
            let dest = PathBuf::from(target).join(&directory);
            if let Some(e) = mount(name, dest.clone(), None) {
                out.push(e);
            } else if subdirectories {
                let prefix = format!("{name}.");
                for id in deployed_with_prefix(dirs, &prefix, &owner.arch, &branch) {
                    let sub = dest.join(&id[prefix.len()..]);
                    if let Some(e) = mount(&id, sub, Some(dest.clone())) {
                        out.push(e);
                    }
                }
            }
        }
    }
    out.sort_by(|a, b| a.dest.cmp(&b.dest));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn enable_if_reasons() {
        assert!(enabled("org.x.GL.default", None));
        assert!(enabled("org.x.GL.default", Some("active-gl-driver")));
        assert!(!enabled("org.x.GL.nvidia-1-2", Some("active-gl-driver")));
        assert!(!enabled("org.x.Y", Some("have-intel-gpu")));
    }
}
