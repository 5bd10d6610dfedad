//! The sandbox's environment: cleared, then an allow-list (DESIGN.md). Never
//! LD_PRELOAD, LD_LIBRARY_PATH, or a bus address of the host.

use std::ffi::OsString;
use std::path::{Path, PathBuf};

/// The fixed PATH inside the sandbox.
pub const PATH: &str = "/app/bin:/usr/bin";

/// The host home as Flatpak reads it (GLib's `g_get_home_dir`): `$HOME`
/// when it is set and not empty, else the passwd entry's home (`passwd`,
/// asked only then), else `/`. The app's data, `~/.var/app/APP_ID`, lives
/// under it, and `~/` in `--filesystem` means it.
pub fn host_home(env_home: Option<OsString>, passwd: impl FnOnce() -> Option<PathBuf>) -> PathBuf {
    env_home
        .filter(|h| !h.is_empty())
        .map(PathBuf::from)
        .or_else(passwd)
        .unwrap_or_else(|| PathBuf::from("/"))
}

/// [`host_home`] for this process: its `$HOME`, else the passwd entry of
/// its real uid.
pub fn current_home() -> PathBuf {
    host_home(std::env::var_os("HOME"), || {
        nix::unistd::User::from_uid(nix::unistd::getuid())
            .ok()
            .flatten()
            .map(|u| u.dir)
    })
}

/// What the environment depends on.
#[derive(Debug, Clone)]
pub struct EnvInput<'a> {
    pub uid: u32,
    pub user: &'a str,
    pub home: &'a Path,
    pub app_data: &'a Path,
    pub wayland: bool,
    pub pulse: bool,
    pub x11_display: Option<u32>,
    /// The proxy's socket is at /run/user/UID/bus.
    pub session_bus: bool,
    /// The proxy's system-bus socket is at /run/dbus/system_bus_socket.
    pub system_bus: bool,
    /// `--env` and metadata `[Environment]`, already checked.
    pub extra: &'a [(String, String)],
}

/// Host variables passed through unchanged when set.
fn passes_through(key: &str) -> bool {
    matches!(key, "LANG" | "LANGUAGE" | "TERM" | "COLORTERM" | "TZ") || key.starts_with("LC_")
}

/// Builds the environment from the host's (`host`) and the grants.
pub fn build<I, K, V>(host: I, input: &EnvInput<'_>) -> Vec<(String, String)>
where
    I: IntoIterator<Item = (K, V)>,
    K: AsRef<str>,
    V: AsRef<str>,
{
    let mut env: Vec<(String, String)> = Vec::new();
    let mut set = |k: &str, v: String| {
        env.retain(|(key, _)| key != k);
        env.push((k.to_owned(), v));
    };
    for (k, v) in host {
        if passes_through(k.as_ref()) {
            set(k.as_ref(), v.as_ref().to_owned());
        }
    }
    set("PATH", PATH.into());
    set("HOME", input.home.display().to_string());
    set("USER", input.user.into());
    set("LOGNAME", input.user.into());
    let run = format!("/run/user/{}", input.uid);
    set("XDG_RUNTIME_DIR", run.clone());
    let d = input.app_data.display();
    set("XDG_DATA_HOME", format!("{d}/data"));
    set("XDG_CONFIG_HOME", format!("{d}/config"));
    set("XDG_CACHE_HOME", format!("{d}/cache"));
    set("XDG_STATE_HOME", format!("{d}/.local/state"));
    if input.wayland {
        set("WAYLAND_DISPLAY", "wayland-0".into());
    }
    if input.pulse {
        set("PULSE_SERVER", format!("unix:{run}/pulse/native"));
    }
    if let Some(n) = input.x11_display {
        set("DISPLAY", format!(":{n}"));
    }
    if input.session_bus {
        set(
            "DBUS_SESSION_BUS_ADDRESS",
            crate::bus::inside_session_address(input.uid),
        );
    }
    if input.system_bus {
        set(
            "DBUS_SYSTEM_BUS_ADDRESS",
            crate::bus::inside_system_address(),
        );
    }
    for (k, v) in input.extra {
        if !crate::permissions::env_forbidden(k) {
            set(k, v.clone());
        }
    }
    env
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn home_follows_glib() {
        let pw = || Some(PathBuf::from("/home/pw"));
        assert_eq!(
            host_home(Some("/srv/elsewhere".into()), || panic!("passwd read")),
            PathBuf::from("/srv/elsewhere")
        );
        assert_eq!(host_home(Some("".into()), pw), PathBuf::from("/home/pw"));
        assert_eq!(host_home(None, pw), PathBuf::from("/home/pw"));
        assert_eq!(host_home(None, || None), PathBuf::from("/"));
    }

    fn input<'a>(extra: &'a [(String, String)]) -> EnvInput<'a> {
        EnvInput {
            uid: 1000,
            user: "u",
            home: Path::new("/home/u"),
            app_data: Path::new("/home/u/.var/app/org.example.App"),
            wayland: true,
            pulse: false,
            x11_display: None,
            session_bus: false,
            system_bus: false,
            extra,
        }
    }

    #[test]
    fn host_secrets_and_loaders_never_pass() {
        let host = [
            ("LD_PRELOAD", "/evil.so"),
            ("LD_LIBRARY_PATH", "/x"),
            ("PYTHONPATH", "/x"),
            ("GIO_EXTRA_MODULES", "/x"),
            ("TMPDIR", "/hosttmp"),
            ("DBUS_SESSION_BUS_ADDRESS", "unix:path=/run/user/1000/bus"),
            ("PATH", "/evil:/usr/bin"),
            ("LANG", "de_DE.UTF-8"),
            ("LC_TIME", "C"),
            ("TERM", "xterm"),
        ];
        let env = build(host, &input(&[]));
        let get = |k: &str| {
            env.iter()
                .find(|(key, _)| key == k)
                .map(|(_, v)| v.as_str())
        };
        for k in [
            "LD_PRELOAD",
            "LD_LIBRARY_PATH",
            "PYTHONPATH",
            "GIO_EXTRA_MODULES",
            "TMPDIR",
            "DBUS_SESSION_BUS_ADDRESS",
            "PULSE_SERVER",
        ] {
            assert_eq!(get(k), None, "{k}");
        }
        assert_eq!(get("PATH"), Some(PATH));
        assert_eq!(get("LANG"), Some("de_DE.UTF-8"));
        assert_eq!(get("LC_TIME"), Some("C"));
        assert_eq!(get("XDG_RUNTIME_DIR"), Some("/run/user/1000"));
        assert_eq!(get("WAYLAND_DISPLAY"), Some("wayland-0"));
        assert_eq!(
            get("XDG_CONFIG_HOME"),
            Some("/home/u/.var/app/org.example.App/config")
        );
    }

    #[test]
    fn extra_overrides_but_not_forbidden() {
        let extra = vec![
            ("FOO".to_string(), "1".to_string()),
            ("LD_PRELOAD".to_string(), "/x".to_string()),
        ];
        let env = build(Vec::<(String, String)>::new(), &input(&extra));
        assert!(env.contains(&("FOO".into(), "1".into())));
        assert!(!env.iter().any(|(k, _)| k == "LD_PRELOAD"));
    }
}
