//! The mount plan: every file-system operation that builds the sandbox's root,
//! computed and validated before the first syscall (bubblewrap's
//! `SetupOpType`, firecracker's `Env::new` then `Env::run`). `porthole run
//! --dry-run` prints it; [`crate::rootfs`] executes it.
//!
//! Destinations are absolute paths inside the new root. Bind sources are
//! absolute host paths that the host side already resolved (canonical, no
//! symlinks); the sandbox side opens them again refusing any symlink.

use std::fmt;
use std::path::{Path, PathBuf};

use crate::mount::{MOUNT_ATTR_NODEV, MOUNT_ATTR_NOEXEC, MOUNT_ATTR_NOSUID, MOUNT_ATTR_RDONLY};

/// A file system created fresh for the sandbox.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FsKind {
    Tmpfs { mode: u32 },
    Proc,
    Devpts,
}

/// One step of the plan.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    /// A directory (parents too, 0755); `mode` for the last component.
    Dir { dest: PathBuf, mode: u32 },
    /// A symlink on the root tmpfs.
    Symlink { target: PathBuf, dest: PathBuf },
    /// A file with fixed contents on the root tmpfs (read-only at the end,
    /// like the rest of the root).
    File {
        dest: PathBuf,
        contents: Vec<u8>,
        mode: u32,
    },
    /// A new file system instance with mount attributes.
    Mount {
        kind: FsKind,
        dest: PathBuf,
        attrs: u64,
    },
    /// A recursive bind of a host path. `attrs` always include NOSUID and,
    /// except for device nodes, NODEV; they are applied to submounts too.
    Bind {
        src: PathBuf,
        dest: PathBuf,
        attrs: u64,
    },
    /// A bind of a socket that the instance's D-Bus proxy creates while the
    /// sandbox is being assembled (`src` in the instance dir, whose parent
    /// exists before the clone). Executed after the proxy's ready byte; the
    /// plan puts these last, so waiting overlaps the rest of the set-up.
    ProxySocket { src: PathBuf, dest: PathBuf },
    /// Make an existing path inside the new root read-only (a bind of itself),
    /// skipped when the path does not exist (e.g. /proc/irq).
    ReadOnlyIfExists { dest: PathBuf },
}

impl fmt::Display for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fn attrs(a: u64) -> String {
            let mut v = Vec::new();
            if a & MOUNT_ATTR_RDONLY != 0 {
                v.push("ro");
            } else {
                v.push("rw");
            }
            if a & MOUNT_ATTR_NOSUID != 0 {
                v.push("nosuid");
            }
            if a & MOUNT_ATTR_NODEV != 0 {
                v.push("nodev");
            }
            if a & MOUNT_ATTR_NOEXEC != 0 {
                v.push("noexec");
            }
            v.join(",")
        }
        match self {
            Op::Dir { dest, mode } => write!(f, "dir      {} (mode {mode:o})", dest.display()),
            Op::Symlink { target, dest } => {
                write!(f, "symlink  {} -> {}", dest.display(), target.display())
            }
            Op::File {
                dest,
                contents,
                mode,
            } => {
                write!(
                    f,
                    "file     {} ({} bytes, mode {mode:o})",
                    dest.display(),
                    contents.len()
                )
            }
            Op::Mount {
                kind,
                dest,
                attrs: a,
            } => {
                let k = match kind {
                    FsKind::Tmpfs { mode } => format!("tmpfs(mode={mode:o})"),
                    FsKind::Proc => "proc".into(),
                    FsKind::Devpts => "devpts".into(),
                };
                write!(f, "mount    {k} on {} [{}]", dest.display(), attrs(*a))
            }
            Op::Bind {
                src,
                dest,
                attrs: a,
            } => {
                write!(
                    f,
                    "bind     {} on {} [{}]",
                    src.display(),
                    dest.display(),
                    attrs(*a)
                )
            }
            Op::ReadOnlyIfExists { dest } => write!(f, "ro-bind  {} (if present)", dest.display()),
            Op::ProxySocket { src, dest } => write!(
                f,
                "bind     {} on {} [rw,nosuid,nodev,noexec] (D-Bus proxy socket, once it listens)",
                src.display(),
                dest.display()
            ),
        }
    }
}

/// Errors in the inputs of a plan, found before anything is mounted.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PlanError {
    #[error("{0}: not an absolute path")]
    NotAbsolute(PathBuf),
    #[error("{0}: paths with `..` or `.` components are not accepted")]
    NotNormal(PathBuf),
    #[error("{0}: this path is reserved for the sandbox and cannot be shared")]
    Reserved(PathBuf),
}

/// Access to a shared host path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    ReadOnly,
    ReadWrite,
}

/// Everything the plan depends on, resolved on the host side beforehand.
#[derive(Debug, Clone, Default)]
pub struct PlanInput {
    pub uid: u32,
    pub gid: u32,
    pub user: String,
    pub home: PathBuf,
    /// Host `/usr` (or the runtime's).
    pub usr: PathBuf,
    /// Extra top-level usr links that exist in `usr` (lib32, libx32, lib64).
    pub usr_lib_links: Vec<String>,
    /// Host files under /etc to bind read-only, as (host source, dest).
    pub etc_binds: Vec<(PathBuf, PathBuf)>,
    /// Small host files copied into /etc, as (dest, contents).
    pub etc_files: Vec<(PathBuf, Vec<u8>)>,
    /// /etc/localtime as a symlink target when the host's is a link into /usr.
    pub localtime_link: Option<PathBuf>,
    /// passwd and group contents.
    pub passwd: String,
    pub group: String,
    /// Contents of /.flatpak-info.
    pub flatpak_info: String,
    /// The app's own data dir on the host, bound at the same path.
    pub app_data: PathBuf,
    /// `--app-dir` content, bound read-only at /app.
    pub app_files: Option<PathBuf>,
    /// `--filesystem` grants (canonical host path, access).
    pub filesystems: Vec<(PathBuf, Access)>,
    /// Host Wayland socket to bind as /run/user/UID/wayland-0.
    pub wayland: Option<PathBuf>,
    /// Host PulseAudio socket to bind as /run/user/UID/pulse/native.
    pub pulse: Option<PathBuf>,
    /// The document store's view of this app (`$XDG_RUNTIME_DIR/doc/by-app/
    /// APP_ID` on the host), bound as /run/user/UID/doc.
    pub documents: Option<PathBuf>,
    /// Host X11 socket and the display number.
    pub x11: Option<(PathBuf, u32)>,
    /// The D-Bus proxy's session socket (instance dir), bound as
    /// /run/user/UID/bus.
    pub session_bus: Option<PathBuf>,
    /// The D-Bus proxy's system-bus socket, bound as
    /// /run/dbus/system_bus_socket.
    pub system_bus: Option<PathBuf>,
    /// Further steps of a Flatpak-installed app (extensions, `persistent=`
    /// directories), after the app's files and grants.
    pub extra_ops: Vec<Op>,
}

/// Paths a `--filesystem` grant may not cover or replace: the sandbox's own
/// skeleton. Granting a path *below* these is fine unless listed here.
const RESERVED: &[&str] = &[
    "/",
    "/usr",
    "/etc",
    "/proc",
    "/dev",
    "/sys",
    "/run",
    "/app",
    "/tmp",
    "/var/tmp",
    "/bin",
    "/lib",
    "/lib64",
    "/sbin",
    "/.flatpak-info",
];

fn check_normal(p: &Path) -> Result<(), PlanError> {
    if !p.is_absolute() {
        return Err(PlanError::NotAbsolute(p.to_owned()));
    }
    use std::path::Component;
    if p.components()
        .any(|c| matches!(c, Component::CurDir | Component::ParentDir))
    {
        return Err(PlanError::NotNormal(p.to_owned()));
    }
    Ok(())
}

/// Checks a `--filesystem` destination against the reserved skeleton.
pub fn check_grant(p: &Path) -> Result<(), PlanError> {
    check_normal(p)?;
    let reserved = RESERVED.iter().any(|r| Path::new(r) == p)
        || p.starts_with("/proc")
        || p.starts_with("/dev")
        || p.starts_with("/sys")
        || p.starts_with("/run/user")
        || p.starts_with("/usr")
        || p.starts_with("/etc");
    if reserved {
        return Err(PlanError::Reserved(p.to_owned()));
    }
    Ok(())
}

const BIND_RO: u64 = MOUNT_ATTR_RDONLY | MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV;
const BIND_RW: u64 = MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV;
const TMP: u64 = MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV;

/// Where a step puts something in the new root.
fn op_dest(op: &Op) -> &Path {
    match op {
        Op::Dir { dest, .. }
        | Op::Symlink { dest, .. }
        | Op::File { dest, .. }
        | Op::Mount { dest, .. }
        | Op::Bind { dest, .. }
        | Op::ProxySocket { dest, .. }
        | Op::ReadOnlyIfExists { dest } => dest,
    }
}

fn p(s: impl AsRef<Path>) -> PathBuf {
    s.as_ref().to_path_buf()
}

/// Builds the plan. Pure: no syscalls, so it is unit-tested and printable.
/// Takes the input by value so that file contents (ld.so.cache is 40 KiB)
/// move into the plan instead of being copied: every heap page a launch
/// touches is a page fault, a copy-on-write fault after `clone`, and peak
/// RSS.
pub fn build(mut input: PlanInput) -> Result<Vec<Op>, PlanError> {
    let etc_files = std::mem::take(&mut input.etc_files);
    let input = &input;
    let mut ops = Vec::new();
    check_normal(&input.home)?;
    check_normal(&input.app_data)?;
    for (path, _) in &input.filesystems {
        check_grant(path)?;
    }

    // /usr and the merged-/usr links.
    ops.push(Op::Bind {
        src: input.usr.clone(),
        dest: p("/usr"),
        attrs: BIND_RO,
    });
    for name in ["bin", "lib", "sbin"]
        .iter()
        .map(|s| s.to_string())
        .chain(input.usr_lib_links.iter().cloned())
    {
        ops.push(Op::Symlink {
            target: p(format!("usr/{name}")),
            dest: p(format!("/{name}")),
        });
    }

    // /etc: only what programs need.
    ops.push(Op::Dir {
        dest: p("/etc"),
        mode: 0o755,
    });
    ops.push(Op::File {
        dest: p("/etc/passwd"),
        contents: input.passwd.clone().into_bytes(),
        mode: 0o644,
    });
    ops.push(Op::File {
        dest: p("/etc/group"),
        contents: input.group.clone().into_bytes(),
        mode: 0o644,
    });
    if let Some(target) = &input.localtime_link {
        ops.push(Op::Symlink {
            target: target.clone(),
            dest: p("/etc/localtime"),
        });
    }
    for (dest, contents) in etc_files {
        ops.push(Op::File {
            dest,
            contents,
            mode: 0o644,
        });
    }
    for (src, dest) in &input.etc_binds {
        ops.push(Op::Bind {
            src: src.clone(),
            dest: dest.clone(),
            attrs: BIND_RO,
        });
    }

    // Private temporary directories.
    ops.push(Op::Mount {
        kind: FsKind::Tmpfs { mode: 0o1777 },
        dest: p("/tmp"),
        attrs: TMP,
    });
    ops.push(Op::Mount {
        kind: FsKind::Tmpfs { mode: 0o1777 },
        dest: p("/var/tmp"),
        attrs: TMP,
    });

    // /dev: a few host nodes (each its own bind, so the tmpfs itself can be
    // nodev), a new devpts, and shm as a world-writable sticky directory on
    // the /dev tmpfs, as bubblewrap's --dev does.
    ops.push(Op::Mount {
        kind: FsKind::Tmpfs { mode: 0o755 },
        dest: p("/dev"),
        attrs: MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV | MOUNT_ATTR_NOEXEC,
    });
    for node in ["null", "zero", "full", "random", "urandom", "tty"] {
        ops.push(Op::Bind {
            src: p(format!("/dev/{node}")),
            dest: p(format!("/dev/{node}")),
            attrs: MOUNT_ATTR_NOSUID | MOUNT_ATTR_NOEXEC,
        });
    }
    ops.push(Op::Mount {
        kind: FsKind::Devpts,
        dest: p("/dev/pts"),
        attrs: MOUNT_ATTR_NOSUID | MOUNT_ATTR_NOEXEC,
    });
    ops.push(Op::Symlink {
        target: p("pts/ptmx"),
        dest: p("/dev/ptmx"),
    });
    ops.push(Op::Dir {
        dest: p("/dev/shm"),
        mode: 0o1777,
    });
    for (name, target) in [
        ("fd", "/proc/self/fd"),
        ("stdin", "/proc/self/fd/0"),
        ("stdout", "/proc/self/fd/1"),
        ("stderr", "/proc/self/fd/2"),
    ] {
        ops.push(Op::Symlink {
            target: p(target),
            dest: p(format!("/dev/{name}")),
        });
    }

    // /proc, with the kernel-wide knobs read-only as bubblewrap does.
    ops.push(Op::Mount {
        kind: FsKind::Proc,
        dest: p("/proc"),
        attrs: MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV | MOUNT_ATTR_NOEXEC,
    });
    for sub in ["sys", "sysrq-trigger", "irq", "bus"] {
        ops.push(Op::ReadOnlyIfExists {
            dest: p(format!("/proc/{sub}")),
        });
    }

    // Home: only the app's own data dir.
    ops.push(Op::Dir {
        dest: input.home.clone(),
        mode: 0o755,
    });

    if let Some(files) = &input.app_files {
        ops.push(Op::Bind {
            src: files.clone(),
            dest: p("/app"),
            attrs: BIND_RO,
        });
    }

    for (path, access) in &input.filesystems {
        ops.push(Op::Bind {
            src: path.clone(),
            dest: path.clone(),
            attrs: match access {
                Access::ReadOnly => BIND_RO,
                Access::ReadWrite => BIND_RW,
            },
        });
    }
    // After the grants: a read-only grant of the home (Flatpak's `home:ro`)
    // must not make the app's own data read-only.
    ops.push(Op::Bind {
        src: input.app_data.clone(),
        dest: input.app_data.clone(),
        attrs: BIND_RW,
    });
    // /run/user/UID: private, holding only the granted sockets.
    let run_user = PathBuf::from(format!("/run/user/{}", input.uid));
    let (in_run_user, extra): (Vec<&Op>, Vec<&Op>) = input
        .extra_ops
        .iter()
        .partition(|op| op_dest(op).starts_with(&run_user));
    ops.extend(extra.into_iter().cloned());
    ops.push(Op::Mount {
        kind: FsKind::Tmpfs { mode: 0o700 },
        dest: run_user.clone(),
        attrs: TMP | MOUNT_ATTR_NOEXEC,
    });
    // Extra steps there come once its tmpfs is mounted.
    ops.extend(in_run_user.into_iter().cloned());
    if let Some(sock) = &input.wayland {
        ops.push(Op::Bind {
            src: sock.clone(),
            dest: run_user.join("wayland-0"),
            attrs: BIND_RW,
        });
    }
    if let Some(sock) = &input.pulse {
        ops.push(Op::Bind {
            src: sock.clone(),
            dest: run_user.join("pulse/native"),
            attrs: BIND_RW,
        });
    }
    if let Some(view) = &input.documents {
        ops.push(Op::Bind {
            src: view.clone(),
            dest: run_user.join("doc"),
            attrs: BIND_RW,
        });
    }
    if let Some((sock, n)) = &input.x11 {
        ops.push(Op::Bind {
            src: sock.clone(),
            dest: PathBuf::from(format!("/tmp/.X11-unix/X{n}")),
            attrs: BIND_RW,
        });
    }

    // The proxy's sockets come last: the sandbox waits for them to listen.
    if let Some(sock) = &input.session_bus {
        check_normal(sock)?;
        ops.push(Op::ProxySocket {
            src: sock.clone(),
            dest: run_user.join("bus"),
        });
    }
    if let Some(sock) = &input.system_bus {
        check_normal(sock)?;
        ops.push(Op::ProxySocket {
            src: sock.clone(),
            dest: p(crate::bus::SYSTEM_BUS_SOCKET),
        });
    }

    // The identity file, on the root tmpfs that becomes read-only.
    ops.push(Op::File {
        dest: p("/.flatpak-info"),
        contents: input.flatpak_info.clone().into_bytes(),
        // 0644 on a read-only mount: a write attempt fails with EROFS (the
        // mount's answer) rather than EACCES.
        mode: 0o644,
    });
    Ok(ops)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn input() -> PlanInput {
        PlanInput {
            uid: 1000,
            gid: 1000,
            user: "u".into(),
            home: "/home/u".into(),
            usr: "/usr".into(),
            usr_lib_links: vec!["lib64".into()],
            etc_binds: vec![("/etc/fonts".into(), "/etc/fonts".into())],
            etc_files: vec![("/etc/ld.so.cache".into(), b"cache".to_vec())],
            localtime_link: Some("/usr/share/zoneinfo/UTC".into()),
            passwd: "u:x:1000:1000::/home/u:/bin/sh\n".into(),
            group: "u:x:1000:\n".into(),
            flatpak_info: "[Application]\nname=org.example.App\n".into(),
            app_data: "/home/u/.var/app/org.example.App".into(),
            app_files: None,
            filesystems: vec![],
            wayland: None,
            pulse: None,
            documents: None,
            x11: None,
            session_bus: None,
            system_bus: None,
            extra_ops: vec![],
        }
    }

    #[test]
    fn the_document_view_is_bound_at_run_user_doc() {
        let ops = build(input()).unwrap();
        assert!(
            !ops.iter()
                .any(|o| o.to_string().contains("/run/user/1000/doc"))
        );
        let mut i = input();
        i.documents = Some("/run/user/1000/doc/by-app/org.example.App".into());
        let ops = build(i).unwrap();
        assert!(ops.contains(&Op::Bind {
            src: "/run/user/1000/doc/by-app/org.example.App".into(),
            dest: "/run/user/1000/doc".into(),
            attrs: BIND_RW,
        }));
    }

    #[test]
    fn usr_is_read_only_and_every_bind_is_nosuid() {
        let ops = build(input()).unwrap();
        assert!(ops.contains(&Op::Bind {
            src: "/usr".into(),
            dest: "/usr".into(),
            attrs: BIND_RO
        }));
        for op in &ops {
            if let Op::Bind { dest, attrs, .. } = op {
                assert_ne!(attrs & MOUNT_ATTR_NOSUID, 0, "{}", dest.display());
                if !dest.starts_with("/dev") {
                    assert_ne!(attrs & MOUNT_ATTR_NODEV, 0, "{}", dest.display());
                }
            }
        }
    }

    #[test]
    fn no_sys_no_host_home_no_bus() {
        let ops = build(input()).unwrap();
        for op in &ops {
            let (dest, mounted) = match op {
                Op::Bind { dest, .. } | Op::Mount { dest, .. } => (dest, true),
                Op::Dir { dest, .. } => (dest, false),
                _ => continue,
            };
            assert!(!dest.starts_with("/sys"));
            if mounted {
                assert_ne!(dest, Path::new("/home/u"), "host home must not be bound");
            }
            assert!(!dest.ends_with("bus"));
            assert!(!dest.starts_with("/run/dbus"));
        }
        // Only the app data dir of the home is bound.
        let home_binds: Vec<_> = ops
            .iter()
            .filter_map(|o| match o {
                Op::Bind { dest, .. } if dest.starts_with("/home") => Some(dest.clone()),
                _ => None,
            })
            .collect();
        assert_eq!(
            home_binds,
            vec![PathBuf::from("/home/u/.var/app/org.example.App")]
        );
    }

    #[test]
    fn sockets_only_when_given() {
        let ops = build(input()).unwrap();
        assert!(!ops.iter().any(|o| o.to_string().contains("wayland-0")));
        let mut i = input();
        i.wayland = Some("/run/user/1000/wayland-0".into());
        i.pulse = Some("/run/user/1000/pulse/native".into());
        let ops = build(i.clone()).unwrap();
        let text: Vec<String> = ops.iter().map(|o| o.to_string()).collect();
        assert!(
            text.iter()
                .any(|t| t.contains("on /run/user/1000/wayland-0 [rw,nosuid,nodev]"))
        );
        assert!(
            text.iter()
                .any(|t| t.contains("on /run/user/1000/pulse/native"))
        );
        // The tmpfs comes first so the sockets land on it.
        let tmpfs = text
            .iter()
            .position(|t| t.contains("tmpfs(mode=700) on /run/user/1000"))
            .unwrap();
        let wl = text.iter().position(|t| t.contains("wayland-0")).unwrap();
        assert!(tmpfs < wl);
    }

    #[test]
    fn proxy_sockets_last_before_identity() {
        let mut i = input();
        i.session_bus = Some("/run/user/1000/porthole/instances/7/bus".into());
        let ops = build(i.clone()).unwrap();
        let n = ops.len();
        assert_eq!(
            ops[n - 2],
            Op::ProxySocket {
                src: "/run/user/1000/porthole/instances/7/bus".into(),
                dest: "/run/user/1000/bus".into(),
            }
        );
        // Never the host's own bus socket, and no system bus unless asked.
        assert!(!ops.iter().any(|o| o.to_string().contains("/run/dbus")));
        i.system_bus = Some("/run/user/1000/porthole/instances/7/system-bus".into());
        let ops = build(i).unwrap();
        assert!(ops.contains(&Op::ProxySocket {
            src: "/run/user/1000/porthole/instances/7/system-bus".into(),
            dest: "/run/dbus/system_bus_socket".into(),
        }));
    }

    #[test]
    fn grants_are_checked() {
        for bad in [
            "/",
            "/usr",
            "/usr/lib",
            "/etc/shadow",
            "/proc/1",
            "/dev/sda",
            "/run/user/1000",
            "/.flatpak-info",
        ] {
            let mut i = input();
            i.filesystems = vec![(bad.into(), Access::ReadWrite)];
            assert_eq!(
                build(i.clone()),
                Err(PlanError::Reserved(bad.into())),
                "{bad}"
            );
        }
        let mut i = input();
        i.filesystems = vec![("/srv/../etc".into(), Access::ReadOnly)];
        assert!(matches!(build(i.clone()), Err(PlanError::NotNormal(_))));
        i.filesystems = vec![("srv".into(), Access::ReadOnly)];
        assert!(matches!(build(i.clone()), Err(PlanError::NotAbsolute(_))));
        i.filesystems = vec![("/srv/data".into(), Access::ReadOnly)];
        let ops = build(i.clone()).unwrap();
        assert!(ops.contains(&Op::Bind {
            src: "/srv/data".into(),
            dest: "/srv/data".into(),
            attrs: BIND_RO
        }));
    }

    #[test]
    fn identity_file_is_last_and_plan_prints() {
        let ops = build(input()).unwrap();
        assert!(
            matches!(ops.last(), Some(Op::File { dest, mode: 0o644, .. }) if dest == Path::new("/.flatpak-info"))
        );
        let printed: String = ops.iter().map(|o| format!("{o}\n")).collect();
        assert!(printed.contains("mount    proc on /proc [rw,nosuid,nodev,noexec]"));
        assert!(printed.contains("symlink  /lib64 -> usr/lib64"));
    }
}
