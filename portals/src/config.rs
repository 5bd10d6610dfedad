//! Which backend serves each `org.freedesktop.impl.portal.*` interface,
//! found as xdg-desktop-portal 1.20 finds it (`src/xdp-portal-config.c`).
//!
//! Backends describe themselves in `NAME.portal` key files (`[portal]`
//! `DBusName`, `Interfaces`, the deprecated `UseIn`). They are read from
//! `$XDG_DESKTOP_PORTAL_DIR` alone when it is set (upstream's test hook),
//! else from `$XDG_DATA_HOME`, each `$XDG_DATA_DIRS` entry and the data
//! dir, each under `xdg-desktop-portal/portals`; the first file of a name
//! wins. The choice among them comes from the first `DESKTOP-portals.conf`
//! (for each entry of `$XDG_CURRENT_DESKTOP`, lower-cased) or
//! `portals.conf` found in `$XDG_DESKTOP_PORTAL_DIR` alone, else in
//! `$XDG_CONFIG_HOME`, `$XDG_CONFIG_DIRS`, `/etc`, `$XDG_DATA_HOME`,
//! `$XDG_DATA_DIRS`, the data dir (each under `xdg-desktop-portal/`): its
//! `[preferred]` group names backends per interface and as `default`
//! (`none` for no backend, `*` for any). Without a match, a backend whose
//! `UseIn` names a current desktop, and last xdg-desktop-portal-gtk.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use porthole_identity::KeyFile;

const SUBDIR: &str = "xdg-desktop-portal";
const GTK_BACKEND: &str = "org.freedesktop.impl.portal.desktop.gtk";

/// One `.portal` file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Backend {
    /// The file name without `.portal`: what portals.conf names.
    pub source: String,
    pub dbus_name: String,
    pub interfaces: Vec<String>,
    pub use_in: Vec<String>,
}

impl Backend {
    fn supports(&self, interface: &str) -> bool {
        self.interfaces.iter().any(|i| i == interface)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum BackendFileError {
    #[error("reading {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Invalid { path: PathBuf, message: String },
}

/// Where to look, from the environment.
#[derive(Debug, Clone, Default)]
pub struct SearchDirs {
    /// `$XDG_DESKTOP_PORTAL_DIR`: when set, the only place searched.
    pub portal_dir: Option<PathBuf>,
    pub config_home: PathBuf,
    pub config_dirs: Vec<PathBuf>,
    pub sysconf_dir: PathBuf,
    pub data_home: PathBuf,
    pub data_dirs: Vec<PathBuf>,
    pub data_dir: PathBuf,
    /// `$XDG_CURRENT_DESKTOP` entries, valid ones only, lower-cased.
    pub desktops: Vec<String>,
}

impl SearchDirs {
    /// The directories as GLib computes them from the environment.
    pub fn from_env() -> Self {
        let var = |name: &str| std::env::var_os(name).filter(|v| !v.is_empty());
        let home = var("HOME").map(PathBuf::from).unwrap_or_else(|| "/".into());
        let list = |name: &str, default: &str| -> Vec<PathBuf> {
            let value = var(name)
                .map(|v| v.to_string_lossy().into_owned())
                .unwrap_or_else(|| default.to_owned());
            value
                .split(':')
                .filter(|s| !s.is_empty())
                .map(PathBuf::from)
                .collect()
        };
        Self {
            portal_dir: std::env::var_os("XDG_DESKTOP_PORTAL_DIR").map(PathBuf::from),
            config_home: var("XDG_CONFIG_HOME")
                .map(PathBuf::from)
                .unwrap_or_else(|| home.join(".config")),
            config_dirs: list("XDG_CONFIG_DIRS", "/etc/xdg"),
            sysconf_dir: "/etc".into(),
            data_home: var("XDG_DATA_HOME")
                .map(PathBuf::from)
                .unwrap_or_else(|| home.join(".local/share")),
            data_dirs: list("XDG_DATA_DIRS", "/usr/local/share/:/usr/share/"),
            data_dir: "/usr/share".into(),
            desktops: current_desktops(&std::env::var("XDG_CURRENT_DESKTOP").unwrap_or_default()),
        }
    }
}

/// `XDG_CURRENT_DESKTOP`'s valid entries (alphanumerics, `-`, `_`),
/// lower-cased: they become file names.
pub fn current_desktops(value: &str) -> Vec<String> {
    value
        .split(':')
        .filter(|d| {
            !d.is_empty()
                && d.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        })
        .map(str::to_ascii_lowercase)
        .collect()
}

/// A `[preferred]` group.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Preferred {
    pub file: PathBuf,
    pub default: Option<Vec<String>>,
    pub interfaces: HashMap<String, Vec<String>>,
}

/// The backends found and the configuration that chooses among them.
#[derive(Debug, Clone, Default)]
pub struct PortalConfig {
    /// Sorted as upstream sorts: backends whose `UseIn` names the first
    /// current desktop first, then by source name.
    pub backends: Vec<Backend>,
    pub preferred: Option<Preferred>,
    pub desktops: Vec<String>,
}

impl PortalConfig {
    pub fn load(dirs: &SearchDirs) -> Self {
        let backends = load_backends(dirs);
        let preferred = load_preferred(dirs);
        let mut config = Self {
            backends,
            preferred,
            desktops: dirs.desktops.clone(),
        };
        config.sort();
        config
    }

    fn sort(&mut self) {
        let desktops = self.desktops.clone();
        self.backends.sort_by(|a, b| {
            for desktop in &desktops {
                let in_a = a.use_in.iter().any(|u| u.eq_ignore_ascii_case(desktop));
                let in_b = b.use_in.iter().any(|u| u.eq_ignore_ascii_case(desktop));
                if in_a != in_b {
                    return in_b.cmp(&in_a);
                }
                if in_a {
                    break;
                }
            }
            a.source.cmp(&b.source)
        });
    }

    fn by_name(&self, source: &str) -> Option<&Backend> {
        self.backends.iter().find(|b| b.source == source)
    }

    fn any_for(&self, interface: &str) -> Option<&Backend> {
        self.backends.iter().find(|b| b.supports(interface))
    }

    /// The backend for `interface`, or None (no backend, or `none`).
    pub fn find(&self, interface: &str) -> Option<&Backend> {
        if let Some(pref) = &self.preferred {
            let listed = pref.interfaces.get(interface);
            let prefers_none = match listed {
                Some(names) => names.iter().any(|n| n == "none"),
                None => pref
                    .default
                    .as_ref()
                    .is_some_and(|names| names.iter().any(|n| n == "none")),
            };
            if prefers_none {
                return None;
            }
            let from_list = |names: &Vec<String>, strict: bool| -> Option<&Backend> {
                for name in names {
                    if name == "*" {
                        return self.any_for(interface);
                    }
                    match self.by_name(name) {
                        Some(b) if b.supports(interface) => return Some(b),
                        Some(b) if strict => tracing::info!(
                            "requested backend {}.portal does not support {interface}; skipping",
                            b.source
                        ),
                        None if strict => {
                            tracing::info!("requested backend {name} does not exist; skipping")
                        }
                        _ => {}
                    }
                }
                None
            };
            let found = listed
                .and_then(|names| from_list(names, true))
                .or_else(|| pref.default.as_ref().and_then(|n| from_list(n, false)));
            if let Some(b) = found {
                tracing::debug!("using {}.portal for {interface} (config)", b.source);
                return Some(b);
            }
        }
        for desktop in &self.desktops {
            if let Some(b) = self.backends.iter().find(|b| {
                b.supports(interface) && b.use_in.iter().any(|u| u.eq_ignore_ascii_case(desktop))
            }) {
                tracing::warn!(
                    "choosing {}.portal for {interface} via the deprecated UseIn key",
                    b.source
                );
                return Some(b);
            }
        }
        let gtk = self
            .backends
            .iter()
            .find(|b| b.dbus_name == GTK_BACKEND && b.supports(interface));
        if let Some(b) = gtk {
            tracing::warn!(
                "choosing {}.portal for {interface} as a last-resort fallback",
                b.source
            );
        }
        gtk
    }
}

impl PortalConfig {
    /// Every backend for `interface`, in upstream's order
    /// (`xdp_portal_config_find_all_impls`, for Settings): those the
    /// interface's key lists, else the default's, else those whose `UseIn`
    /// names a current desktop, else xdg-desktop-portal-gtk.
    pub fn find_all<'a>(&'a self, interface: &str) -> Vec<&'a Backend> {
        let mut found: Vec<&Backend> = Vec::new();
        let add_listed = |names: &Vec<String>, found: &mut Vec<&'a Backend>| {
            for name in names {
                for b in &self.backends {
                    if (b.source == *name || name == "*")
                        && b.supports(interface)
                        && !found.iter().any(|f| f.source == b.source)
                    {
                        found.push(b);
                    }
                }
            }
        };
        if let Some(pref) = &self.preferred {
            match pref.interfaces.get(interface) {
                Some(names) if names.iter().any(|n| n == "none") => return found,
                None if pref
                    .default
                    .as_ref()
                    .is_some_and(|names| names.iter().any(|n| n == "none")) =>
                {
                    return found;
                }
                Some(names) => add_listed(names, &mut found),
                None => {}
            }
            if found.is_empty()
                && let Some(names) = &pref.default
            {
                add_listed(names, &mut found);
            }
            if !found.is_empty() {
                return found;
            }
        }
        for desktop in &self.desktops {
            for b in &self.backends {
                if b.supports(interface)
                    && b.use_in.iter().any(|u| u.eq_ignore_ascii_case(desktop))
                    && !found.iter().any(|f| f.source == b.source)
                {
                    found.push(b);
                }
            }
        }
        if found.is_empty()
            && let Some(gtk) = self
                .backends
                .iter()
                .find(|b| b.dbus_name == GTK_BACKEND && b.supports(interface))
        {
            found.push(gtk);
        }
        found
    }
}

/// Reads one `.portal` file.
pub fn read_backend(path: &Path) -> Result<Backend, BackendFileError> {
    let invalid = |message: String| BackendFileError::Invalid {
        path: path.to_owned(),
        message,
    };
    let text = std::fs::read_to_string(path).map_err(|source| BackendFileError::Read {
        path: path.to_owned(),
        source,
    })?;
    let kf = KeyFile::parse(&text).map_err(|e| invalid(e.to_string()))?;
    let source = path
        .file_name()
        .and_then(|n| n.to_str())
        .and_then(|n| n.strip_suffix(".portal"))
        .ok_or_else(|| invalid("not a .portal file name".into()))?
        .to_owned();
    let dbus_name = kf
        .get("portal", "DBusName")
        .ok_or_else(|| invalid("no DBusName in [portal]".into()))?;
    if zbus::names::BusName::try_from(dbus_name.as_str()).is_err() {
        return Err(invalid(format!("not a valid bus name: {dbus_name}")));
    }
    let interfaces = kf
        .get_list("portal", "Interfaces")
        .ok_or_else(|| invalid("no Interfaces in [portal]".into()))?;
    for iface in &interfaces {
        if zbus::names::InterfaceName::try_from(iface.as_str()).is_err() {
            return Err(invalid(format!("not a valid interface name: {iface}")));
        }
        if !iface.starts_with("org.freedesktop.impl.portal.") {
            return Err(invalid(format!("not a portal backend interface: {iface}")));
        }
    }
    Ok(Backend {
        source,
        dbus_name,
        interfaces,
        use_in: kf.get_list("portal", "UseIn").unwrap_or_default(),
    })
}

fn load_backends(dirs: &SearchDirs) -> Vec<Backend> {
    let search: Vec<PathBuf> = match &dirs.portal_dir {
        Some(dir) => vec![dir.clone()],
        None => std::iter::once(dirs.data_home.join(SUBDIR).join("portals"))
            .chain(
                dirs.data_dirs
                    .iter()
                    .map(|d| d.join(SUBDIR).join("portals")),
            )
            .chain(std::iter::once(dirs.data_dir.join(SUBDIR).join("portals")))
            .collect(),
    };
    let mut found: Vec<Backend> = Vec::new();
    for dir in search {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        tracing::debug!("loading portals from {}", dir.display());
        let mut paths: Vec<PathBuf> = entries
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|e| e == "portal"))
            .collect();
        paths.sort();
        for path in paths {
            match read_backend(&path) {
                Ok(b) if found.iter().any(|f| f.source == b.source) => {
                    tracing::debug!("skipping duplicate source {}", b.source);
                }
                Ok(b) => found.push(b),
                Err(e) => tracing::warn!("error loading {e}"),
            }
        }
    }
    found
}

fn load_preferred(dirs: &SearchDirs) -> Option<Preferred> {
    let search: Vec<PathBuf> = match &dirs.portal_dir {
        Some(dir) => vec![dir.clone()],
        None => std::iter::once(dirs.config_home.join(SUBDIR))
            .chain(dirs.config_dirs.iter().map(|d| d.join(SUBDIR)))
            .chain(std::iter::once(dirs.sysconf_dir.join(SUBDIR)))
            .chain(std::iter::once(dirs.data_home.join(SUBDIR)))
            .chain(dirs.data_dirs.iter().map(|d| d.join(SUBDIR)))
            .chain(std::iter::once(dirs.data_dir.join(SUBDIR)))
            .collect(),
    };
    for dir in search {
        let names = dirs
            .desktops
            .iter()
            .map(|d| format!("{d}-portals.conf"))
            .chain(std::iter::once("portals.conf".to_owned()));
        for name in names {
            if let Some(pref) = read_preferred(&dir.join(name)) {
                tracing::debug!("using portal configuration {}", pref.file.display());
                return Some(pref);
            }
        }
    }
    None
}

/// A portals.conf's `[preferred]` group; None when the file is missing,
/// unreadable or has no keys there (upstream then looks further).
pub fn read_preferred(path: &Path) -> Option<Preferred> {
    let text = std::fs::read_to_string(path).ok()?;
    let kf = match KeyFile::parse(&text) {
        Ok(kf) => kf,
        Err(e) => {
            tracing::warn!("{}: {e}", path.display());
            return None;
        }
    };
    let keys = kf.keys("preferred");
    if keys.is_empty() {
        return None;
    }
    let mut pref = Preferred {
        file: path.to_owned(),
        ..Preferred::default()
    };
    for key in keys {
        let Some(list) = kf.get_list("preferred", key) else {
            tracing::error!(
                "invalid portals for interface '{key}' in {}",
                path.display()
            );
            return None;
        };
        if key == "default" {
            if pref.default.is_none() {
                pref.default = Some(list);
            } else {
                tracing::warn!("duplicate default key will get ignored");
            }
        } else {
            pref.interfaces.insert(key.to_owned(), list);
        }
    }
    Some(pref)
}

#[cfg(test)]
mod tests {
    use super::*;

    const FC: &str = "org.freedesktop.impl.portal.FileChooser";
    const ACCESS: &str = "org.freedesktop.impl.portal.Access";

    fn write(path: &Path, text: &str) {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
    }

    fn portal(dir: &Path, source: &str, name: &str, ifaces: &str, use_in: &str) {
        let mut text = format!("[portal]\nDBusName={name}\nInterfaces={ifaces}\n");
        if !use_in.is_empty() {
            text.push_str(&format!("UseIn={use_in}\n"));
        }
        write(&dir.join(format!("{source}.portal")), &text);
    }

    fn dirs(root: &Path) -> SearchDirs {
        SearchDirs {
            portal_dir: None,
            config_home: root.join("config"),
            config_dirs: vec![root.join("xdg-etc")],
            sysconf_dir: root.join("etc"),
            data_home: root.join("data"),
            data_dirs: vec![root.join("share1"), root.join("share2")],
            data_dir: root.join("usr-share"),
            desktops: vec![],
        }
    }

    #[test]
    fn the_portal_dir_alone_is_searched_when_set() {
        let root = tempfile::tempdir().unwrap();
        let r = root.path();
        portal(
            &r.join("test"),
            "mine",
            "org.example.Mine",
            &format!("{FC};"),
            "",
        );
        portal(
            &r.join("share1/xdg-desktop-portal/portals"),
            "other",
            "org.example.Other",
            FC,
            "",
        );
        write(&r.join("test/portals.conf"), "[preferred]\ndefault=mine\n");
        write(
            &r.join("config/xdg-desktop-portal/portals.conf"),
            "[preferred]\ndefault=other\n",
        );
        let mut d = dirs(r);
        d.portal_dir = Some(r.join("test"));
        let config = PortalConfig::load(&d);
        assert_eq!(config.backends.len(), 1);
        assert_eq!(config.find(FC).unwrap().dbus_name, "org.example.Mine");
        assert_eq!(config.find(ACCESS), None);
    }

    #[test]
    fn first_portal_file_of_a_name_wins_and_config_order_is_upstreams() {
        let root = tempfile::tempdir().unwrap();
        let r = root.path();
        portal(
            &r.join("data/xdg-desktop-portal/portals"),
            "a",
            "org.example.AUser",
            FC,
            "",
        );
        portal(
            &r.join("share1/xdg-desktop-portal/portals"),
            "a",
            "org.example.ASystem",
            FC,
            "",
        );
        portal(
            &r.join("share2/xdg-desktop-portal/portals"),
            "b",
            "org.example.B",
            &format!("{FC};{ACCESS}"),
            "",
        );
        // The data dirs' config loses to /etc's, which loses to the user's.
        write(
            &r.join("share1/xdg-desktop-portal/portals.conf"),
            "[preferred]\ndefault=a\n",
        );
        write(
            &r.join("etc/xdg-desktop-portal/portals.conf"),
            "[preferred]\ndefault=b\n",
        );
        let d = dirs(r);
        let config = PortalConfig::load(&d);
        assert_eq!(config.by_name("a").unwrap().dbus_name, "org.example.AUser");
        assert_eq!(config.find(FC).unwrap().source, "b");
        write(
            &r.join("config/xdg-desktop-portal/portals.conf"),
            &format!("[preferred]\ndefault=b\n{FC}=a\n"),
        );
        let config = PortalConfig::load(&d);
        assert_eq!(config.find(FC).unwrap().source, "a");
        assert_eq!(config.find(ACCESS).unwrap().source, "b");
    }

    #[test]
    fn desktop_specific_config_comes_first_in_a_directory() {
        let root = tempfile::tempdir().unwrap();
        let r = root.path();
        portal(&r.join("p"), "a", "org.example.A", FC, "");
        portal(&r.join("p"), "b", "org.example.B", FC, "");
        write(&r.join("p/portals.conf"), "[preferred]\ndefault=a\n");
        write(&r.join("p/kde-portals.conf"), "[preferred]\ndefault=b\n");
        let mut d = dirs(r);
        d.portal_dir = Some(r.join("p"));
        d.desktops = current_desktops("KDE:not/valid");
        assert_eq!(d.desktops, vec!["kde"]);
        assert_eq!(PortalConfig::load(&d).find(FC).unwrap().source, "b");
        d.desktops = current_desktops("GNOME");
        assert_eq!(PortalConfig::load(&d).find(FC).unwrap().source, "a");
    }

    #[test]
    fn none_star_use_in_and_the_gtk_fallback() {
        let root = tempfile::tempdir().unwrap();
        let r = root.path();
        let p = r.join("p");
        portal(&p, "gtk", GTK_BACKEND, &format!("{FC};{ACCESS}"), "gnome");
        portal(&p, "porthole", "org.example.Porthole", FC, "porthole");
        let mut d = dirs(r);
        d.portal_dir = Some(p.clone());
        // No config, no desktop: gtk as the last resort.
        assert_eq!(PortalConfig::load(&d).find(FC).unwrap().source, "gtk");
        // UseIn matches the current desktop.
        d.desktops = vec!["porthole".into()];
        assert_eq!(PortalConfig::load(&d).find(FC).unwrap().source, "porthole");
        // none, per interface and as the default.
        write(
            &p.join("portals.conf"),
            &format!("[preferred]\ndefault=*\n{FC}=none\n"),
        );
        let config = PortalConfig::load(&d);
        assert_eq!(config.find(FC), None);
        // "*": the first installed in upstream's order (UseIn first).
        assert_eq!(config.find(ACCESS).unwrap().source, "gtk");
        write(&p.join("portals.conf"), "[preferred]\ndefault=none\n");
        assert_eq!(PortalConfig::load(&d).find(ACCESS), None);
        // A listed backend that lacks the interface is skipped.
        write(
            &p.join("portals.conf"),
            &format!("[preferred]\n{ACCESS}=porthole;gtk\n"),
        );
        assert_eq!(PortalConfig::load(&d).find(ACCESS).unwrap().source, "gtk");
    }

    #[test]
    fn all_backends_of_an_interface_in_upstreams_order() {
        const SETTINGS: &str = "org.freedesktop.impl.portal.Settings";
        let root = tempfile::tempdir().unwrap();
        let p = root.path().join("p");
        portal(&p, "a", "org.example.A", SETTINGS, "");
        portal(&p, "b", "org.example.B", SETTINGS, "x");
        portal(&p, "c", "org.example.C", FC, "x");
        let mut d = dirs(root.path());
        d.portal_dir = Some(p.clone());
        let names = |c: &PortalConfig| -> Vec<String> {
            c.find_all(SETTINGS)
                .iter()
                .map(|b| b.source.clone())
                .collect()
        };
        // No config, no desktop: nothing (no gtk either).
        assert!(names(&PortalConfig::load(&d)).is_empty());
        d.desktops = vec!["x".into()];
        assert_eq!(names(&PortalConfig::load(&d)), ["b"]);
        write(
            &p.join("portals.conf"),
            &format!("[preferred]\n{SETTINGS}=b;c;a\n"),
        );
        assert_eq!(names(&PortalConfig::load(&d)), ["b", "a"]);
        write(&p.join("portals.conf"), "[preferred]\ndefault=*\n");
        assert_eq!(
            names(&PortalConfig::load(&d)),
            ["b", "a"],
            "UseIn sorts first"
        );
        write(
            &p.join("portals.conf"),
            &format!("[preferred]\ndefault=a\n{SETTINGS}=none\n"),
        );
        assert!(names(&PortalConfig::load(&d)).is_empty());
    }

    #[test]
    fn bad_portal_files_are_refused() {
        let root = tempfile::tempdir().unwrap();
        let p = root.path();
        for (name, text) in [
            ("nobus.portal", format!("[portal]\nInterfaces={FC}\n")),
            (
                "badbus.portal",
                format!("[portal]\nDBusName=not a name\nInterfaces={FC}\n"),
            ),
            (
                "noifaces.portal",
                "[portal]\nDBusName=org.example.X\n".into(),
            ),
            (
                "notimpl.portal",
                "[portal]\nDBusName=org.example.X\nInterfaces=org.example.Y\n".into(),
            ),
        ] {
            write(&p.join(name), &text);
            assert!(read_backend(&p.join(name)).is_err(), "{name}");
        }
        let mut d = dirs(p);
        d.portal_dir = Some(p.to_owned());
        assert!(PortalConfig::load(&d).backends.is_empty());
    }
}
