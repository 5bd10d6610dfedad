//! What the app was granted, in Flatpak's vocabulary: parsed from the
//! command line and from an app directory's `metadata` keyfile (`[Context]`,
//! `[Session Bus Policy]`, `[Environment]`); command-line options override it.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use porthole_identity::KeyFile;

use crate::plan::Access;
pub use crate::seccomp::Features;

/// A session socket the app may get.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Socket {
    Wayland,
    PulseAudio,
    X11,
}

impl Socket {
    pub fn name(self) -> &'static str {
        match self {
            Socket::Wayland => "wayland",
            Socket::PulseAudio => "pulseaudio",
            Socket::X11 => "x11",
        }
    }
}

/// Errors in permission values.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PermissionError {
    #[error("--socket={0}: unknown socket (known: wayland, pulseaudio, x11)")]
    UnknownSocket(String),
    #[error("--share={0}: unknown (known: network)")]
    UnknownShare(String),
    #[error("--filesystem={0}: expected PATH, PATH:ro or PATH:rw with an absolute or ~/ path")]
    BadFilesystem(String),
    #[error("--env={0}: expected KEY=VALUE")]
    BadEnv(String),
    #[error("--env={0}: this variable is never passed into the sandbox")]
    ForbiddenEnv(String),
    #[error("{0}: expected a size like 512M, 2G or a number of bytes")]
    BadSize(String),
    #[error("--pids-max={0}: expected a positive number")]
    BadCount(String),
    #[error(
        "--allow={0}: Flatpak's feature {0:?} is not implemented by porthole yet (implemented: multiarch, devel)"
    )]
    AllowNotImplemented(String),
    #[error("--allow={0}: unknown feature (known: multiarch, devel)")]
    UnknownAllow(String),
    #[error("metadata file {path}: {reason}")]
    Metadata { path: PathBuf, reason: String },
}

/// A `--filesystem` grant as written (before resolution on the host).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FilesystemGrant {
    pub path: PathBuf,
    pub access: Access,
}

/// Everything the app may use.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Permissions {
    pub network: bool,
    /// `network=ask` in the metadata's `[Context]`: at launch the user is
    /// asked (through the portal, id `*` of table `network`) whether the app
    /// may use the network at all; without a yes it runs as without
    /// `network`.
    pub network_ask: bool,
    pub sockets: BTreeSet<Socket>,
    pub filesystems: Vec<FilesystemGrant>,
    pub env: Vec<(String, String)>,
    pub talk_names: Vec<String>,
    pub own_names: Vec<String>,
    pub see_names: Vec<String>,
    /// System-bus grants (`--system-talk-name` etc., `[System Bus Policy]`):
    /// the sandbox gets a system bus only when one of these is set.
    pub system_talk_names: Vec<String>,
    pub system_own_names: Vec<String>,
    pub system_see_names: Vec<String>,
    /// `--allow` / `features=`: multiarch, devel.
    pub features: Features,
}

pub fn parse_socket(s: &str) -> Result<Socket, PermissionError> {
    match s {
        "wayland" => Ok(Socket::Wayland),
        "pulseaudio" => Ok(Socket::PulseAudio),
        "x11" => Ok(Socket::X11),
        other => Err(PermissionError::UnknownSocket(other.to_owned())),
    }
}

pub fn parse_share(s: &str) -> Result<bool, PermissionError> {
    match s {
        "network" => Ok(true),
        other => Err(PermissionError::UnknownShare(other.to_owned())),
    }
}

/// Flatpak's `--allow` features that porthole does not provide yet: refused
/// by name rather than taken as unknown words.
const ALLOW_NOT_IMPLEMENTED: &[&str] = &["bluetooth", "canbus", "per-app-dev-shm"];

/// One `--allow=FEATURE` (Flatpak's vocabulary and meaning): `multiarch`
/// opens the i386 ABI under the same filter, `devel` allows ptrace and
/// perf_event_open within the sandbox.
pub fn parse_allow(s: &str, features: &mut Features) -> Result<(), PermissionError> {
    match s {
        "multiarch" => features.multiarch = true,
        "devel" => features.devel = true,
        other if ALLOW_NOT_IMPLEMENTED.contains(&other) => {
            return Err(PermissionError::AllowNotImplemented(other.to_owned()));
        }
        other => return Err(PermissionError::UnknownAllow(other.to_owned())),
    }
    Ok(())
}

/// The features as Flatpak writes them in `[Context] features=`.
pub fn feature_names(f: Features) -> Vec<&'static str> {
    let mut v = Vec::new();
    if f.devel {
        v.push("devel");
    }
    if f.multiarch {
        v.push("multiarch");
    }
    v
}

/// `PATH[:ro|:rw]`; `~/x` is relative to `home`.
pub fn parse_filesystem(s: &str, home: &Path) -> Result<FilesystemGrant, PermissionError> {
    let bad = || PermissionError::BadFilesystem(s.to_owned());
    let (path, access) = match s.rsplit_once(':') {
        Some((p, "ro")) => (p, Access::ReadOnly),
        Some((p, "rw")) | Some((p, "create")) => (p, Access::ReadWrite),
        _ => (s, Access::ReadWrite),
    };
    let path = if let Some(rest) = path.strip_prefix("~/") {
        home.join(rest)
    } else if path.starts_with('/') {
        PathBuf::from(path)
    } else {
        return Err(bad());
    };
    Ok(FilesystemGrant { path, access })
}

/// Variables that `--env` may not set: they change what code runs or which
/// bus the app talks to (DESIGN.md: never LD_PRELOAD or the host's bus).
pub fn env_forbidden(key: &str) -> bool {
    key.starts_with("LD_") || key == "DBUS_SESSION_BUS_ADDRESS" || key == "DBUS_SYSTEM_BUS_ADDRESS"
}

pub fn parse_env(s: &str) -> Result<(String, String), PermissionError> {
    let (k, v) = s
        .split_once('=')
        .ok_or_else(|| PermissionError::BadEnv(s.to_owned()))?;
    // The key is also written to `/.flatpak-info`, which every portal must
    // still be able to read.
    if !KeyFile::is_writable_key(k) || v.contains('\0') {
        return Err(PermissionError::BadEnv(s.to_owned()));
    }
    if env_forbidden(k) {
        return Err(PermissionError::ForbiddenEnv(s.to_owned()));
    }
    Ok((k.to_owned(), v.to_owned()))
}

/// `512M`, `2G`, `1048576`, `64k` (powers of 1024, as systemd's MemoryMax).
pub fn parse_size(s: &str) -> Result<u64, PermissionError> {
    let bad = || PermissionError::BadSize(s.to_owned());
    let (num, mult) = match s.chars().last().ok_or_else(bad)? {
        'k' | 'K' => (&s[..s.len() - 1], 1u64 << 10),
        'm' | 'M' => (&s[..s.len() - 1], 1 << 20),
        'g' | 'G' => (&s[..s.len() - 1], 1 << 30),
        't' | 'T' => (&s[..s.len() - 1], 1 << 40),
        _ => (s, 1),
    };
    let n: u64 = num.parse().map_err(|_| bad())?;
    let v = n.checked_mul(mult).ok_or_else(bad)?;
    if v == 0 {
        return Err(bad());
    }
    Ok(v)
}

pub fn parse_count(s: &str) -> Result<u64, PermissionError> {
    match s.parse::<u64>() {
        Ok(n) if n > 0 => Ok(n),
        _ => Err(PermissionError::BadCount(s.to_owned())),
    }
}

impl Permissions {
    /// Reads the `[Context]`, `[Session Bus Policy]` and `[Environment]`
    /// groups of a Flatpak metadata keyfile.
    pub fn from_metadata(text: &str, path: &Path, home: &Path) -> Result<Self, PermissionError> {
        let meta = |reason: String| PermissionError::Metadata {
            path: path.to_owned(),
            reason,
        };
        let kf = KeyFile::parse(text).map_err(|e| meta(e.to_string()))?;
        let mut p = Permissions::default();
        for item in kf.get_list("Context", "shared").unwrap_or_default() {
            // "ipc" is accepted and ignored: every sandbox has its own.
            if item == "network" {
                p.network = true;
            }
        }
        p.network_ask = kf.get("Context", "network").as_deref() == Some("ask");
        for item in kf.get_list("Context", "sockets").unwrap_or_default() {
            // Flatpak has more sockets (fallback-x11, session-bus, ...);
            // those we do not provide are ignored, never widened.
            if let Ok(s) = parse_socket(&item) {
                p.sockets.insert(s);
            }
        }
        for item in kf.get_list("Context", "features").unwrap_or_default() {
            // Features we do not provide (bluetooth, canbus, ...) are
            // ignored, never widened; "!devel" and the like revoke nothing
            // here because nothing else granted them.
            let _ = parse_allow(&item, &mut p.features);
        }
        for item in kf.get_list("Context", "filesystems").unwrap_or_default() {
            // Only explicit paths; symbolic names (home, host, xdg-*) are
            // not granted from metadata.
            if item.starts_with('/') || item.starts_with("~/") {
                p.filesystems
                    .push(parse_filesystem(&item, home).map_err(|e| meta(e.to_string()))?);
            }
        }
        for key in kf.keys("Session Bus Policy") {
            let value = kf.get("Session Bus Policy", key).unwrap_or_default();
            let list = match value.as_str() {
                "talk" => &mut p.talk_names,
                "own" => &mut p.own_names,
                "see" => &mut p.see_names,
                _ => continue,
            };
            list.push(key.to_owned());
        }
        for key in kf.keys("System Bus Policy") {
            let value = kf.get("System Bus Policy", key).unwrap_or_default();
            let list = match value.as_str() {
                "talk" => &mut p.system_talk_names,
                "own" => &mut p.system_own_names,
                "see" => &mut p.system_see_names,
                _ => continue,
            };
            list.push(key.to_owned());
        }
        for key in kf.keys("Environment") {
            let value = kf.get("Environment", key).unwrap_or_default();
            if !env_forbidden(key) {
                p.env.push((key.to_owned(), value));
            }
        }
        Ok(p)
    }

    /// Command-line grants on top of metadata ones.
    pub fn merge(mut self, cli: Permissions) -> Permissions {
        self.network |= cli.network;
        self.features.multiarch |= cli.features.multiarch;
        self.features.devel |= cli.features.devel;
        self.sockets.extend(cli.sockets);
        for fs in cli.filesystems {
            self.filesystems.retain(|f| f.path != fs.path);
            self.filesystems.push(fs);
        }
        for (k, v) in cli.env {
            self.env.retain(|(key, _)| *key != k);
            self.env.push((k, v));
        }
        self.talk_names.extend(cli.talk_names);
        self.own_names.extend(cli.own_names);
        self.see_names.extend(cli.see_names);
        self.system_talk_names.extend(cli.system_talk_names);
        self.system_own_names.extend(cli.system_own_names);
        self.system_see_names.extend(cli.system_see_names);
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filesystem_specs() {
        let home = Path::new("/home/u");
        assert_eq!(
            parse_filesystem("/srv/x:ro", home).unwrap(),
            FilesystemGrant {
                path: "/srv/x".into(),
                access: Access::ReadOnly
            }
        );
        assert_eq!(
            parse_filesystem("~/Music", home).unwrap().path,
            PathBuf::from("/home/u/Music")
        );
        assert_eq!(
            parse_filesystem("/a:b", home).unwrap().path,
            PathBuf::from("/a:b")
        );
        assert!(parse_filesystem("relative", home).is_err());
        assert!(parse_filesystem("home", home).is_err());
    }

    #[test]
    fn env_and_sizes() {
        assert_eq!(parse_env("A=b=c").unwrap(), ("A".into(), "b=c".into()));
        assert!(matches!(
            parse_env("LD_PRELOAD=/x.so"),
            Err(PermissionError::ForbiddenEnv(_))
        ));
        assert!(matches!(
            parse_env("DBUS_SESSION_BUS_ADDRESS=unix:path=/x"),
            Err(PermissionError::ForbiddenEnv(_))
        ));
        assert!(parse_env("novalue").is_err());
        for bad in ["=x", " A=x", "A[x=1", "#A=1", "A\nB=1"] {
            assert!(
                matches!(parse_env(bad), Err(PermissionError::BadEnv(_))),
                "{bad:?}"
            );
        }
        assert_eq!(parse_size("64M").unwrap(), 64 << 20);
        assert_eq!(parse_size("1G").unwrap(), 1 << 30);
        assert_eq!(parse_size("4096").unwrap(), 4096);
        assert!(parse_size("0").is_err());
        assert!(parse_size("M").is_err());
        assert!(parse_size("12Q").is_err());
        assert_eq!(parse_count("16").unwrap(), 16);
        assert!(parse_count("0").is_err());
    }

    #[test]
    fn allow_vocabulary() {
        let mut f = Features::default();
        parse_allow("devel", &mut f).unwrap();
        assert_eq!(
            f,
            Features {
                devel: true,
                multiarch: false
            }
        );
        parse_allow("multiarch", &mut f).unwrap();
        assert!(f.multiarch);
        assert_eq!(feature_names(f), ["devel", "multiarch"]);
        for name in ["bluetooth", "canbus", "per-app-dev-shm"] {
            let e = parse_allow(name, &mut f).unwrap_err();
            assert_eq!(e, PermissionError::AllowNotImplemented(name.into()));
            assert!(e.to_string().contains("not implemented"), "{e}");
        }
        assert_eq!(
            parse_allow("everything", &mut f).unwrap_err(),
            PermissionError::UnknownAllow("everything".into())
        );
    }

    #[test]
    fn metadata_context_then_cli_override() {
        let text = "[Application]\nname=org.example.App\n\n[Context]\nfeatures=multiarch;bluetooth;\nshared=network;ipc;\nsockets=wayland;fallback-x11;\nfilesystems=/srv/data:ro;home;\n\n[Session Bus Policy]\norg.example.Svc=talk\n\n[System Bus Policy]\norg.freedesktop.login1=talk\n\n[Environment]\nFOO=bar\nLD_PRELOAD=/evil.so\n";
        let home = Path::new("/home/u");
        let m = Permissions::from_metadata(text, Path::new("metadata"), home).unwrap();
        assert!(m.network);
        assert_eq!(
            m.features,
            Features {
                multiarch: true,
                devel: false
            }
        );
        assert_eq!(m.sockets, BTreeSet::from([Socket::Wayland]));
        assert_eq!(m.filesystems.len(), 1);
        assert_eq!(m.talk_names, vec!["org.example.Svc".to_string()]);
        assert_eq!(
            m.system_talk_names,
            vec!["org.freedesktop.login1".to_string()]
        );
        assert_eq!(m.env, vec![("FOO".to_string(), "bar".to_string())]);
        let cli = Permissions {
            features: Features {
                multiarch: false,
                devel: true,
            },
            filesystems: vec![parse_filesystem("/srv/data", home).unwrap()],
            env: vec![("FOO".into(), "cli".into())],
            ..Default::default()
        };
        let merged = m.merge(cli);
        assert_eq!(merged.filesystems[0].access, Access::ReadWrite);
        assert!(merged.features.multiarch && merged.features.devel);
        assert_eq!(merged.env, vec![("FOO".to_string(), "cli".to_string())]);
    }

    #[test]
    fn network_ask_is_read_from_the_context() {
        let home = Path::new("/home/u");
        let path = Path::new("metadata");
        let ask = Permissions::from_metadata("[Context]\nnetwork=ask\n", path, home).unwrap();
        assert!(ask.network_ask && !ask.network);
        let other = Permissions::from_metadata("[Context]\nnetwork=yes\n", path, home).unwrap();
        assert!(!other.network_ask && !other.network);
    }
}
