//! `/.flatpak-info`: the instance-info keyfile in Flatpak's format, so that
//! every existing portal treats our apps as sandboxed apps with their id.

use std::path::Path;

use porthole_identity::{AppId, KeyFile};

use crate::permissions::Permissions;
use crate::plan::Access;

/// Inputs of the keyfile.
#[derive(Debug, Clone)]
pub struct InfoInput<'a> {
    pub app_id: &'a AppId,
    pub instance_id: &'a str,
    pub instance_path: &'a Path,
    pub app_path: Option<&'a Path>,
    pub runtime_path: &'a Path,
    pub permissions: &'a Permissions,
    /// The session bus reaches the app through our proxy.
    pub session_bus_proxy: bool,
    /// The system bus reaches the app through our proxy.
    pub system_bus_proxy: bool,
    /// A Flatpak-installed app: its refs, commits and context as `flatpak
    /// run` writes them.
    pub installed: Option<&'a crate::flatpak::InfoExtra>,
}

/// The keyfile text.
pub fn render(i: &InfoInput<'_>) -> String {
    let mut kf = KeyFile::new();
    kf.set("Application", "name", i.app_id.as_str());
    let x = i.installed;
    kf.set(
        "Application",
        "runtime",
        x.map_or("runtime/org.porthole.Host/x86_64/host", |x| &x.runtime_ref),
    );
    kf.set("Instance", "instance-id", i.instance_id);
    kf.set(
        "Instance",
        "instance-path",
        &i.instance_path.display().to_string(),
    );
    if let Some(app) = i.app_path {
        kf.set("Instance", "app-path", &app.display().to_string());
    }
    // Flatpak's order: app commit and extensions after the app's path,
    // the runtime's after its path.
    if let Some(x) = x {
        kf.set("Instance", "app-commit", &x.app_commit);
        if !x.app_extensions.is_empty() {
            kf.set("Instance", "app-extensions", &x.app_extensions);
        }
    }
    kf.set(
        "Instance",
        "runtime-path",
        &i.runtime_path.display().to_string(),
    );
    if let Some(x) = x {
        kf.set("Instance", "runtime-commit", &x.runtime_commit);
        if !x.runtime_extensions.is_empty() {
            kf.set("Instance", "runtime-extensions", &x.runtime_extensions);
        }
    }
    kf.set("Instance", "branch", x.map_or("master", |x| &x.branch));
    kf.set(
        "Instance",
        "arch",
        x.map_or(std::env::consts::ARCH, |x| &x.arch),
    );
    kf.set("Instance", "sandbox-engine", "porthole");
    let yes_no = |b: bool| if b { "true" } else { "false" };
    kf.set("Instance", "session-bus-proxy", yes_no(i.session_bus_proxy));
    kf.set("Instance", "system-bus-proxy", yes_no(i.system_bus_proxy));
    if let Some(x) = x {
        x.context.save(&mut kf);
        return kf.to_text();
    }
    let p = i.permissions;
    let mut shared = Vec::new();
    if p.network {
        shared.push("network".to_string());
    }
    kf.set_list("Context", "shared", &shared);
    let sockets: Vec<&str> = p.sockets.iter().map(|s| s.name()).collect();
    kf.set_list("Context", "sockets", &sockets);
    let fs: Vec<String> = p
        .filesystems
        .iter()
        .map(|f| match f.access {
            Access::ReadOnly => format!("{}:ro", f.path.display()),
            Access::ReadWrite => f.path.display().to_string(),
        })
        .collect();
    kf.set_list("Context", "filesystems", &fs);
    // Flatpak writes the features only when there are any.
    let features = crate::permissions::feature_names(p.features);
    if !features.is_empty() {
        kf.set_list("Context", "features", &features);
    }
    // The group is there whenever the proxy is: the portals, talked to by
    // every app, head it (Flatpak's implicit policy, said explicitly).
    if i.session_bus_proxy && !p.talk_names.iter().any(|n| n == "org.freedesktop.portal.*") {
        kf.set("Session Bus Policy", "org.freedesktop.portal.*", "talk");
    }
    for (names, policy) in [
        (&p.talk_names, "talk"),
        (&p.own_names, "own"),
        (&p.see_names, "see"),
    ] {
        for n in names {
            kf.set("Session Bus Policy", n, policy);
        }
    }
    for (names, policy) in [
        (&p.system_talk_names, "talk"),
        (&p.system_own_names, "own"),
        (&p.system_see_names, "see"),
    ] {
        for n in names {
            kf.set("System Bus Policy", n, policy);
        }
    }
    for (k, v) in &p.env {
        kf.set("Environment", k, v);
    }
    kf.to_text()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::permissions::Socket;

    #[test]
    fn keyfile_reads_back_with_identity() {
        let id = AppId::parse("org.example.App").unwrap();
        let mut perms = Permissions::default();
        perms.sockets.insert(Socket::Wayland);
        perms.talk_names.push("org.freedesktop.portal.*".into());
        let text = render(&InfoInput {
            app_id: &id,
            instance_id: "123",
            instance_path: Path::new("/run/user/1000/porthole/instances/123"),
            app_path: None,
            runtime_path: Path::new("/usr"),
            permissions: &perms,
            session_bus_proxy: true,
            system_bus_proxy: false,
            installed: None,
        });
        let kf = KeyFile::parse(&text).unwrap();
        assert_eq!(
            kf.get("Application", "name").as_deref(),
            Some("org.example.App")
        );
        assert_eq!(kf.get("Instance", "instance-id").as_deref(), Some("123"));
        assert_eq!(kf.get_list("Context", "sockets").unwrap(), vec!["wayland"]);
        assert_eq!(
            kf.get("Session Bus Policy", "org.freedesktop.portal.*")
                .as_deref(),
            Some("talk")
        );
        assert_eq!(
            kf.get("Instance", "session-bus-proxy").as_deref(),
            Some("true")
        );
        assert!(text.starts_with("[Application]\nname=org.example.App\n"));
    }
}
