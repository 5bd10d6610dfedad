//! Host side, first stage: resolve a run request into a [`Prepared`] launch.
//! Reads the host, changes nothing.

use super::*;
use crate::sys::fd::{OFlags, ResolveFlags};

/// The /etc files only an app with network gets.
pub(crate) const NETWORK_ETC: [&str; 4] = ["resolv.conf", "hosts", "nsswitch.conf", "gai.conf"];

/// Everything a launch needs, resolved on the host side.
#[derive(Debug)]
pub struct Prepared {
    pub app_id: AppId,
    pub instance_id: String,
    /// The per-user runtime directory ([`instance::runtime_dir`]): the
    /// instance records below it, a systemd user manager's socket in it.
    pub runtime_dir: PathBuf,
    pub instances_dir: PathBuf,
    pub info: String,
    pub ops: Vec<Op>,
    pub env: Vec<(String, String)>,
    pub argv: Vec<OsString>,
    pub uid: u32,
    pub gid: u32,
    pub home: PathBuf,
    pub app_data: PathBuf,
    pub namespaces: Namespaces,
    pub filters: Filters,
    /// The `--allow` features the filters were chosen for.
    pub features: crate::seccomp::Features,
    pub limits: Limits,
    pub die_with_parent: bool,
    /// Sockets asked for but absent on the host (reported, not fatal).
    pub missing_sockets: Vec<Socket>,
    /// `PORTHOLE_STARTUP_TRACE` was set.
    pub trace: bool,
    /// `network=ask`: the monitor asks the portal before the clone.
    pub network_ask: bool,
    /// The host's Wayland socket, when granted and present: execute tries a
    /// `wp_security_context_v1` listener first.
    pub wayland_host: Option<PathBuf>,
    /// Where the app may write (inside the sandbox), for Landlock.
    pub writable: Vec<PathBuf>,
    /// The instance's D-Bus proxy, when the host has a bus and a proxy.
    pub bus: Option<bus::ProxyPlan>,
    /// Why the app gets no bus (or not the system bus it asked for): one
    /// warning line each, printed when the launch starts.
    pub bus_warnings: Vec<String>,
}

fn who() -> (u32, u32, String, PathBuf) {
    let uid = nix::unistd::getuid();
    let gid = nix::unistd::getgid();
    let pw = nix::unistd::User::from_uid(uid).ok().flatten();
    let name = pw
        .as_ref()
        .map(|u| u.name.clone())
        .unwrap_or_else(|| format!("user{uid}"));
    // $HOME first, as Flatpak (GLib) reads it; the passwd entry only when
    // $HOME is unset or empty.
    let home = crate::environ::host_home(std::env::var_os("HOME"), || pw.map(|u| u.dir));
    (uid.as_raw(), gid.as_raw(), name, home)
}

fn canonical_dir(path: &Path) -> Result<PathBuf, String> {
    let c = std::fs::canonicalize(path).map_err(|e| e.to_string())?;
    let rd = std::fs::read_dir(&c).map_err(|e| e.to_string())?;
    drop(rd);
    Ok(c)
}

/// `openat2(root, rel, flags, resolve)` through [`crate::sys::fd::openat2`]
/// (which adds O_CLOEXEC and RESOLVE_NO_MAGICLINKS).
fn openat2(
    root: std::os::fd::BorrowedFd<'_>,
    rel: &Path,
    flags: crate::sys::fd::OFlags,
    resolve: crate::sys::fd::ResolveFlags,
) -> std::io::Result<OwnedFd> {
    let c = CString::new(rel.as_os_str().as_bytes())
        .map_err(|_| std::io::Error::from(std::io::ErrorKind::InvalidInput))?;
    crate::sys::fd::openat2(root, &c, flags, resolve)
}

/// A directory tree on the host (a `--runtime` dir, or `/`) whose files
/// are looked up inside it: with RESOLVE_IN_ROOT a symlink in the tree is
/// followed as if the tree were `/`, so `etc/fonts -> /root/.ssh` in a
/// runtime names the runtime's own `root/.ssh`, never the host's.
struct Tree {
    root: OwnedFd,
    path: PathBuf,
}

impl Tree {
    fn open(path: &Path) -> std::io::Result<Tree> {
        let root = nix::fcntl::open(
            path,
            nix::fcntl::OFlag::O_PATH
                | nix::fcntl::OFlag::O_DIRECTORY
                | nix::fcntl::OFlag::O_CLOEXEC,
            nix::sys::stat::Mode::empty(),
        )?;
        Ok(Tree {
            root,
            path: path.to_owned(),
        })
    }

    /// The host path, free of symlinks, of `rel` inside the tree; None when
    /// it does not exist (or is not below the tree after all).
    fn resolve(&self, rel: &Path) -> Option<PathBuf> {
        let fd = openat2(self.root.as_fd(), rel, OFlags::PATH, ResolveFlags::IN_ROOT).ok()?;
        use std::os::fd::AsRawFd;
        let real = std::fs::read_link(format!("/proc/self/fd/{}", fd.as_raw_fd())).ok()?;
        real.starts_with(&self.path).then_some(real)
    }

    /// The contents of the regular file `rel` inside the tree.
    fn read(&self, rel: &Path) -> Option<Vec<u8>> {
        let fd = openat2(
            self.root.as_fd(),
            rel,
            OFlags::RDONLY | OFlags::NONBLOCK,
            ResolveFlags::IN_ROOT,
        )
        .ok()?;
        let file = std::fs::File::from(fd);
        if !file.metadata().ok()?.is_file() {
            return None;
        }
        let mut bytes = Vec::new();
        std::io::Read::read_to_end(&mut &file, &mut bytes).ok()?;
        Some(bytes)
    }
}

/// A `--filesystem` path as given, normalised by hand (no `.`, no repeated
/// or trailing `/`; `..` is refused by the plan's check), then checked to
/// name exactly that object: not a symlink and not through one, so a link
/// planted in a granted path cannot widen the grant (the bind itself is
/// opened the same way, with RESOLVE_NO_SYMLINKS).
fn filesystem_path(path: &Path) -> Result<PathBuf, LaunchError> {
    let normal: PathBuf = path.components().collect();
    plan::check_grant(&normal)?;
    let root = Tree::open(Path::new("/")).map_err(|e| LaunchError::Filesystem {
        path: path.to_owned(),
        reason: e.to_string(),
    })?;
    let rel = normal.strip_prefix("/").unwrap_or(&normal);
    if let Err(e) = openat2(
        root.root.as_fd(),
        rel,
        // Without O_NOFOLLOW: with it, a final symlink would be opened
        // itself instead of failing with ELOOP (openat2(2)).
        OFlags::PATH,
        ResolveFlags::NO_SYMLINKS,
    ) {
        let reason = if e.raw_os_error() == Some(libc::ELOOP) {
            "is a symbolic link or passes through one; name the real path".to_string()
        } else {
            e.to_string()
        };
        return Err(LaunchError::Filesystem {
            path: path.to_owned(),
            reason,
        });
    }
    Ok(normal)
}

fn is_socket(p: &Path) -> bool {
    use std::os::unix::fs::FileTypeExt;
    std::fs::metadata(p)
        .map(|m| m.file_type().is_socket())
        .unwrap_or(false)
}

/// Host session sockets found for the granted permissions.
#[derive(Debug, Default)]
struct HostSockets {
    wayland: Option<PathBuf>,
    pulse: Option<PathBuf>,
    x11: Option<(PathBuf, u32)>,
    missing: Vec<Socket>,
}

/// Host paths of the session sockets the app may get.
fn host_sockets(perms: &Permissions, host_runtime: Option<&Path>) -> HostSockets {
    let mut missing = Vec::new();
    let mut wayland = None;
    let mut pulse = None;
    let mut x11 = None;
    if perms.sockets.contains(&Socket::Wayland) {
        let display = std::env::var_os("WAYLAND_DISPLAY").unwrap_or_else(|| "wayland-0".into());
        let p = PathBuf::from(&display);
        let p = if p.is_absolute() {
            Some(p)
        } else {
            host_runtime.map(|r| r.join(p))
        };
        match p.filter(|p| is_socket(p)) {
            Some(p) => wayland = std::fs::canonicalize(&p).ok(),
            None => missing.push(Socket::Wayland),
        }
    }
    if perms.sockets.contains(&Socket::PulseAudio) {
        let from_env = std::env::var("PULSE_SERVER")
            .ok()
            .and_then(|s| s.strip_prefix("unix:").map(PathBuf::from));
        let p = from_env.or_else(|| host_runtime.map(|r| r.join("pulse/native")));
        match p.filter(|p| is_socket(p)) {
            Some(p) => pulse = std::fs::canonicalize(&p).ok(),
            None => missing.push(Socket::PulseAudio),
        }
    }
    if perms.sockets.contains(&Socket::X11) {
        let n = std::env::var("DISPLAY")
            .ok()
            .and_then(|d| {
                d.strip_prefix(':')
                    .map(|r| r.split('.').next().unwrap_or("").to_owned())
            })
            .and_then(|n| n.parse::<u32>().ok());
        match n.map(|n| (PathBuf::from(format!("/tmp/.X11-unix/X{n}")), n)) {
            Some((p, n)) if is_socket(&p) => x11 = Some((p, n)),
            _ => missing.push(Socket::X11),
        }
    }
    HostSockets {
        wayland,
        pulse,
        x11,
        missing,
    }
}

/// Resolves a run request on the host. Changes nothing; what it passes
/// over (an untrusted `$XDG_RUNTIME_DIR`) goes to `warn`.
pub fn prepare(req: &RunRequest, warn: Warnings<'_>) -> Result<Prepared, LaunchError> {
    trace_stage(
        std::env::var_os("PORTHOLE_STARTUP_TRACE").is_some(),
        "prepare",
    );
    let (uid, gid, user, home) = who();
    let home = std::fs::canonicalize(&home).unwrap_or(home);

    // App directory: `DIR/files` (a Flatpak deploy dir) or DIR itself at /app;
    // `DIR/metadata` supplies default permissions.
    let mut perms = Permissions::default();
    let mut app_files = None;
    if let Some(inst) = &req.installed {
        perms = inst.grants.permissions.clone();
        app_files = Some(inst.app_files());
    } else if let Some(dir) = &req.app_dir {
        let c = canonical_dir(dir).map_err(|reason| LaunchError::AppDir {
            path: dir.clone(),
            reason,
        })?;
        let meta = c.join("metadata");
        if meta.is_file() {
            let text = std::fs::read_to_string(&meta).map_err(|e| LaunchError::AppDir {
                path: meta.clone(),
                reason: e.to_string(),
            })?;
            perms = Permissions::from_metadata(&text, &meta, &home)?;
        }
        let files = c.join("files");
        app_files = Some(if files.is_dir() { files } else { c });
    }
    let mut perms = perms.merge(req.permissions.clone());

    // /usr and /etc sources. The runtime's /etc files are looked up inside
    // the runtime (see `Tree`), never through its symlinks onto the host.
    // An installed app's runtime, unless a runtime directory is given.
    let runtime_dir = req
        .runtime
        .clone()
        .or_else(|| req.installed.as_ref().map(|i| i.runtime_files()));
    let (usr, etc_root, tree) = match &runtime_dir {
        None => (
            PathBuf::from("/usr"),
            PathBuf::from("/etc"),
            Tree::open(Path::new("/")),
        ),
        Some(dir) => {
            let c = canonical_dir(dir).map_err(|reason| LaunchError::Runtime {
                path: dir.clone(),
                reason,
            })?;
            let tree = Tree::open(&c);
            if c.join("usr").is_dir() {
                (c.join("usr"), c.join("etc"), tree)
            } else {
                let etc = c.join("etc");
                (c, etc, tree)
            }
        }
    };
    let tree = tree.map_err(|e| LaunchError::Runtime {
        path: etc_root.clone(),
        reason: e.to_string(),
    })?;
    let host_root = Tree::open(Path::new("/")).map_err(|e| LaunchError::Io {
        op: "open /",
        source: e,
    })?;
    if !usr.join("bin").is_dir() {
        return Err(LaunchError::Runtime {
            path: usr,
            reason: "has no bin/ directory".into(),
        });
    }
    let usr_lib_links = ["lib64", "lib32", "libx32"]
        .iter()
        .filter(|n| usr.join(n).is_dir())
        .map(|n| n.to_string())
        .collect();

    let mut etc_binds = Vec::new();
    // Small files are copied into the (read-only) root instead of bound:
    // same content, one mount fewer each.
    let mut etc_files = Vec::new();
    // ld.so.cache must match the libraries in /usr (the runtime's);
    // machine-id is the host's identity, whatever the runtime.
    for (t, name) in [(&tree, "ld.so.cache"), (&host_root, "machine-id")] {
        if let Some(bytes) = t.read(&Path::new("etc").join(name)) {
            etc_files.push((PathBuf::from("/etc").join(name), bytes));
        }
    }
    // An installed app gets the host's name-service files and time zone,
    // as under `flatpak run`, and the rest of its runtime's etc as links
    // into /usr/etc (Installed::extra_ops); a runtime directory brings
    // its own.
    let installed = req.installed.is_some();
    let mut etc_names = vec!["fonts", "ssl/certs", "alternatives"];
    // With network=ask too: the monitor drops them again unless the user
    // says yes (see `network_etc`).
    if perms.network || perms.network_ask {
        etc_names.extend(NETWORK_ETC);
    }
    if installed {
        etc_names = if perms.network {
            crate::flatpak::places::HOST_ETC_FILES.to_vec()
        } else {
            Vec::new()
        };
    }
    for name in etc_names {
        // /etc/alternatives: Debian's /usr/bin has links through it.
        let t = if installed { &host_root } else { &tree };
        if let Some(c) = t.resolve(&Path::new("etc").join(name)) {
            etc_binds.push((c, PathBuf::from("/etc").join(name)));
        }
    }
    let zone_etc = if installed {
        PathBuf::from("/etc")
    } else {
        etc_root.clone()
    };
    let localtime_link = std::fs::read_link(zone_etc.join("localtime"))
        .ok()
        .and_then(|t| {
            let s = t.to_string_lossy();
            s.find("zoneinfo/")
                .map(|i| PathBuf::from(format!("/usr/share/{}", &s[i..])))
        });
    if localtime_link.is_none()
        && let Some(c) = tree.resolve(Path::new("etc/localtime"))
    {
        etc_binds.push((c, PathBuf::from("/etc/localtime")));
    }

    let mut filesystems = Vec::new();
    for grant in &perms.filesystems {
        filesystems.push((filesystem_path(&grant.path)?, grant.access));
    }

    let host_runtime = std::env::var_os("XDG_RUNTIME_DIR")
        .map(PathBuf::from)
        .or_else(|| Some(PathBuf::from(format!("/run/user/{uid}"))));
    let mut sockets = host_sockets(&perms, host_runtime.as_deref());
    // Flatpak's fallback-x11: X11 for an app that gets no Wayland socket
    // (none granted, or none on the host); no note when there is no X11.
    if req
        .installed
        .as_ref()
        .is_some_and(|i| i.grants.fallback_x11)
        && sockets.wayland.is_none()
        && sockets.x11.is_none()
    {
        let mut with_x11 = perms.clone();
        with_x11.sockets.insert(Socket::X11);
        sockets.x11 = host_sockets(&with_x11, host_runtime.as_deref()).x11;
        if sockets.x11.is_some() {
            perms.sockets.insert(Socket::X11);
        }
    }
    let HostSockets {
        wayland,
        pulse,
        x11,
        missing: missing_sockets,
    } = sockets;

    let documents = if req.documents_portal {
        let view = host_runtime
            .as_deref()
            .and_then(|r| crate::documents::app_view(r, req.app_id.as_str()));
        if view.is_none() {
            tracing::info!("no document store mounted: the app gets no /run/user/{uid}/doc");
        }
        view
    } else {
        None
    };
    let app_data = home.join(".var/app").join(req.app_id.as_str());
    let runtime = instance::runtime_dir(uid, warn)?;
    let instances_dir = instance::instances_path(&runtime);
    let instance_id = instance::new_id();
    // The proxy's sockets live in the instance dir; the sandbox opens that
    // dir refusing symlinks, hence the canonical path.
    let socket_dir =
        instance::instances_path(&std::fs::canonicalize(&runtime).unwrap_or(runtime.clone()))
            .join(&instance_id);
    let (bus, bus_warnings) = bus_plan(&req.app_id, &perms, host_runtime.as_deref(), &socket_dir);
    let info = flatpak_info::render(&InfoInput {
        app_id: &req.app_id,
        instance_id: &instance_id,
        instance_path: &instances_dir.join(&instance_id),
        app_path: app_files.as_deref(),
        runtime_path: &usr,
        permissions: &perms,
        session_bus_proxy: bus.as_ref().is_some_and(|b| b.session.is_some()),
        system_bus_proxy: bus.as_ref().is_some_and(|b| b.system.is_some()),
        installed: req.installed.as_ref().map(|i| &i.info),
    });

    // Landlock's write list: the app's data, the private temporary
    // directories, /dev (device nodes, pts, shm), /proc (the app's own
    // /proc/self files; /proc/sys and friends are read-only mounts),
    // /run/user/UID, and the read-write grants.
    let mut writable: Vec<PathBuf> = vec![
        app_data.clone(),
        PathBuf::from("/tmp"),
        PathBuf::from("/var/tmp"),
        PathBuf::from("/dev"),
        PathBuf::from("/proc"),
        PathBuf::from(format!("/run/user/{uid}")),
    ];
    writable.extend(
        filesystems
            .iter()
            .filter(|(_, a)| *a == plan::Access::ReadWrite)
            .map(|(p, _)| p.clone()),
    );
    // An installed app's further binds; Landlock judges a write by the
    // path it was made through, so the read-write ones are listed too.
    let mut extra_ops = req
        .installed
        .as_ref()
        .map(|i| i.extra_ops(&app_data, uid))
        .unwrap_or_default();
    // An installed app with X11 gets the host's cookies for that display,
    // as under `flatpak run`.
    let xauth = match (&req.installed, &x11) {
        (Some(_), Some((_, n))) => crate::flatpak::places::host_xauth(*n, &home),
        _ => None,
    };
    if let Some(bytes) = &xauth {
        extra_ops.push(Op::File {
            dest: PathBuf::from(crate::flatpak::places::XAUTHORITY),
            contents: bytes.clone(),
            mode: 0o600,
        });
    }
    writable.extend(extra_ops.iter().filter_map(|op| match op {
        Op::Bind { dest, attrs, .. } if attrs & crate::mount::MOUNT_ATTR_RDONLY == 0 => {
            Some(dest.clone())
        }
        _ => None,
    }));

    let passwd = format!("{user}:x:{uid}:{gid}:{user}:{}:/bin/sh\n", home.display());
    let group = format!("{user}:x:{gid}:\n");
    let input = PlanInput {
        uid,
        gid,
        user: user.clone(),
        home: home.clone(),
        usr,
        usr_lib_links,
        etc_binds,
        etc_files,
        localtime_link,
        passwd,
        group,
        flatpak_info: info.clone(),
        app_data: app_data.clone(),
        app_files,
        filesystems,
        wayland: wayland.clone(),
        pulse: pulse.clone(),
        documents,
        x11: x11.clone(),
        session_bus: bus
            .as_ref()
            .and_then(|b| b.session.as_ref())
            .map(|l| l.socket.clone()),
        system_bus: bus
            .as_ref()
            .and_then(|b| b.system.as_ref())
            .map(|l| l.socket.clone()),
        extra_ops,
    };
    let ops = plan::build(input)?;

    let mut env = environ::build(
        std::env::vars(),
        &EnvInput {
            uid,
            user: &user,
            home: &home,
            app_data: &app_data,
            wayland: wayland.is_some(),
            pulse: pulse.is_some(),
            x11_display: x11.as_ref().map(|(_, n)| *n),
            session_bus: bus.as_ref().is_some_and(|b| b.session.is_some()),
            system_bus: bus.as_ref().is_some_and(|b| b.system.is_some()),
            extra: &perms.env,
        },
    );

    if let Some(inst) = &req.installed {
        crate::flatpak::apply_env(&mut env, inst, &perms.env);
        if xauth.is_some() {
            env.retain(|(k, _)| k != "XAUTHORITY");
            env.push((
                "XAUTHORITY".to_string(),
                crate::flatpak::places::XAUTHORITY.to_string(),
            ));
        }
    }

    // Without full network: the SOCKS5 endpoint on the sandbox's lo (an
    // `--env` of the app's own wins).
    if !perms.network {
        for key in ["ALL_PROXY", "all_proxy"] {
            if !env.iter().any(|(k, _)| k == key) {
                env.push((key.to_owned(), crate::socks::proxy_url()));
            }
        }
    }

    // Without multiarch the programs have no i386 branch (shorter, so
    // cheaper to load and JIT); with devel ptrace and perf_event_open pass.
    let filters = Filters::builtin(perms.features);
    Ok(Prepared {
        app_id: req.app_id.clone(),
        instance_id,
        runtime_dir: runtime,
        instances_dir,
        info,
        ops,
        env,
        argv: req.command.clone(),
        uid,
        gid,
        home,
        app_data,
        namespaces: Namespaces {
            network: !perms.network,
        },
        filters,
        features: perms.features,
        limits: req.limits,
        die_with_parent: req.die_with_parent,
        missing_sockets,
        trace: std::env::var_os("PORTHOLE_STARTUP_TRACE").is_some(),
        network_ask: perms.network_ask && !perms.network,
        wayland_host: wayland,
        writable,
        bus,
        bus_warnings,
    })
}

/// The instance's D-Bus proxy: the session bus always (Flatpak's default
/// policy plus the grants), the system bus only for system-name grants.
/// Without a host bus or a proxy program the app runs without a bus, and
/// the returned lines say why.
fn bus_plan(
    app_id: &AppId,
    perms: &Permissions,
    host_runtime: Option<&Path>,
    socket_dir: &Path,
) -> (Option<bus::ProxyPlan>, Vec<String>) {
    let mut warnings = Vec::new();
    let env = |k: &str| std::env::var(k).ok();
    let session = match bus::session_address(
        env("DBUS_SESSION_BUS_ADDRESS").as_deref(),
        host_runtime,
    ) {
        Some(address) => Some(bus::BusLink {
            address,
            socket: socket_dir.join("bus"),
            policy: bus::session_policy(app_id, perms),
        }),
        None => {
            warnings.push(
                "the host has no session bus (no DBUS_SESSION_BUS_ADDRESS, no $XDG_RUNTIME_DIR/bus); the app gets none".to_string(),
            );
            None
        }
    };
    let system = match bus::system_policy(perms) {
        None => None,
        Some(policy) => match bus::system_address(env("DBUS_SYSTEM_BUS_ADDRESS").as_deref()) {
            Some(address) => Some(bus::BusLink {
                address,
                socket: socket_dir.join("system-bus"),
                policy,
            }),
            None => {
                warnings.push(
                    "system-bus names granted but the host has no system bus; not provided"
                        .to_string(),
                );
                None
            }
        },
    };
    if session.is_none() && system.is_none() {
        return (None, warnings);
    }
    let exe = std::env::current_exe().ok();
    let program = match bus::find_proxy(
        std::env::var_os("PORTHOLE_DBUS_PROXY")
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
            .as_deref(),
        exe.as_deref(),
        std::env::var_os("PATH").as_deref(),
    ) {
        Ok(p) => p,
        Err(reason) => {
            warnings.push(format!("{reason}; the app runs without D-Bus"));
            return (None, warnings);
        }
    };
    (
        Some(bus::ProxyPlan {
            program,
            session,
            system,
        }),
        warnings,
    )
}

/// Creates `home/.var/app/APP_ID` and its XDG subdirectories one component
/// at a time, refusing symlinks and directories owned by someone else.
pub fn ensure_app_data(home: &Path, app_data: &Path, uid: u32) -> Result<(), LaunchError> {
    let err = |reason: String| LaunchError::AppData {
        path: app_data.to_owned(),
        reason,
    };
    let rel = app_data
        .strip_prefix(home)
        .map_err(|_| err("not below the home directory".into()))?;
    let flags = nix::fcntl::OFlag::O_DIRECTORY
        | nix::fcntl::OFlag::O_NOFOLLOW
        | nix::fcntl::OFlag::O_CLOEXEC
        | nix::fcntl::OFlag::O_RDONLY;
    let mut cur: OwnedFd = nix::fcntl::open(home, flags, nix::sys::stat::Mode::empty())
        .map_err(|e| err(format!("open home: {e}")))?;
    let mut parts: Vec<PathBuf> = rel
        .components()
        .map(|c| PathBuf::from(c.as_os_str()))
        .collect();
    // `.local/state` creates `.local` on the way.
    let tail = ["data", "config", "cache", ".local/state"];
    let walk = |cur: &mut OwnedFd, name: &Path, check_owner: bool| -> Result<(), LaunchError> {
        // Open first: after the first launch every directory exists, and a
        // failing mkdirat costs a lookup of its own.
        let mut opened =
            nix::fcntl::openat(cur.as_fd(), name, flags, nix::sys::stat::Mode::empty());
        if matches!(opened, Err(nix::Error::ENOENT)) {
            match nix::sys::stat::mkdirat(
                cur.as_fd(),
                name,
                nix::sys::stat::Mode::from_bits_truncate(0o700),
            ) {
                Ok(()) | Err(nix::Error::EEXIST) => {}
                Err(e) => return Err(err(format!("mkdir {}: {e}", name.display()))),
            }
            opened = nix::fcntl::openat(cur.as_fd(), name, flags, nix::sys::stat::Mode::empty());
        }
        let next = opened.map_err(|e| {
            err(format!(
                "open {} (symlinks are refused): {e}",
                name.display()
            ))
        })?;
        if check_owner {
            let st = nix::sys::stat::fstat(next.as_fd()).map_err(|e| err(e.to_string()))?;
            if st.st_uid != uid {
                return Err(err(format!(
                    "{} is owned by uid {}",
                    name.display(),
                    st.st_uid
                )));
            }
        }
        *cur = next;
        Ok(())
    };
    for p in parts.drain(..) {
        walk(&mut cur, &p, true)?;
    }
    for t in tail {
        let mut c = cur.try_clone().map_err(|e| err(e.to_string()))?;
        for comp in Path::new(t).components() {
            walk(&mut c, Path::new(comp.as_os_str()), true)?;
        }
    }
    Ok(())
}

/// Prints the plan (`--dry-run`).
pub fn describe(p: &Prepared) -> String {
    let mut s = String::new();
    s.push_str(&format!("app {} instance {}\n", p.app_id, p.instance_id));
    s.push_str(&format!(
        "namespaces: user mount pid ipc uts cgroup{}\n",
        if p.namespaces.network { " net" } else { "" }
    ));
    s.push_str("mounts:\n");
    for op in &p.ops {
        s.push_str(&format!("  {op}\n"));
    }
    s.push_str("environment:\n");
    for (k, v) in &p.env {
        s.push_str(&format!("  {k}={v}\n"));
    }
    s.push_str(&format!("command: {:?}\n", p.argv));
    if p.namespaces.network {
        s.push_str(&format!(
            "socks5: 127.0.0.1:{} inside, served by the monitor\n",
            crate::socks::PORT
        ));
    }
    if let Some(b) = &p.bus {
        s.push_str(&format!("d-bus proxy: {}\n", bus::describe(b)));
    }
    for w in &p.bus_warnings {
        s.push_str(&format!("note: {w}\n"));
    }
    let sizes: Vec<String> = p
        .filters
        .programs
        .iter()
        .map(|pr| format!("{} ({} insns)", pr.name, pr.bytes.len() / 8))
        .collect();
    let features = crate::permissions::feature_names(p.features);
    s.push_str(&format!(
        "seccomp: {}{}\n",
        sizes.join(", "),
        if features.is_empty() {
            String::new()
        } else {
            format!(" (allow: {})", features.join(", "))
        }
    ));
    for m in &p.missing_sockets {
        s.push_str(&format!(
            "note: --socket={} granted but the host has no such socket\n",
            m.name()
        ));
    }
    s
}
