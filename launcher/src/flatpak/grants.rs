//! From a merged Flatpak [`Context`] to what porthole's sandbox provides:
//! our [`Permissions`], extra binds (`persistent=`), variables to unset, and
//! the list of what we do not provide yet, which the launcher names in one
//! warning line (never dropped silently).
//!
//! Filesystem locations are resolved on the host as `flatpak run` resolves
//! them (flatpak_context_export): `home`, `host` (every directory in `/`
//! but the system ones, and `/run/media`), the XDG user directories from
//! `user-dirs.dirs` (one that is unset, or is the home itself, is skipped),
//! `xdg-config`/`xdg-data`/`xdg-cache`, `~/PATH`, `/PATH`; `:create` makes
//! the directory first; a location that does not exist is skipped, as
//! Flatpak skips it.

use std::path::{Path, PathBuf};

use super::context::{Context, DEVICES, FEATURES, FsMode, Policy, SHARES, SOCKETS};
use crate::permissions::{FilesystemGrant, Permissions, Socket};
use crate::plan::Access;

/// Flatpak's `dont_mount_in_root`: what `host` does not share.
const NOT_SHARED_BY_HOST: &[&str] = &[
    "app", "bin", "boot", "dev", "efi", "etc", "lib", "lib32", "lib64", "proc", "root", "run",
    "sbin", "sys", "tmp", "usr", "var",
];

/// The host directories locations are resolved against.
#[derive(Debug, Clone)]
pub struct HostDirs {
    pub home: PathBuf,
    pub config: PathBuf,
    pub data: PathBuf,
    pub cache: PathBuf,
    /// `XDG_*_DIR` from `user-dirs.dirs`, as (key, path).
    pub user_dirs: Vec<(String, PathBuf)>,
    /// The host's `$XDG_RUNTIME_DIR` (for `xdg-run/NAME`), and our uid:
    /// the sandbox's is `/run/user/UID`.
    pub runtime: Option<PathBuf>,
    pub uid: u32,
}

impl HostDirs {
    /// This process's: `$XDG_CONFIG_HOME` etc. (absolute ones only, as
    /// GLib) or their defaults under `home`, and `user-dirs.dirs` read as
    /// GLib reads it.
    pub fn current(home: &Path) -> HostDirs {
        let xdg = |k: &str, d: &str| {
            std::env::var_os(k)
                .map(PathBuf::from)
                .filter(|p| p.is_absolute())
                .unwrap_or_else(|| home.join(d))
        };
        let config = xdg("XDG_CONFIG_HOME", ".config");
        let user_dirs = std::fs::read_to_string(config.join("user-dirs.dirs"))
            .map(|t| parse_user_dirs(&t, home))
            .unwrap_or_default();
        HostDirs {
            home: home.to_owned(),
            data: xdg("XDG_DATA_HOME", ".local/share"),
            cache: xdg("XDG_CACHE_HOME", ".cache"),
            config,
            user_dirs,
            runtime: std::env::var_os("XDG_RUNTIME_DIR")
                .map(PathBuf::from)
                .filter(|p| p.is_absolute()),
            uid: nix::unistd::getuid().as_raw(),
        }
    }

    /// `g_get_user_special_dir`: the configured directory; without one,
    /// the desktop is `~/Desktop` and the others are unset.
    fn special(&self, key: &str) -> Option<PathBuf> {
        self.user_dirs
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, p)| p.clone())
            .or_else(|| (key == "XDG_DESKTOP_DIR").then(|| self.home.join("Desktop")))
    }
}

/// `user-dirs.dirs` lines `XDG_NAME_DIR="$HOME/x"` or `="/abs"`, as GLib
/// reads them.
pub fn parse_user_dirs(text: &str, home: &Path) -> Vec<(String, PathBuf)> {
    let mut out = Vec::new();
    for line in text.lines() {
        let line = line.trim_start();
        let Some((key, value)) = line.split_once('=') else {
            continue;
        };
        let key = key.trim();
        if !(key.starts_with("XDG_") && key.ends_with("_DIR")) {
            continue;
        }
        let v = value.trim();
        let Some(v) = v.strip_prefix('"').and_then(|v| v.strip_suffix('"')) else {
            continue;
        };
        let path = if let Some(rest) = v.strip_prefix("$HOME") {
            match rest.strip_prefix('/') {
                Some(r) => home.join(r),
                None if rest.is_empty() => home.to_owned(),
                None => continue,
            }
        } else if v.starts_with('/') {
            PathBuf::from(v)
        } else {
            continue;
        };
        out.push((key.to_owned(), path));
    }
    out
}

/// What the sandbox gets for a context.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Grants {
    pub permissions: Permissions,
    /// Extra binds (host source, sandbox destination, access).
    pub binds: Vec<(PathBuf, PathBuf, Access)>,
    /// Variables the app's environment must not have.
    pub unset_env: Vec<String>,
    /// What the context asks for that porthole does not provide yet.
    pub unsupported: Vec<String>,
    /// `sockets=fallback-x11`: X11 when no Wayland socket is given.
    pub fallback_x11: bool,
}

fn special_dir_key(prefix: &str) -> Option<&'static str> {
    Some(match prefix {
        "xdg-desktop" => "XDG_DESKTOP_DIR",
        "xdg-documents" => "XDG_DOCUMENTS_DIR",
        "xdg-download" => "XDG_DOWNLOAD_DIR",
        "xdg-music" => "XDG_MUSIC_DIR",
        "xdg-pictures" => "XDG_PICTURES_DIR",
        "xdg-public-share" => "XDG_PUBLICSHARE_DIR",
        "xdg-templates" => "XDG_TEMPLATES_DIR",
        "xdg-videos" => "XDG_VIDEOS_DIR",
        _ => return None,
    })
}

fn access(mode: FsMode) -> Access {
    if mode == FsMode::ReadOnly {
        Access::ReadOnly
    } else {
        Access::ReadWrite
    }
}

/// Resolves `ctx` for an app whose data directory is `app_data`.
pub fn grants(ctx: &Context, host: &HostDirs, app_data: &Path) -> Grants {
    let mut g = Grants::default();
    let p = &mut g.permissions;
    let mut unsupported = Vec::new();

    p.network = ctx.shares.has(SHARES, "network");
    if ctx.shares.has(SHARES, "ipc") {
        unsupported.push("shared=ipc".to_string());
    }
    for name in ctx.sockets.names(SOCKETS) {
        match name {
            "x11" => {
                p.sockets.insert(Socket::X11);
            }
            "wayland" => {
                p.sockets.insert(Socket::Wayland);
            }
            "pulseaudio" => {
                p.sockets.insert(Socket::PulseAudio);
            }
            // X11 only for an app that gets no Wayland socket: decided
            // where the host's sockets are looked up (launch::prepare).
            "fallback-x11" => g.fallback_x11 = true,
            other => unsupported.push(format!("sockets={other}")),
        }
    }
    for name in ctx.devices.names(DEVICES) {
        unsupported.push(format!("devices={name}"));
    }
    for name in ctx.features.names(FEATURES) {
        match name {
            "devel" => p.features.devel = true,
            "multiarch" => p.features.multiarch = true,
            other => unsupported.push(format!("features={other}")),
        }
    }

    let mut fs: Vec<(PathBuf, FsMode)> = Vec::new();
    let host_mode = ctx.filesystems.get("host").copied().unwrap_or(FsMode::None);
    if host_mode != FsMode::None {
        if let Ok(rd) = std::fs::read_dir("/") {
            let mut names: Vec<String> = rd
                .flatten()
                .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
                .filter_map(|e| e.file_name().into_string().ok())
                .filter(|n| !NOT_SHARED_BY_HOST.contains(&n.as_str()))
                .collect();
            names.sort();
            fs.extend(
                names
                    .into_iter()
                    .map(|n| (PathBuf::from("/").join(n), host_mode)),
            );
        }
        fs.push((PathBuf::from("/run/media"), host_mode));
    }
    for special in ["host-os", "host-etc"] {
        if ctx
            .filesystems
            .get(special)
            .is_some_and(|m| *m != FsMode::None)
        {
            unsupported.push(format!("filesystems={special}"));
        }
    }
    if host_mode != FsMode::None {
        unsupported.push("filesystems=host (the host's /usr and /etc at /run/host)".to_string());
    }
    if let Some(m) = ctx.filesystems.get("home").copied()
        && m != FsMode::None
    {
        fs.push((host.home.clone(), m.max(host_mode)));
    }
    for (loc, mode) in ctx.filesystems.iter() {
        let mode = *mode;
        if mode == FsMode::None || super::context::SPECIAL_FILESYSTEMS.contains(&loc) {
            continue;
        }
        let path = if let Some(rest) = loc.strip_prefix("~/") {
            host.home.join(rest)
        } else if loc.starts_with('/') {
            PathBuf::from(loc)
        } else {
            let (prefix, rest) = match loc.split_once('/') {
                Some((a, b)) => (a, b),
                None => (loc, ""),
            };
            let base = match prefix {
                "xdg-config" => Some(host.config.clone()),
                "xdg-data" => Some(host.data.clone()),
                "xdg-cache" => Some(host.cache.clone()),
                // $XDG_RUNTIME_DIR/NAME at /run/user/UID/NAME (a socket,
                // usually: pipewire-0, dconf, gvfsd).
                "xdg-run" => {
                    let src = host.runtime.as_ref().map(|r| r.join(rest));
                    match src {
                        Some(src) if !rest.is_empty() => {
                            if mode == FsMode::Create {
                                let _ = std::fs::create_dir_all(&src);
                            }
                            if std::fs::symlink_metadata(&src).is_err() {
                                continue;
                            }
                            if std::fs::canonicalize(&src).ok().as_ref() != Some(&src) {
                                unsupported.push(format!(
                                    "filesystems={loc} (a symbolic link or below one)"
                                ));
                                continue;
                            }
                            let dest = PathBuf::from(format!("/run/user/{}", host.uid)).join(rest);
                            g.binds.push((src, dest, access(mode)));
                        }
                        _ => unsupported.push(format!("filesystems={loc}")),
                    }
                    continue;
                }
                other => match special_dir_key(other) {
                    Some(key) => match host.special(key) {
                        // Unset, or set to the home itself (disabled):
                        // skipped, as Flatpak skips it.
                        None => continue,
                        Some(d) if d == host.home => continue,
                        Some(d) => Some(d),
                    },
                    None => None,
                },
            };
            let Some(base) = base else { continue };
            if rest.is_empty() {
                base
            } else {
                base.join(rest)
            }
        };
        fs.push((path, mode));
    }
    for (path, mode) in fs {
        if mode == FsMode::Create {
            let _ = std::fs::create_dir_all(&path);
        }
        if crate::plan::check_grant(&path).is_err() {
            unsupported.push(format!(
                "filesystems={} (reserved in porthole's sandbox)",
                path.display()
            ));
            continue;
        }
        if std::fs::symlink_metadata(&path).is_err() {
            tracing::info!(path = %path.display(), "not sharing a location that does not exist");
            continue;
        }
        // Our binds refuse symlinks anywhere on the path; Flatpak follows
        // them. Named, not silently widened or dropped.
        match std::fs::canonicalize(&path) {
            Ok(c) if c == path => {}
            _ => {
                unsupported.push(format!(
                    "filesystems={} (a symbolic link or below one)",
                    path.display()
                ));
                continue;
            }
        }
        let access = access(mode);
        match p.filesystems.iter_mut().find(|f| f.path == path) {
            Some(f) => {
                if access == Access::ReadWrite {
                    f.access = access;
                }
            }
            None => p.filesystems.push(FilesystemGrant { path, access }),
        }
    }

    for rel in &ctx.persistent {
        let src = app_data.join(rel);
        let _ = std::fs::create_dir_all(&src);
        // The app writes its data directory: a link it planted there
        // would make our bind fail (it refuses symlinks), so it is named
        // and skipped instead.
        if std::fs::canonicalize(&src).ok().as_ref() != Some(&src) {
            unsupported.push(format!(
                "persistent={rel} (not a directory of the app's data, or through a symbolic link)"
            ));
            continue;
        }
        g.binds.push((src, host.home.join(rel), Access::ReadWrite));
    }

    for (names, talk, own, see) in [
        (
            &ctx.session_bus,
            &mut p.talk_names,
            &mut p.own_names,
            &mut p.see_names,
        ),
        (
            &ctx.system_bus,
            &mut p.system_talk_names,
            &mut p.system_own_names,
            &mut p.system_see_names,
        ),
    ] {
        for (name, policy) in names.iter() {
            match policy {
                Policy::None => {}
                Policy::See => see.push(name.to_owned()),
                Policy::Talk => talk.push(name.to_owned()),
                Policy::Own => own.push(name.to_owned()),
            }
        }
    }

    for (k, v) in ctx.env.iter() {
        match v {
            Some(_) if crate::permissions::env_forbidden(k) => {
                unsupported.push(format!("environment {k} (never passed into the sandbox)"));
            }
            Some(v) => p.env.push((k.to_owned(), v.clone())),
            None => g.unset_env.push(k.to_owned()),
        }
    }
    for (k, _) in ctx.generic_policy.iter() {
        unsupported.push(format!("[Policy] {k}"));
    }
    g.unsupported = unsupported;
    g
}

#[cfg(test)]
mod tests {
    use super::*;
    use porthole_identity::KeyFile;

    #[test]
    fn user_dirs_as_glib_reads_them() {
        let t = "# comment\nXDG_DOCUMENTS_DIR=\"$HOME/Docs\"\nXDG_MUSIC_DIR=\"/srv/music\"\nXDG_VIDEOS_DIR=\"$HOME\"\nXDG_BAD_DIR=relative\n";
        let d = parse_user_dirs(t, Path::new("/home/u"));
        assert_eq!(
            d,
            vec![
                ("XDG_DOCUMENTS_DIR".into(), PathBuf::from("/home/u/Docs")),
                ("XDG_MUSIC_DIR".into(), PathBuf::from("/srv/music")),
                ("XDG_VIDEOS_DIR".into(), PathBuf::from("/home/u")),
            ]
        );
    }

    #[test]
    fn locations_resolve_and_unsupported_is_named() {
        let tmp = tempfile::tempdir().unwrap();
        let home = tmp.path().join("home");
        std::fs::create_dir_all(home.join("Docs/sub")).unwrap();
        std::fs::create_dir_all(home.join(".config/app")).unwrap();
        let host = HostDirs {
            home: home.clone(),
            config: home.join(".config"),
            data: home.join(".local/share"),
            cache: home.join(".cache"),
            user_dirs: vec![
                ("XDG_DOCUMENTS_DIR".into(), home.join("Docs")),
                ("XDG_VIDEOS_DIR".into(), home.clone()),
            ],
            runtime: None,
            uid: 1000,
        };
        let kf = KeyFile::parse(
            "[Context]\nshared=network;ipc;\nsockets=wayland;fallback-x11;ssh-auth;\ndevices=dri;\nfeatures=devel;bluetooth;\nfilesystems=xdg-documents/sub:ro;xdg-videos;xdg-config/app;~/missing;~/made:create;xdg-run/pipewire-0;/usr/share;\npersistent=.mozilla;\n\n[Session Bus Policy]\norg.a.B=talk\norg.c.D=own\norg.e.F=none\n\n[Environment]\nA=1\nLD_PRELOAD=/x.so\n\n[Context]\nunset-environment=TMPDIR;\n",
        )
        .unwrap();
        let ctx = Context::load(&kf).unwrap();
        let app_data = home.join(".var/app/org.x.Y");
        let g = grants(&ctx, &host, &app_data);
        // A link the app planted in its data is not followed.
        let planted =
            Context::load(&KeyFile::parse("[Context]\npersistent=.ssh;\n").unwrap()).unwrap();
        std::os::unix::fs::symlink(home.join("Docs"), app_data.join(".ssh")).unwrap();
        let p2 = grants(&planted, &host, &app_data);
        assert!(p2.binds.is_empty());
        assert_eq!(p2.unsupported.len(), 1, "{:?}", p2.unsupported);
        let p = &g.permissions;
        assert!(p.network);
        assert!(p.sockets.contains(&Socket::Wayland));
        assert!(!p.sockets.contains(&Socket::X11));
        assert!(g.fallback_x11);
        assert!(p.features.devel);
        let fs: Vec<(PathBuf, Access)> = p
            .filesystems
            .iter()
            .map(|f| (f.path.clone(), f.access))
            .collect();
        assert_eq!(
            fs,
            vec![
                (home.join("Docs/sub"), Access::ReadOnly),
                (home.join(".config/app"), Access::ReadWrite),
                (home.join("made"), Access::ReadWrite),
            ]
        );
        assert!(home.join("made").is_dir());
        assert_eq!(p.talk_names, ["org.a.B"]);
        assert_eq!(p.own_names, ["org.c.D"]);
        assert_eq!(p.env, [("A".to_string(), "1".to_string())]);
        assert_eq!(g.unset_env, ["TMPDIR"]);
        assert_eq!(
            g.binds,
            [(
                app_data.join(".mozilla"),
                home.join(".mozilla"),
                Access::ReadWrite
            )]
        );
        assert_eq!(
            g.unsupported,
            [
                "shared=ipc",
                "sockets=ssh-auth",
                "devices=dri",
                "features=bluetooth",
                "filesystems=xdg-run/pipewire-0",
                "filesystems=/usr/share (reserved in porthole's sandbox)",
                "environment LD_PRELOAD (never passed into the sandbox)",
            ]
        );
    }
}
