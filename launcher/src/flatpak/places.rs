//! The fixed places `flatpak run` gives every app, beyond its grants:
//! the host's name-service files and time zone, the runtime's `etc` in
//! `/etc`, the host's fonts, icons and os-release under `/run/host`, and
//! the app's own directory in `$XDG_RUNTIME_DIR` (flatpak-run.c:
//! flatpak_run_setup_base_argv, add_font_path_args, add_icon_path_args,
//! add_tzdata_args). Found on the host here; [`super::Installed::extra_ops`]
//! turns them into mount-plan steps.

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use super::grants::HostDirs;

/// `/etc` files an installed app gets from the host, not its runtime
/// (with `shared=network`), as `flatpak run` binds them.
pub const HOST_ETC_FILES: &[&str] = &["resolv.conf", "hosts", "host.conf", "gai.conf"];

/// Entries of the runtime's `etc` that `/etc` does not link to: made by
/// the launcher (Flatpak's list, and ld.so.cache, which is copied).
const OWN_ETC: &[&str] = &[
    "passwd",
    "group",
    "machine-id",
    "resolv.conf",
    "host.conf",
    "hosts",
    "gai.conf",
    "localtime",
    "timezone",
    "pkcs11",
    "ld.so.cache",
];

/// The names in the runtime's `etc` that `/etc` shows (as `flatpak run`
/// shows each one, bound; here a link into `/usr/etc`, which is the same
/// file without a mount).
pub fn runtime_etc(runtime_files: &Path) -> Vec<String> {
    let Ok(rd) = std::fs::read_dir(runtime_files.join("etc")) else {
        return Vec::new();
    };
    let mut names: Vec<String> = rd
        .flatten()
        .filter_map(|e| e.file_name().into_string().ok())
        .filter(|n| !OWN_ETC.contains(&n.as_str()) && !n.contains('/') && n != "." && n != "..")
        .collect();
    names.sort();
    names
}

/// The host's time zone name as Flatpak finds it (`flatpak_get_timezone`):
/// `$TZ` without a leading `:` when it names a zone, else the target of
/// `/etc/localtime` below `zoneinfo/`, else `/etc/timezone`, else UTC.
pub fn host_timezone() -> String {
    if let Ok(tz) = std::env::var("TZ") {
        let tz = tz.strip_prefix(':').unwrap_or(&tz);
        if !tz.is_empty() && !tz.starts_with('/') && !tz.contains("..") {
            return tz.to_owned();
        }
    }
    if let Ok(t) = std::fs::read_link("/etc/localtime") {
        let s = t.to_string_lossy();
        if let Some(i) = s.find("zoneinfo/") {
            return s[i + "zoneinfo/".len()..].to_owned();
        }
    }
    std::fs::read_to_string("/etc/timezone")
        .ok()
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty() && !s.contains('\n'))
        .unwrap_or_else(|| "UTC".to_owned())
}

/// What `flatpak run` shows every app of the host under `/run/host`
/// (add_font_path_args, add_icon_path_args, os-release): the system and
/// user fonts and font caches, the icon themes, the host's os-release.
/// Only what exists, by its real path (our binds refuse symlinks).
pub fn host_share(host: &HostDirs) -> Vec<(PathBuf, PathBuf)> {
    let real =
        |p: PathBuf| -> Option<PathBuf> { std::fs::canonicalize(&p).ok().filter(|c| *c == p) };
    let mut out = Vec::new();
    let mut add = |candidates: Vec<PathBuf>, dest: &str| {
        if let Some(src) = candidates.into_iter().find_map(real) {
            out.push((src, PathBuf::from(dest)));
        }
    };
    add(vec!["/usr/share/fonts".into()], "/run/host/fonts");
    add(
        vec!["/usr/local/share/fonts".into()],
        "/run/host/local-fonts",
    );
    add(
        vec![
            "/var/cache/fontconfig".into(),
            "/usr/lib/fontconfig/cache".into(),
        ],
        "/run/host/fonts-cache",
    );
    add(
        vec![host.data.join("fonts"), host.home.join(".fonts")],
        "/run/host/user-fonts",
    );
    add(
        vec![host.cache.join("fontconfig")],
        "/run/host/user-fonts-cache",
    );
    add(vec!["/usr/share/icons".into()], "/run/host/share/icons");
    add(vec![host.data.join("icons")], "/run/host/user-share/icons");
    add(
        vec!["/etc/os-release".into(), "/usr/lib/os-release".into()],
        "/run/host/os-release",
    );
    out
}

/// Makes `$XDG_RUNTIME_DIR/app/APP_ID` (0700) as `flatpak run` does, one
/// component at a time: only below a runtime directory that is ours and
/// private, never through a symlink, and the result must be ours.
pub fn app_runtime_dir(env: &dyn Fn(&str) -> Option<OsString>, app_id: &str) -> Option<PathBuf> {
    use std::os::unix::fs::{DirBuilderExt, MetadataExt};
    let uid = nix::unistd::getuid().as_raw();
    let rt = env("XDG_RUNTIME_DIR")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(format!("/run/user/{uid}")));
    let rt = std::fs::canonicalize(rt).ok()?;
    let ours = |p: &Path| {
        std::fs::symlink_metadata(p)
            .is_ok_and(|m| m.is_dir() && m.uid() == uid && m.mode() & 0o077 == 0)
    };
    if !ours(&rt) {
        return None;
    }
    let mut dir = rt;
    for part in ["app", app_id] {
        dir.push(part);
        let _ = std::fs::DirBuilder::new().mode(0o700).create(&dir);
        if !ours(&dir) {
            tracing::info!(dir = %dir.display(), "not the app's runtime directory; not shared");
            return None;
        }
    }
    Some(dir)
}

/// Flatpak's `/run/host/font-dirs.xml`: fontconfig maps the host's font
/// directories to where the sandbox has them, so caches stay valid.
pub fn font_dirs_xml(share: &[(PathBuf, PathBuf)]) -> String {
    let mut x = String::from(
        "<?xml version=\"1.0\"?>\n<!DOCTYPE fontconfig SYSTEM \"urn:fontconfig:fonts.dtd\">\n<fontconfig>\n",
    );
    for (src, dest) in share {
        if matches!(
            dest.to_str(),
            Some("/run/host/fonts" | "/run/host/local-fonts" | "/run/host/user-fonts")
        ) {
            let esc = src
                .display()
                .to_string()
                .replace('&', "&amp;")
                .replace('<', "&lt;")
                .replace('"', "&quot;");
            x.push_str(&format!(
                "\t<remap-dir as-path=\"{esc}\">{}</remap-dir>\n",
                dest.display()
            ));
        }
    }
    x.push_str("</fontconfig>\n");
    x
}

/// Where an installed app finds its X11 cookies, as under `flatpak run`.
pub const XAUTHORITY: &str = "/run/flatpak/Xauthority";

const FAMILY_LOCAL: u16 = 256;
const FAMILY_WILD: u16 = 65535;

/// The entries of an Xauthority file (`bytes`, libXau's format: a
/// big-endian u16 family, then address, display number, auth name and
/// auth data, each a big-endian u16 length and that many bytes) that
/// `flatpak run` passes to an app on local display `number` of host
/// `nodename` (write_xauth, xauth_entry_should_propagate): local entries
/// of this host and wildcard entries, for that display. A truncated file
/// ends the list where it breaks, as XauReadAuth does.
pub fn xauth_for_display(bytes: &[u8], number: &str, nodename: &[u8]) -> Vec<u8> {
    fn field(b: &[u8]) -> Option<(&[u8], &[u8])> {
        let len = u16::from_be_bytes(b.get(..2)?.try_into().ok()?) as usize;
        let rest = b.get(2..)?;
        Some((rest.get(..len)?, rest.get(len..)?))
    }
    let mut out = Vec::new();
    let mut b = bytes;
    while b.len() >= 2 {
        let entry_start = b;
        let family = u16::from_be_bytes([b[0], b[1]]);
        let Some((address, r)) = field(&b[2..]) else {
            break;
        };
        let Some((num, r)) = field(r) else { break };
        let Some((_name, r)) = field(r) else { break };
        let Some((_data, r)) = field(r) else { break };
        let entry = &entry_start[..entry_start.len() - r.len()];
        b = r;
        let for_us = match family {
            FAMILY_WILD => true,
            FAMILY_LOCAL => address == nodename,
            _ => false,
        };
        if for_us && num == number.as_bytes() {
            out.extend_from_slice(entry);
        }
    }
    out
}

/// The host's X11 cookies for local display `number`, from `$XAUTHORITY`
/// or `~/.Xauthority` (libXau's XauFileName); None when there are none.
pub fn host_xauth(number: u32, home: &Path) -> Option<Vec<u8>> {
    let file = std::env::var_os("XAUTHORITY")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| home.join(".Xauthority"));
    let bytes = std::fs::read(file).ok()?;
    let node = nix::sys::utsname::uname().ok()?;
    let out = xauth_for_display(
        &bytes,
        &number.to_string(),
        node.nodename().as_encoded_bytes(),
    );
    (!out.is_empty()).then_some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(family: u16, address: &[u8], number: &[u8], data: &[u8]) -> Vec<u8> {
        let mut v = family.to_be_bytes().to_vec();
        for f in [address, number, b"MIT-MAGIC-COOKIE-1".as_slice(), data] {
            v.extend_from_slice(&(f.len() as u16).to_be_bytes());
            v.extend_from_slice(f);
        }
        v
    }

    #[test]
    fn xauth_entries_for_this_host_and_display() {
        let mine = entry(FAMILY_LOCAL, b"box", b"7", b"cookie-7");
        let wild = entry(FAMILY_WILD, b"", b"7", b"wild-7");
        let other_display = entry(FAMILY_LOCAL, b"box", b"8", b"cookie-8");
        let other_host = entry(FAMILY_LOCAL, b"elsewhere", b"7", b"x");
        let tcp = entry(0, &[10, 0, 0, 1], b"7", b"tcp");
        let mut file = [mine.clone(), other_display, tcp, other_host, wild.clone()].concat();
        assert_eq!(
            xauth_for_display(&file, "7", b"box"),
            [mine.clone(), wild].concat()
        );
        // A truncated file ends the list.
        file.truncate(mine.len() + 5);
        assert_eq!(xauth_for_display(&file, "7", b"box"), mine);
        assert!(xauth_for_display(b"\x01", "7", b"box").is_empty());
    }

    #[test]
    fn font_dirs_map_only_font_directories_and_escape() {
        let share = vec![
            (
                PathBuf::from("/usr/share/fonts"),
                PathBuf::from("/run/host/fonts"),
            ),
            (
                PathBuf::from("/home/a&b/.fonts"),
                PathBuf::from("/run/host/user-fonts"),
            ),
            (
                PathBuf::from("/usr/share/icons"),
                PathBuf::from("/run/host/share/icons"),
            ),
        ];
        let x = font_dirs_xml(&share);
        assert!(x.starts_with("<?xml version=\"1.0\"?>\n"));
        assert!(
            x.contains("\t<remap-dir as-path=\"/usr/share/fonts\">/run/host/fonts</remap-dir>\n")
        );
        assert!(x.contains("as-path=\"/home/a&amp;b/.fonts\">/run/host/user-fonts<"));
        assert!(!x.contains("icons"));
        assert!(x.ends_with("</fontconfig>\n"));
    }

    #[test]
    fn runtime_etc_leaves_out_what_the_launcher_makes() {
        let d = tempfile::tempdir().unwrap();
        let etc = d.path().join("etc");
        std::fs::create_dir_all(etc.join("xdg")).unwrap();
        for f in [
            "passwd",
            "hosts",
            "ld.so.cache",
            "os-release",
            "nsswitch.conf",
        ] {
            std::fs::write(etc.join(f), "").unwrap();
        }
        assert_eq!(
            runtime_etc(d.path()),
            ["nsswitch.conf", "os-release", "xdg"]
        );
        assert!(runtime_etc(&d.path().join("none")).is_empty());
    }
}
