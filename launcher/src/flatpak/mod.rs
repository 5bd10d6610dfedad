//! Running apps that Flatpak installed: `porthole run APP_ID [ARGS...]`
//! without a command finds the app in the Flatpak installations and runs
//! it as `flatpak run` would, in our sandbox.
//!
//! Stages, one module each: [`refs`] (checked ref parts) →
//! [`installation`] (where apps and runtimes are deployed, their commits) →
//! [`context`] (the permission layers, merged with Flatpak's rules) →
//! [`grants`] (what our sandbox provides for them) and [`extension`]
//! (runtime and app extensions), [`places`] (what every app gets beside
//! its grants). [`resolve`] ties them together into an
//! [`Installed`] that the launch uses instead of `--app-dir`.

pub mod context;
pub mod extension;
pub mod grants;
pub mod installation;
pub mod places;
pub mod refs;

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use porthole_identity::KeyFile;

use crate::exit_code;
use crate::mount::{MOUNT_ATTR_NODEV, MOUNT_ATTR_NOSUID, MOUNT_ATTR_RDONLY};
use crate::permissions::Permissions;
use crate::plan::{Access, FsKind, Op};
use context::{Context, SOCKETS};
use extension::Extension;
use grants::{Grants, HostDirs};
use installation::{Deploy, Installation};
use refs::{Kind, Ref, RefError};

/// What the user asked for on the command line.
#[derive(Debug, Clone, Default)]
pub struct Query {
    pub app_id: String,
    pub arch: Option<String>,
    pub branch: Option<String>,
    /// `--runtime=ID[/ARCH[/BRANCH]]`.
    pub runtime: Option<String>,
    /// `--command=`.
    pub command: Option<String>,
    pub args: Vec<OsString>,
    /// The command line's grants: the last layer of the context written
    /// to `/.flatpak-info` (the launch merges them into the permissions
    /// itself, as for any app).
    pub cli: Permissions,
}

/// Why an installed app cannot be run. Each kind has its exit code.
#[derive(Debug, thiserror::Error)]
pub enum FlatpakError {
    #[error("{what} is not installed (looked in {})", searched(.dirs))]
    NotInstalled { what: String, dirs: Vec<PathBuf> },
    #[error("{app} needs runtime {runtime}, which is not installed (looked in {})", searched(.dirs))]
    RuntimeMissing {
        app: String,
        runtime: String,
        dirs: Vec<PathBuf>,
    },
    #[error("damaged installation: {path}: {reason}")]
    Damaged { path: PathBuf, reason: String },
    #[error(transparent)]
    BadRef(#[from] RefError),
}

fn searched(dirs: &[PathBuf]) -> String {
    dirs.iter()
        .map(|d| d.display().to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

impl FlatpakError {
    pub fn exit_code(&self) -> i32 {
        match self {
            FlatpakError::NotInstalled { .. } => exit_code::NOT_INSTALLED,
            FlatpakError::RuntimeMissing { .. } => exit_code::RUNTIME_MISSING,
            FlatpakError::Damaged { .. } => exit_code::DAMAGED_METADATA,
            FlatpakError::BadRef(_) => exit_code::BAD_REF,
        }
    }
}

impl From<installation::DamagedDeploy> for FlatpakError {
    fn from(e: installation::DamagedDeploy) -> Self {
        FlatpakError::Damaged {
            path: e.path,
            reason: e.reason,
        }
    }
}

/// What `/.flatpak-info` says about an installed app beyond our own keys.
#[derive(Debug, Clone)]
pub struct InfoExtra {
    pub runtime_ref: String,
    pub app_commit: String,
    pub runtime_commit: String,
    /// `ID=COMMIT;...` as Flatpak writes them; empty when none.
    pub app_extensions: String,
    pub runtime_extensions: String,
    pub branch: String,
    pub arch: String,
    /// The merged context, command line included, as Flatpak writes it.
    pub context: Context,
}

/// An installed app, resolved: what the launch needs.
#[derive(Debug, Clone)]
pub struct Installed {
    pub app: Deploy,
    pub runtime: Deploy,
    pub argv: Vec<OsString>,
    pub grants: Grants,
    pub extensions: Vec<Extension>,
    /// Flatpak's default variables for apps (under the context's own).
    pub env: Vec<(String, String)>,
    pub info: InfoExtra,
    /// The host's time zone name, for `/etc/timezone`.
    pub timezone: String,
    /// The runtime's `etc` entries linked from `/etc`.
    pub runtime_etc: Vec<String>,
    /// Host fonts, icons and os-release shown under `/run/host`, as
    /// (host path, sandbox path).
    pub host_share: Vec<(PathBuf, PathBuf)>,
    /// `$XDG_RUNTIME_DIR/app/APP_ID` on the host, made for the app as
    /// `flatpak run` makes it; None without a usable runtime directory.
    pub app_runtime_dir: Option<PathBuf>,
}

impl Installed {
    pub fn app_files(&self) -> PathBuf {
        self.app.files()
    }

    pub fn runtime_files(&self) -> PathBuf {
        self.runtime.files()
    }

    /// Mount-plan steps beyond the usual ones: extensions (a tmpfs first
    /// for subdirectory ones), `persistent=` directories, and the fixed
    /// places `flatpak run` gives every app: `/var/cache`, `/var/data`,
    /// `/var/config` (the app's data directories), `/var/run`,
    /// `/etc/timezone` (and GLib's `/var/db/zoneinfo`), the host's fonts
    /// under `/run/host`, `$XDG_RUNTIME_DIR/app/APP_ID` and the
    /// `flatpak-info` link there.
    pub fn extra_ops(&self, app_data: &Path, uid: u32) -> Vec<Op> {
        let mut ops = Vec::new();
        let ro = MOUNT_ATTR_RDONLY | MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV;
        let rw = MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV;
        for d in ["cache", "data", "config"] {
            ops.push(Op::Bind {
                src: app_data.join(d),
                dest: PathBuf::from("/var").join(d),
                attrs: rw,
            });
        }
        ops.push(Op::Symlink {
            target: PathBuf::from("../run"),
            dest: PathBuf::from("/var/run"),
        });
        ops.push(Op::File {
            dest: PathBuf::from("/etc/timezone"),
            contents: format!("{}\n", self.timezone).into_bytes(),
            mode: 0o644,
        });
        ops.push(Op::Symlink {
            target: PathBuf::from("/etc/timezone"),
            dest: PathBuf::from("/var/db/zoneinfo"),
        });
        for (src, dest) in &self.host_share {
            ops.push(Op::Bind {
                src: src.clone(),
                dest: dest.clone(),
                attrs: ro,
            });
        }
        ops.push(Op::File {
            dest: PathBuf::from("/run/host/font-dirs.xml"),
            contents: places::font_dirs_xml(&self.host_share).into_bytes(),
            mode: 0o644,
        });
        // Flatpak's per-app directory in XDG_RUNTIME_DIR, shared with the
        // host, and the link to the instance info beside it.
        let run_user = PathBuf::from(format!("/run/user/{uid}"));
        if let Some(dir) = &self.app_runtime_dir {
            ops.push(Op::Bind {
                src: dir.clone(),
                dest: run_user.join("app").join(&self.app.r#ref.id),
                attrs: rw,
            });
        }
        ops.push(Op::Symlink {
            target: PathBuf::from("../../../.flatpak-info"),
            dest: run_user.join("flatpak-info"),
        });
        for name in &self.runtime_etc {
            ops.push(Op::Symlink {
                target: PathBuf::from("/usr/etc").join(name),
                dest: PathBuf::from("/etc").join(name),
            });
        }
        let mut tmpfs: Vec<&Path> = Vec::new();
        for e in &self.extensions {
            if let Some(t) = &e.tmpfs
                && !tmpfs.contains(&t.as_path())
            {
                tmpfs.push(t);
                ops.push(Op::Mount {
                    kind: FsKind::Tmpfs { mode: 0o755 },
                    dest: t.clone(),
                    attrs: MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV,
                });
            }
            ops.push(Op::Bind {
                src: e.files.clone(),
                dest: e.dest.clone(),
                attrs: ro,
            });
        }
        // merge-dirs (flatpak_run_add_extension_args): on the tmpfs of
        // subdirectory extensions, DIR/MERGE/NAME links to each
        // extension's DIR/SUB/MERGE/NAME; the first one listed wins.
        let mut linked: Vec<PathBuf> = Vec::new();
        for e in self.extensions.iter().filter(|e| e.tmpfs.is_some()) {
            let Some(parent) = e.base.parent() else {
                continue;
            };
            for md in &e.merge_dirs {
                let Ok(rd) = std::fs::read_dir(e.files.join(md)) else {
                    continue;
                };
                let mut names: Vec<OsString> = rd.flatten().map(|d| d.file_name()).collect();
                names.sort();
                for name in names {
                    let link = parent.join(md).join(&name);
                    if !linked.contains(&link) {
                        ops.push(Op::Symlink {
                            target: e.base.join(md).join(&name),
                            dest: link.clone(),
                        });
                        linked.push(link);
                    }
                }
            }
        }
        for (src, dest, access) in &self.grants.binds {
            ops.push(Op::Bind {
                src: src.clone(),
                dest: dest.clone(),
                attrs: match access {
                    Access::ReadOnly => ro,
                    Access::ReadWrite => rw,
                },
            });
        }
        ops
    }
}

fn read_metadata(path: &Path) -> Result<KeyFile, FlatpakError> {
    let damaged = |reason: String| FlatpakError::Damaged {
        path: path.to_owned(),
        reason,
    };
    let bytes = std::fs::read(path).map_err(|e| damaged(e.to_string()))?;
    KeyFile::parse_bytes(&bytes).map_err(|e| damaged(e.to_string()))
}

fn load_layer(kf: &KeyFile, path: &Path) -> Result<Context, FlatpakError> {
    Context::load(kf).map_err(|e| FlatpakError::Damaged {
        path: path.to_owned(),
        reason: e.0,
    })
}

/// The command line's grants as a context layer (for `/.flatpak-info`).
fn cli_layer(p: &Permissions) -> Context {
    let mut c = Context::default();
    if p.network {
        Context::grant(&mut c.shares, context::SHARES, "network");
    }
    for s in &p.sockets {
        Context::grant(&mut c.sockets, SOCKETS, s.name());
    }
    for f in crate::permissions::feature_names(p.features) {
        Context::grant(&mut c.features, context::FEATURES, f);
    }
    for f in &p.filesystems {
        let mode = match f.access {
            Access::ReadOnly => context::FsMode::ReadOnly,
            Access::ReadWrite => context::FsMode::ReadWrite,
        };
        c.filesystems.insert(&f.path.display().to_string(), mode);
    }
    for (names, policy) in [
        (&p.talk_names, context::Policy::Talk),
        (&p.own_names, context::Policy::Own),
        (&p.see_names, context::Policy::See),
    ] {
        for n in names {
            c.session_bus.insert(n, policy);
        }
    }
    for (names, policy) in [
        (&p.system_talk_names, context::Policy::Talk),
        (&p.system_own_names, context::Policy::Own),
        (&p.system_see_names, context::Policy::See),
    ] {
        for n in names {
            c.system_bus.insert(n, policy);
        }
    }
    for (k, v) in &p.env {
        c.env.insert(k, Some(v.clone()));
    }
    c
}

/// Finds the app and its runtime and computes everything `flatpak run`
/// would: the installations are read from the environment (`env`), the
/// home is the one the app's data lives under.
pub fn resolve(
    q: &Query,
    env: &dyn Fn(&str) -> Option<OsString>,
    home: &Path,
) -> Result<Installed, FlatpakError> {
    let host_env = env;
    refs::check_id("app id", &q.app_id)?;
    if let Some(a) = &q.arch {
        refs::check_arch(a)?;
    }
    if let Some(b) = &q.branch {
        refs::check_branch(b)?;
    }
    let dirs = installation::installations(env, home);
    let paths = || dirs.iter().map(|d| d.path.clone()).collect::<Vec<_>>();

    // Arch and branch: given, else the `current` link's, else the only
    // branch installed.
    let current = installation::current(&dirs, &q.app_id);
    let arch = q
        .arch
        .clone()
        .or_else(|| current.as_ref().map(|c| c.0.clone()))
        .unwrap_or_else(|| refs::host_arch().to_owned());
    let branch = match q.branch.clone().or_else(|| {
        current
            .as_ref()
            .filter(|c| c.0 == arch)
            .map(|c| c.1.clone())
    }) {
        Some(b) => b,
        None => {
            let found = installation::branches(&dirs, Kind::App, &q.app_id, &arch);
            match found.as_slice() {
                [only] => only.clone(),
                [] => {
                    return Err(FlatpakError::NotInstalled {
                        what: format!("app {}", q.app_id),
                        dirs: paths(),
                    });
                }
                many => {
                    return Err(FlatpakError::BadRef(RefError {
                        what: "branch",
                        value: String::new(),
                        reason: format!(
                            "{} has several branches installed ({}) and none is current; choose one with --branch",
                            q.app_id,
                            many.join(", ")
                        ),
                    }));
                }
            }
        }
    };
    let app_ref = Ref::new(Kind::App, &q.app_id, &arch, &branch)?;
    let app = installation::find_deploy_in(&dirs, &app_ref)?.ok_or_else(|| {
        FlatpakError::NotInstalled {
            what: app_ref.to_string(),
            dirs: paths(),
        }
    })?;

    let meta_path = app.metadata_path();
    let meta = read_metadata(&meta_path)?;
    let damaged = |reason: &str| FlatpakError::Damaged {
        path: meta_path.clone(),
        reason: reason.to_owned(),
    };
    match meta.get("Application", "name") {
        Some(n) if n == q.app_id => {}
        Some(n) => return Err(damaged(&format!("names app {n:?}, not {:?}", q.app_id))),
        None => return Err(damaged("no [Application] name")),
    }
    let default_runtime = meta
        .get("Application", "runtime")
        .ok_or_else(|| damaged("no [Application] runtime"))?;
    let default_runtime =
        Ref::runtime_pref(&default_runtime).map_err(|e| damaged(&e.to_string()))?;
    let runtime_ref = match &q.runtime {
        Some(o) => Ref::runtime_override(&default_runtime, o)?,
        None => default_runtime,
    };
    let runtime = installation::find_deploy_in(&dirs, &runtime_ref)?.ok_or_else(|| {
        FlatpakError::RuntimeMissing {
            app: app_ref.to_string(),
            runtime: runtime_ref.to_string(),
            dirs: paths(),
        }
    })?;
    let runtime_meta_path = runtime.metadata_path();
    let runtime_meta = read_metadata(&runtime_meta_path)?;

    let command = match &q.command {
        Some(c) => c.clone(),
        None => meta
            .get("Application", "command")
            .filter(|c| !c.is_empty())
            .ok_or_else(|| damaged("no [Application] command (give one with --command=)"))?,
    };
    let mut argv = vec![OsString::from(command)];
    argv.extend(q.args.iter().cloned());

    // Permission layers, as flatpak_app_compute_permissions and
    // flatpak_deploy_get_overrides order them: runtime, app, the system
    // installation's global and app overrides (for apps installed there),
    // the user's global and app overrides; the command line last.
    let mut ctx = load_layer(&runtime_meta, &runtime_meta_path)?;
    ctx.merge(&load_layer(&meta, &meta_path)?);
    let user = dirs.iter().find(|d| d.user);
    let system_default = dirs.iter().find(|d| !d.user);
    let mut override_dirs: Vec<&Installation> = Vec::new();
    if !app.installation.user
        && let Some(s) = system_default
    {
        override_dirs.push(s);
    }
    if let Some(u) = user {
        override_dirs.push(u);
    }
    for inst in override_dirs {
        for name in ["global", q.app_id.as_str()] {
            if let Some(path) = installation::override_file(inst, name) {
                let kf = read_metadata(&path)?;
                ctx.merge(&load_layer(&kf, &path)?);
            }
        }
    }
    let app_data = home.join(".var/app").join(&q.app_id);
    let mut grants = grants::grants(&ctx, &HostDirs::current(home), &app_data);
    // Flatpak's session-bus filter lets every app own its MPRIS name
    // (flatpak_context_add_bus_filters), beside APP_ID.* which ours has.
    grants
        .permissions
        .own_names
        .push(format!("org.mpris.MediaPlayer2.{}.*", q.app_id));
    let mut info_ctx = ctx.clone();
    info_ctx.merge(&cli_layer(&q.cli));

    let app_extensions = extension::list(&meta, &app_ref, "/app", &dirs);
    let runtime_extensions = extension::list(&runtime_meta, &runtime_ref, "/usr", &dirs);
    let used = |v: &[Extension]| {
        v.iter()
            .map(|e| format!("{}={}", e.id, e.commit))
            .collect::<Vec<_>>()
            .join(";")
    };
    // No ld.so.cache of our own making: the library path, as Flatpak sets
    // it when it does not build one (app extensions, /app/lib, runtime
    // extensions).
    let ld: Vec<String> = app_extensions
        .iter()
        .filter_map(|e| e.ld_path.as_ref())
        .map(|p| p.display().to_string())
        .chain(std::iter::once("/app/lib".to_string()))
        .chain(
            runtime_extensions
                .iter()
                .filter_map(|e| e.ld_path.as_ref())
                .map(|p| p.display().to_string()),
        )
        .collect();
    let env = vec![
        ("FLATPAK_ID".to_string(), q.app_id.clone()),
        (
            "XDG_DATA_DIRS".to_string(),
            "/app/share:/usr/share".to_string(),
        ),
        (
            "XDG_CONFIG_DIRS".to_string(),
            "/app/etc/xdg:/etc/xdg".to_string(),
        ),
        ("SHELL".to_string(), "/bin/sh".to_string()),
        ("LD_LIBRARY_PATH".to_string(), ld.join(":")),
    ];
    let info = InfoExtra {
        runtime_ref: runtime_ref.to_string(),
        app_commit: app.commit.clone(),
        runtime_commit: runtime.commit.clone(),
        app_extensions: used(&app_extensions),
        runtime_extensions: used(&runtime_extensions),
        branch: app_ref.branch.clone(),
        arch: app_ref.arch.clone(),
        context: info_ctx,
    };
    let runtime_etc = places::runtime_etc(&runtime.files());
    let app_rt = places::app_runtime_dir(host_env, &q.app_id);
    let mut extensions = app_extensions;
    extensions.extend(runtime_extensions);
    extensions.sort_by(|a, b| a.dest.cmp(&b.dest));
    Ok(Installed {
        app,
        runtime,
        argv,
        grants,
        extensions,
        env,
        info,
        timezone: places::host_timezone(),
        runtime_etc,
        host_share: places::host_share(&HostDirs::current(home)),
        app_runtime_dir: app_rt,
    })
}

/// Whether `s` names an installed-app query's `--runtime` (a ref) rather
/// than a runtime directory: directories are given as paths.
pub fn is_runtime_ref(s: &std::ffi::OsStr) -> bool {
    let b = s.as_encoded_bytes();
    !(b.starts_with(b"/") || b.starts_with(b"./") || b.starts_with(b"../") || b == b".")
}

/// Adds Flatpak's default variables for apps to `env` where the context
/// (`granted`, already in `env`) did not set them, then removes the
/// context's `unset-environment` ones.
pub fn apply_env(env: &mut Vec<(String, String)>, inst: &Installed, granted: &[(String, String)]) {
    for (k, v) in &inst.env {
        if granted.iter().any(|(g, _)| g == k) {
            continue;
        }
        env.retain(|(key, _)| key != k);
        env.push((k.clone(), v.clone()));
    }
    env.retain(|(k, _)| !inst.grants.unset_env.contains(k));
}

#[cfg(test)]
mod tests {
    use super::*;

    const C1: &str = "1111111111111111111111111111111111111111111111111111111111111111";
    const C2: &str = "2222222222222222222222222222222222222222222222222222222222222222";
    const C3: &str = "3333333333333333333333333333333333333333333333333333333333333333";

    /// Deploys `kind/id/arch/branch` at `commit` in `inst` the way Flatpak
    /// lays it out.
    fn deploy(inst: &Path, r: &str, commit: &str, metadata: &str) {
        let base = inst.join(r);
        let dir = base.join(commit);
        std::fs::create_dir_all(dir.join("files")).unwrap();
        std::fs::write(dir.join("metadata"), metadata).unwrap();
        let mut d = b"origin\0".to_vec();
        d.extend_from_slice(commit.as_bytes());
        d.extend_from_slice(b"\0\0\0\0\0");
        std::fs::write(dir.join("deploy"), d).unwrap();
        std::os::unix::fs::symlink(commit, base.join("active")).unwrap();
    }

    struct Fixture {
        _tmp: tempfile::TempDir,
        home: PathBuf,
        user: PathBuf,
        system: PathBuf,
    }

    impl Fixture {
        fn new() -> Fixture {
            let tmp = tempfile::tempdir().unwrap();
            let root = std::fs::canonicalize(tmp.path()).unwrap();
            let (home, user, system) = (root.join("home"), root.join("user"), root.join("system"));
            std::fs::create_dir_all(&home).unwrap();
            deploy(
                &system,
                "runtime/org.example.Platform/x86_64/1",
                C1,
                "[Runtime]\nname=org.example.Platform\n\n[Context]\nshared=network;\n\n[Environment]\nFROM_RUNTIME=1\n\n[Extension org.example.Platform.GL]\ndirectory=lib/GL\nadd-ld-path=lib\nversions=1;2;\n",
            );
            deploy(
                &system,
                "runtime/org.example.Platform.GL/x86_64/2",
                C3,
                "[Runtime]\nname=org.example.Platform.GL\n",
            );
            deploy(
                &user,
                "app/org.example.App/x86_64/stable",
                C2,
                "[Application]\nname=org.example.App\nruntime=org.example.Platform/x86_64/1\ncommand=run-me\n\n[Context]\nshared=!network;ipc;\nsockets=wayland;\n\n[Session Bus Policy]\norg.example.Svc=talk\n",
            );
            std::os::unix::fs::symlink("x86_64/stable", user.join("app/org.example.App/current"))
                .unwrap();
            Fixture {
                _tmp: tmp,
                home,
                user,
                system,
            }
        }

        fn env(&self) -> impl Fn(&str) -> Option<OsString> + '_ {
            move |k: &str| match k {
                "FLATPAK_USER_DIR" => Some(self.user.clone().into()),
                "FLATPAK_SYSTEM_DIR" => Some(self.system.clone().into()),
                "FLATPAK_CONFIG_DIR" => Some(self.system.join("no-config").into()),
                _ => None,
            }
        }

        fn resolve(&self, q: &Query) -> Result<Installed, FlatpakError> {
            resolve(q, &self.env(), &self.home)
        }
    }

    fn query(args: &[&str]) -> Query {
        Query {
            app_id: "org.example.App".into(),
            args: args.iter().map(OsString::from).collect(),
            ..Default::default()
        }
    }

    #[test]
    fn finds_app_runtime_extensions_and_layers() {
        let f = Fixture::new();
        let i = f.resolve(&query(&["--x"])).unwrap();
        assert_eq!(i.argv, [OsString::from("run-me"), OsString::from("--x")]);
        assert_eq!(i.app.commit, C2);
        assert_eq!(i.runtime.commit, C1);
        assert!(i.app_files().ends_with(format!("stable/{C2}/files")));
        assert!(i.runtime_files().starts_with(&f.system));
        // The app's !network takes away the runtime's network.
        assert!(!i.grants.permissions.network);
        assert_eq!(i.grants.unsupported, ["shared=ipc"]);
        assert_eq!(i.grants.permissions.talk_names, ["org.example.Svc"]);
        assert_eq!(
            i.grants.permissions.own_names,
            ["org.mpris.MediaPlayer2.org.example.App.*"]
        );
        assert_eq!(
            i.grants.permissions.env,
            [("FROM_RUNTIME".to_string(), "1".to_string())]
        );
        // versions=1;2: only 2 is installed.
        assert_eq!(i.extensions.len(), 1);
        assert_eq!(i.extensions[0].dest, PathBuf::from("/usr/lib/GL"));
        assert_eq!(
            i.info.runtime_extensions,
            format!("org.example.Platform.GL={C3}")
        );
        assert_eq!(i.info.runtime_ref, "runtime/org.example.Platform/x86_64/1");
        let ld = i.env.iter().find(|(k, _)| k == "LD_LIBRARY_PATH").unwrap();
        assert_eq!(ld.1, "/app/lib:/usr/lib/GL/lib");
    }

    #[test]
    fn overrides_user_over_app_and_system_only_for_system_apps() {
        let f = Fixture::new();
        std::fs::create_dir_all(f.user.join("overrides")).unwrap();
        std::fs::create_dir_all(f.system.join("overrides")).unwrap();
        std::fs::write(
            f.user.join("overrides/global"),
            "[Context]\nsockets=pulseaudio;\n",
        )
        .unwrap();
        std::fs::write(
            f.user.join("overrides/org.example.App"),
            "[Context]\nsockets=!wayland;\n\n[Session Bus Policy]\norg.example.Svc=none\n",
        )
        .unwrap();
        // The app is a user installation's: system overrides do not apply.
        std::fs::write(
            f.system.join("overrides/org.example.App"),
            "[Context]\nshared=network;\n",
        )
        .unwrap();
        let i = f.resolve(&query(&[])).unwrap();
        let p = &i.grants.permissions;
        assert!(!p.network);
        assert_eq!(
            p.sockets.iter().map(|s| s.name()).collect::<Vec<_>>(),
            ["pulseaudio"]
        );
        assert!(p.talk_names.is_empty());
        let mut kf = KeyFile::new();
        i.info.context.save(&mut kf);
        assert_eq!(kf.get_list("Context", "sockets").unwrap(), ["pulseaudio"]);
        assert_eq!(kf.get("Session Bus Policy", "org.example.Svc"), None);
    }

    #[test]
    fn bad_input_has_its_own_error() {
        let f = Fixture::new();
        let code = |q: &Query| f.resolve(q).unwrap_err().exit_code();
        let mut q = query(&[]);
        q.app_id = "org.example.Other".into();
        assert_eq!(code(&q), exit_code::NOT_INSTALLED);
        let mut q = query(&[]);
        q.runtime = Some("org.example.Nothing".into());
        assert_eq!(code(&q), exit_code::RUNTIME_MISSING);
        for (branch, arch, runtime) in [
            (Some("../../../etc"), None, None),
            (None, Some(".."), None),
            (None, None, Some("org.example.Platform//..")),
            (None, None, Some("../x/y")),
        ] {
            let mut q = query(&[]);
            q.branch = branch.map(Into::into);
            q.arch = arch.map(Into::into);
            q.runtime = runtime.map(Into::into);
            assert_eq!(
                code(&q),
                exit_code::BAD_REF,
                "{branch:?} {arch:?} {runtime:?}"
            );
        }
        // A `current` link pointing out of the installation is a bad ref.
        let cur = f.user.join("app/org.example.App/current");
        std::fs::remove_file(&cur).unwrap();
        std::os::unix::fs::symlink("../../../x", &cur).unwrap();
        assert_eq!(code(&query(&[])), exit_code::BAD_REF);
        std::fs::remove_file(&cur).unwrap();
        // Without `current`, the only branch installed is taken.
        assert!(f.resolve(&query(&[])).is_ok());
        // Damaged metadata, and an `active` link out of its directory.
        let meta = f
            .user
            .join(format!("app/org.example.App/x86_64/stable/{C2}/metadata"));
        std::fs::write(&meta, "not a key file\n").unwrap();
        assert_eq!(code(&query(&[])), exit_code::DAMAGED_METADATA);
        let active = f.user.join("app/org.example.App/x86_64/stable/active");
        std::fs::remove_file(&active).unwrap();
        std::os::unix::fs::symlink("../../../../system", &active).unwrap();
        assert_eq!(code(&query(&[])), exit_code::DAMAGED_METADATA);
    }
}
