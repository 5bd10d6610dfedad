//! Which installed apps handle a content type, as GIO answers it
//! (`gdesktopappinfo.c`, the Association between MIME types and
//! applications specification): desktop entries from each data
//! directory's `applications/` (the first file of a desktop id wins; ids
//! of files in subdirectories join the path with `-`), each entry's
//! `MimeType`, and the `mimeapps.list` files (`[Default Applications]`,
//! `[Added Associations]`, `[Removed Associations]`; desktop-specific
//! `DESKTOP-mimeapps.list` first; the old `defaults.list` last) from the
//! config directories and then the data directories.
//!
//! The index is read anew for each request, so an app installed or a
//! default changed takes effect without a restart.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};

use crate::config::SearchDirs;
use crate::desktop_entry::DesktopEntry;

/// Desktop ids as the portal API spells them: without `.desktop`.
pub fn app_id_of(desktop_id: &str) -> &str {
    desktop_id.strip_suffix(".desktop").unwrap_or(desktop_id)
}

/// One `mimeapps.list` (or `defaults.list`).
#[derive(Debug, Default, Clone)]
struct MimeList {
    defaults: HashMap<String, Vec<String>>,
    added: HashMap<String, Vec<String>>,
    removed: HashMap<String, Vec<String>>,
}

impl MimeList {
    fn parse(text: &str) -> Self {
        let mut list = Self::default();
        let mut group: Option<&mut HashMap<String, Vec<String>>> = None;
        for line in text.lines() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            if line.starts_with('[') {
                group = match line {
                    "[Default Applications]" => Some(&mut list.defaults),
                    "[Added Associations]" => Some(&mut list.added),
                    "[Removed Associations]" => Some(&mut list.removed),
                    _ => None,
                };
                continue;
            }
            let (Some(map), Some((key, value))) = (group.as_deref_mut(), line.split_once('='))
            else {
                continue;
            };
            let ids = value
                .split(';')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(str::to_owned)
                .collect();
            map.entry(key.trim().to_owned()).or_insert(ids);
        }
        list
    }

    fn merge_defaults_only(&mut self, other: MimeList) {
        for (k, v) in other.defaults {
            self.defaults.entry(k).or_default().extend(v);
        }
    }
}

/// A directory GIO consults: its lists, and (for data dirs) its apps.
#[derive(Debug, Default)]
struct Dir {
    lists: Vec<MimeList>,
    /// desktop id -> MIME types, for the entries this dir provides.
    mime: Vec<(String, Vec<String>)>,
}

impl Dir {
    /// Adds to `blocked` the apps this directory's lists remove from type
    /// `t`: as GIO, a removal hides the association here and in every less
    /// important directory after it.
    fn block_removed<'a>(&'a self, t: &str, blocked: &mut HashSet<&'a str>) {
        for list in &self.lists {
            if let Some(removed) = list.removed.get(t) {
                blocked.extend(removed.iter().map(String::as_str));
            }
        }
    }
}

/// The installed apps and their associations.
#[derive(Debug, Default)]
pub struct MimeApps {
    /// desktop id -> entry (first file of an id wins, usable ones only;
    /// an unusable first file still hides later ones).
    apps: HashMap<String, DesktopEntry>,
    dirs: Vec<Dir>,
}

impl MimeApps {
    /// Reads the index from the directories of `dirs`.
    pub fn load(dirs: &SearchDirs) -> Self {
        let desktops: Vec<String> = dirs.desktops.clone();
        let mut index = Self::default();
        let mut seen: HashSet<String> = HashSet::new();
        let read_lists = |dir: &Path, with_defaults_list: bool| -> Vec<MimeList> {
            let mut lists = Vec::new();
            for desktop in &desktops {
                if let Ok(t) = std::fs::read_to_string(dir.join(format!("{desktop}-mimeapps.list")))
                {
                    lists.push(MimeList::parse(&t));
                }
            }
            if let Ok(t) = std::fs::read_to_string(dir.join("mimeapps.list")) {
                lists.push(MimeList::parse(&t));
            }
            if with_defaults_list {
                let mut defaults = MimeList::default();
                for desktop in &desktops {
                    if let Ok(t) =
                        std::fs::read_to_string(dir.join(format!("{desktop}-defaults.list")))
                    {
                        defaults.merge_defaults_only(MimeList::parse(&t));
                    }
                }
                if let Ok(t) = std::fs::read_to_string(dir.join("defaults.list")) {
                    defaults.merge_defaults_only(MimeList::parse(&t));
                }
                lists.push(defaults);
            }
            lists
        };
        for config in std::iter::once(&dirs.config_home).chain(&dirs.config_dirs) {
            index.dirs.push(Dir {
                lists: read_lists(config, false),
                mime: Vec::new(),
            });
        }
        for data in std::iter::once(&dirs.data_home).chain(&dirs.data_dirs) {
            let apps_dir = data.join("applications");
            let mut dir = Dir {
                lists: read_lists(&apps_dir, true),
                mime: Vec::new(),
            };
            let mut found = Vec::new();
            collect_entries(&apps_dir, "", &mut found, 0);
            found.sort();
            for (id, path) in found {
                if !seen.insert(id.clone()) {
                    continue;
                }
                let entry = match DesktopEntry::load(&path) {
                    Ok(e) => e,
                    Err(e) => {
                        tracing::debug!("skipping {}: {e}", path.display());
                        continue;
                    }
                };
                if !entry.usable() {
                    continue;
                }
                dir.mime.push((id.clone(), entry.list("MimeType")));
                index.apps.insert(id, entry);
            }
            index.dirs.push(dir);
        }
        index
    }

    /// The entry of an installed app (`id` without `.desktop`).
    pub fn app(&self, app_id: &str) -> Option<&DesktopEntry> {
        self.apps.get(&format!("{app_id}.desktop"))
    }

    pub fn exists(&self, app_id: &str) -> bool {
        self.app(app_id).is_some()
    }

    /// The apps associated with `types` (in order), as GIO's
    /// `desktop_file_dir_mime_lookup` over every directory: added
    /// associations and `MimeType` entries, without those removed by this
    /// or a more important directory.
    fn associated(&self, types: &[String]) -> Vec<String> {
        let mut hits: Vec<String> = Vec::new();
        for t in types {
            let mut blocked: HashSet<&str> = HashSet::new();
            for dir in &self.dirs {
                dir.block_removed(t, &mut blocked);
                for list in &dir.lists {
                    for id in list.added.get(t).into_iter().flatten() {
                        if !blocked.contains(id.as_str())
                            && self.apps.contains_key(id)
                            && !hits.contains(id)
                        {
                            hits.push(id.clone());
                        }
                    }
                }
                for (id, types) in &dir.mime {
                    if types.iter().any(|m| m == t)
                        && !blocked.contains(id.as_str())
                        && !hits.contains(id)
                    {
                        hits.push(id.clone());
                    }
                }
            }
        }
        hits
    }

    /// GIO's `g_app_info_get_recommended_for_type`: the apps that name
    /// this very type (not a parent type). Ids without `.desktop`.
    pub fn recommended(&self, content_type: &str) -> Vec<String> {
        self.associated(&[content_type.to_owned()])
            .iter()
            .map(|id| app_id_of(id).to_owned())
            .collect()
    }

    /// GIO's `g_app_info_get_all_for_type`: this type and its parents.
    pub fn all(&self, types: &[String]) -> Vec<String> {
        self.associated(types)
            .iter()
            .map(|id| app_id_of(id).to_owned())
            .collect()
    }

    /// GIO's `g_app_info_get_default_for_type`: the first installed
    /// default of this type or a parent, in directory order, else the
    /// first associated app. `types` is the type followed by its parents.
    pub fn default_for(&self, types: &[String]) -> Option<String> {
        for t in types {
            let mut blocked: HashSet<&str> = HashSet::new();
            for dir in &self.dirs {
                dir.block_removed(t, &mut blocked);
                for list in &dir.lists {
                    for id in list.defaults.get(t).into_iter().flatten() {
                        if !blocked.contains(id.as_str()) && self.apps.contains_key(id) {
                            return Some(app_id_of(id).to_owned());
                        }
                    }
                }
            }
        }
        self.associated(types)
            .first()
            .map(|id| app_id_of(id).to_owned())
    }
}

/// Every `*.desktop` file under `dir`, with its desktop id.
fn collect_entries(dir: &Path, prefix: &str, out: &mut Vec<(String, PathBuf)>, depth: usize) {
    // Bounded: a symlink loop must not recurse for ever.
    if depth > 8 {
        return;
    }
    let Ok(read) = std::fs::read_dir(dir) else {
        return;
    };
    for item in read.flatten() {
        let name = item.file_name();
        let Some(name) = name.to_str() else { continue };
        let path = item.path();
        if path.is_dir() {
            collect_entries(&path, &format!("{prefix}{name}-"), out, depth + 1);
        } else if name.ends_with(".desktop") {
            out.push((format!("{prefix}{name}"), path));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(path: &Path, text: &str) {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
    }

    fn app(mime: &str) -> String {
        format!("[Desktop Entry]\nType=Application\nName=A\nExec=true %u\nMimeType={mime}\n")
    }

    #[test]
    fn defaults_associations_and_shadowing_as_gio() {
        let root = tempfile::tempdir().unwrap();
        let home = root.path().join("home");
        let sys = root.path().join("sys");
        let config = root.path().join("config");
        write(
            &home.join("applications/viewer.desktop"),
            &app("text/plain;x-scheme-handler/https;"),
        );
        write(
            &sys.join("applications/editor.desktop"),
            &app("text/plain;text/x-csrc;"),
        );
        // The user's file hides the system one of the same id.
        write(&sys.join("applications/viewer.desktop"), &app("image/png;"));
        write(
            &sys.join("applications/kde/term.desktop"),
            &app("x-scheme-handler/ssh;"),
        );
        write(
            &sys.join("applications/gone.desktop"),
            "[Desktop Entry]\nType=Application\nHidden=true\nExec=x\nMimeType=text/plain;\n",
        );
        write(
            &home.join("applications/defaults.list"),
            "[Default Applications]\ntext/plain=gone.desktop;editor.desktop\n",
        );
        write(
            &config.join("mimeapps.list"),
            "[Removed Associations]\nx-scheme-handler/https=viewer.desktop;\n",
        );
        let dirs = SearchDirs {
            config_home: config,
            data_home: home,
            data_dirs: vec![sys],
            ..SearchDirs::default()
        };
        let apps = MimeApps::load(&dirs);
        assert!(apps.exists("viewer") && apps.exists("kde-term") && !apps.exists("gone"));
        let plain = vec!["text/plain".to_owned()];
        assert_eq!(apps.recommended("text/plain"), ["viewer", "editor"]);
        // The first installed default wins.
        assert_eq!(apps.default_for(&plain).as_deref(), Some("editor"));
        // Removed associations hide an app from a type.
        assert!(apps.recommended("x-scheme-handler/https").is_empty());
        assert_eq!(apps.default_for(&["x-scheme-handler/https".into()]), None);
        // Parents widen "all" and the default.
        let csrc = vec!["text/x-csrc".to_owned(), "text/plain".to_owned()];
        assert_eq!(apps.all(&csrc), ["editor", "viewer"]);
        assert_eq!(
            apps.default_for(&["x-scheme-handler/ssh".into()])
                .as_deref(),
            Some("kde-term")
        );
    }
}
