//! D-Bus for the sandbox: one filtering proxy per instance, outside the
//! sandbox, started the way Flatpak starts xdg-dbus-proxy
//! (`common/flatpak-run-dbus.c`): arguments through `--args=FD`, a sync pipe
//! through `--fd=FD` on which the proxy writes one byte once its sockets
//! listen, and whose closing (the monitor exiting, even by SIGKILL) makes it
//! exit. The app gets the proxy's socket at /run/user/UID/bus, never the
//! host's own bus socket.
//!
//! The proxy is any program with xdg-dbus-proxy's command line:
//! `$PORTHOLE_DBUS_PROXY`, else `porthole-dbus-proxy` next to `porthole`,
//! else `xdg-dbus-proxy` on PATH.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};

use nix::sys::signal::Signal;
use nix::unistd::Pid;
use porthole_dbus_wire::address::{self, UnixTarget};
use porthole_identity::AppId;

use crate::io_error::PathIoError;
use crate::permissions::Permissions;

/// Where the system bus is when `DBUS_SYSTEM_BUS_ADDRESS` is not set.
pub const SYSTEM_BUS_SOCKET: &str = "/run/dbus/system_bus_socket";

/// Errors of starting the proxy.
#[derive(Debug, thiserror::Error)]
pub enum BusError {
    #[error(transparent)]
    Io(#[from] PathIoError),
}

/// One bus the proxy serves: the host's address and our socket for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BusLink {
    /// The host bus, as a D-Bus address (`unix:path=...`).
    pub address: String,
    /// The proxy's listening socket on the host (in the instance dir).
    pub socket: PathBuf,
    /// Policy arguments (`--filter`, `--talk=...`, ...).
    pub policy: Vec<String>,
}

/// The proxy to start for an instance: resolved by `prepare`, started by
/// the monitor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProxyPlan {
    pub program: PathBuf,
    pub session: Option<BusLink>,
    pub system: Option<BusLink>,
}

impl ProxyPlan {
    /// The arguments passed through `--args=FD`, in xdg-dbus-proxy's order:
    /// `ADDRESS PATH [POLICY...]` for each bus.
    pub fn args(&self) -> Vec<String> {
        let mut v = Vec::new();
        for link in [&self.session, &self.system].into_iter().flatten() {
            v.push(link.address.clone());
            v.push(link.socket.display().to_string());
            v.extend(link.policy.iter().cloned());
        }
        v
    }
}

/// The session-bus policy of a Flatpak app: own its id and the names below
/// it, talk to the portals (calls and their signals), plus its grants.
pub fn session_policy(app_id: &AppId, p: &Permissions) -> Vec<String> {
    let id = app_id.as_str();
    let mut v = vec![
        "--filter".to_string(),
        format!("--own={id}"),
        format!("--own={id}.*"),
        "--talk=org.freedesktop.portal.*".to_string(),
        "--call=org.freedesktop.portal.*=*".to_string(),
        "--broadcast=org.freedesktop.portal.*=@/org/freedesktop/portal/*".to_string(),
    ];
    grants(&mut v, &p.see_names, &p.talk_names, &p.own_names);
    v
}

/// The system-bus policy: only what was granted; None when nothing was.
pub fn system_policy(p: &Permissions) -> Option<Vec<String>> {
    if p.system_talk_names.is_empty()
        && p.system_own_names.is_empty()
        && p.system_see_names.is_empty()
    {
        return None;
    }
    let mut v = vec!["--filter".to_string()];
    grants(
        &mut v,
        &p.system_see_names,
        &p.system_talk_names,
        &p.system_own_names,
    );
    Some(v)
}

fn grants(v: &mut Vec<String>, see: &[String], talk: &[String], own: &[String]) {
    for (names, level) in [(see, "see"), (talk, "talk"), (own, "own")] {
        for n in names {
            v.push(format!("--{level}={n}"));
        }
    }
}

/// The host's session bus address: `DBUS_SESSION_BUS_ADDRESS`, else the
/// socket `RUNTIME/bus`; None when neither exists. Only `unix:path=`
/// addresses are checked for a socket; others are passed on as given.
pub fn session_address(env: Option<&str>, host_runtime: Option<&Path>) -> Option<String> {
    match env {
        Some(a) if !a.is_empty() => (!socket_missing(a)).then(|| a.to_owned()),
        _ => {
            let sock = host_runtime?.join("bus");
            is_socket(&sock).then(|| address::unix_path(&sock))
        }
    }
}

/// The host's system bus address, None when it has no socket.
pub fn system_address(env: Option<&str>) -> Option<String> {
    match env {
        Some(a) if !a.is_empty() => (!socket_missing(a)).then(|| a.to_owned()),
        _ => {
            let sock = Path::new(SYSTEM_BUS_SOCKET);
            is_socket(sock).then(|| address::unix_path(sock))
        }
    }
}

/// True when the socket the proxy would connect to for `address` (its
/// first usable `unix:path=` entry) does not exist. Addresses we cannot
/// read are passed on as given, for the proxy to name the fault.
fn socket_missing(address: &str) -> bool {
    matches!(address::first_unix_target(address), Ok((_, UnixTarget::Path(p))) if !is_socket(&p))
}

fn is_socket(p: &Path) -> bool {
    use std::os::unix::fs::FileTypeExt;
    std::fs::metadata(p)
        .map(|m| m.file_type().is_socket())
        .unwrap_or(false)
}

fn is_executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p)
        .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        .unwrap_or(false)
}

/// The proxy program: `override_` (`$PORTHOLE_DBUS_PROXY`), else
/// `porthole-dbus-proxy` beside `exe`, else `xdg-dbus-proxy` on `path`.
pub fn find_proxy(
    override_: Option<&Path>,
    exe: Option<&Path>,
    path: Option<&std::ffi::OsStr>,
) -> Result<PathBuf, String> {
    if let Some(p) = override_ {
        return if is_executable(p) {
            Ok(p.to_owned())
        } else {
            Err(format!(
                "PORTHOLE_DBUS_PROXY={} is not an executable file",
                p.display()
            ))
        };
    }
    if let Some(ours) = exe
        .and_then(Path::parent)
        .map(|d| d.join("porthole-dbus-proxy"))
        .filter(|p| is_executable(p))
    {
        return Ok(ours);
    }
    if let Some(path) = path {
        for dir in std::env::split_paths(path) {
            let c = dir.join("xdg-dbus-proxy");
            if dir.is_absolute() && is_executable(&c) {
                return Ok(c);
            }
        }
    }
    Err("no D-Bus proxy found (porthole-dbus-proxy beside porthole, xdg-dbus-proxy on PATH, or PORTHOLE_DBUS_PROXY)".into())
}

/// A running proxy; killed and reaped on drop. Holds the read end of the
/// sync pipe: when the monitor dies, the pipe closes and the proxy exits
/// (its parent-death signal covers the same case).
#[derive(Debug)]
pub struct Proxy {
    pid: Pid,
    sync: OwnedFd,
}

impl Proxy {
    pub fn pid(&self) -> Pid {
        self.pid
    }

    /// Sends SIGKILL without waiting; `drop` reaps. Lets the monitor end
    /// the proxy first and reap it after its other clean-up.
    pub fn kill(&self) {
        // Our unreaped child until `drop`: even exited, it takes the signal,
        // so a failure here is worth a line in the log.
        if let Err(e) = nix::sys::signal::kill(self.pid, Signal::SIGKILL) {
            crate::cleanup::failed("kill the D-Bus proxy", &e);
        }
    }

    /// The read end of the sync pipe: one byte arrives once the proxy's
    /// sockets listen; EOF means it exited first.
    pub fn sync_fd(&self) -> std::os::fd::BorrowedFd<'_> {
        use std::os::fd::AsFd;
        self.sync.as_fd()
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.kill();
        if let Err(e) = nix::sys::wait::waitpid(self.pid, None) {
            crate::cleanup::failed("reap the D-Bus proxy", &e);
        }
    }
}

/// A sealed-size memfd holding `args`, NUL-terminated, at offset 0: the
/// proxy reads it to EOF (`--args=FD`), whatever its length.
fn args_fd(args: &[String]) -> std::io::Result<OwnedFd> {
    // SAFETY: the name is a NUL-terminated literal; memfd_create only reads it.
    let fd = unsafe { libc::memfd_create(c"porthole-dbus-proxy-args".as_ptr(), libc::MFD_CLOEXEC) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: memfd_create just returned this descriptor; nothing else owns it.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    let mut bytes = Vec::new();
    for a in args {
        bytes.extend_from_slice(a.as_bytes());
        bytes.push(0);
    }
    let mut f = std::fs::File::from(fd);
    std::io::Write::write_all(&mut f, &bytes)?;
    std::io::Seek::seek(&mut f, std::io::SeekFrom::Start(0))?;
    Ok(f.into())
}

/// One entry of the host's `/`, recreated in the proxy's root.
#[derive(Debug)]
enum RootEntryKind {
    /// A directory: bound recursively from the host.
    Dir,
    /// A regular file: bound from the host.
    File,
    /// A symlink: recreated with this target.
    Symlink(std::ffi::CString),
}

#[derive(Debug)]
struct RootEntry {
    /// The name in `/` (no slash).
    name: std::ffi::CString,
    /// `/NAME`, the host object to bind.
    path: std::ffi::CString,
    kind: RootEntryKind,
}

/// Everything the proxy's child needs to build its own root, prepared
/// before fork so that the child only makes raw, async-signal-safe calls:
/// the host's `/` seen through binds and symlinks, plus a read-only
/// `/.flatpak-info` with the instance's info. Services behind the bus read
/// `/proc/PID/root/.flatpak-info` of the sender, and the sender they see is
/// the proxy: this file is what names the app to them (Flatpak runs
/// xdg-dbus-proxy inside a bwrap for the same reason).
#[derive(Debug)]
struct ProxyRoot {
    entries: Vec<RootEntry>,
    /// One slot per entry for the detached tree cloned in the child.
    trees: Vec<Option<OwnedFd>>,
    info: Vec<u8>,
    /// `Some((uid_map, gid_map))`: also a new user namespace mapping our ids
    /// 1:1 (not root: an unprivileged mount namespace needs one).
    id_maps: Option<(Vec<u8>, Vec<u8>)>,
    /// The directory to return to after the pivot (the proxy's command line
    /// may name a relative program).
    cwd: Option<std::ffi::CString>,
}

impl ProxyRoot {
    fn prepare(info: &[u8]) -> std::io::Result<ProxyRoot> {
        use std::os::unix::ffi::OsStrExt;
        let cstring = |b: &[u8]| {
            std::ffi::CString::new(b)
                .map_err(|_| std::io::Error::from(std::io::ErrorKind::InvalidInput))
        };
        let mut entries = Vec::new();
        for e in std::fs::read_dir("/")? {
            let e = e?;
            let name = e.file_name();
            // Our own identity file is the one shown, never the host's.
            if name == ".flatpak-info" {
                continue;
            }
            let path = Path::new("/").join(&name);
            let ft = std::fs::symlink_metadata(&path)?.file_type();
            let kind = if ft.is_symlink() {
                RootEntryKind::Symlink(cstring(std::fs::read_link(&path)?.as_os_str().as_bytes())?)
            } else if ft.is_dir() {
                RootEntryKind::Dir
            } else if ft.is_file() {
                RootEntryKind::File
            } else {
                continue;
            };
            entries.push(RootEntry {
                name: cstring(name.as_bytes())?,
                path: cstring(path.as_os_str().as_bytes())?,
                kind,
            });
        }
        let uid = nix::unistd::getuid().as_raw();
        let gid = nix::unistd::getgid().as_raw();
        let id_maps = (!nix::unistd::geteuid().is_root()).then(|| {
            (
                format!("{uid} {uid} 1\n").into_bytes(),
                format!("{gid} {gid} 1\n").into_bytes(),
            )
        });
        let cwd = std::env::current_dir()
            .ok()
            .and_then(|d| cstring(d.as_os_str().as_bytes()).ok());
        Ok(ProxyRoot {
            trees: entries.iter().map(|_| None).collect(),
            entries,
            info: info.to_vec(),
            id_maps,
            cwd,
        })
    }
}

/// In the forked child: writes `porthole: D-Bus proxy: STEP: errno N` to
/// stderr and exits 127, so the launcher sees the proxy fail (EOF on the
/// sync pipe) instead of a proxy running without its identity.
/// Async-signal-safe: no allocation, only write(2) and _exit(2). `errno`
/// is the failed call's: the syscall layer's calls return it and leave
/// libc's errno alone, the libc calls here set it ([`last_errno`]).
fn child_fail(step: &[u8], errno: i32) -> ! {
    let mut buf = [0u8; 192];
    let mut n = 0;
    let mut put = |bytes: &[u8]| {
        for &b in bytes {
            if n < buf.len() - 1 {
                buf[n] = b;
                n += 1;
            }
        }
    };
    put(b"porthole: D-Bus proxy: ");
    put(step);
    put(b": errno ");
    let mut digits = [0u8; 12];
    let mut d = digits.len();
    let mut v = errno.unsigned_abs();
    loop {
        d -= 1;
        digits[d] = b'0' + (v % 10) as u8;
        v /= 10;
        if v == 0 {
            break;
        }
    }
    put(&digits[d..]);
    buf[n] = b'\n';
    // SAFETY: write(2) of the initialised `buf[..=n]`, then _exit(2).
    unsafe {
        libc::write(2, buf.as_ptr().cast(), n + 1);
        libc::_exit(127)
    }
}

/// The errno of the libc call that just failed.
fn last_errno() -> i32 {
    // SAFETY: __errno_location returns this thread's errno slot.
    unsafe { *libc::__errno_location() }
}

/// The errno in an error of the syscall layer (0 if it holds none).
fn errno_of(e: &std::io::Error) -> i32 {
    e.raw_os_error().unwrap_or(0)
}

// Thin wrappers of the syscalls the proxy's child makes between fork and
// execv. Each is async-signal-safe (one raw syscall, no allocation, no
// lock) and returns the kernel's answer; `child_enter_root` decides what a
// failure means.

/// Writes all of `data` to `fd`, retrying on EINTR and short writes.
fn sys_write_all(fd: libc::c_int, mut data: &[u8]) -> bool {
    while !data.is_empty() {
        // SAFETY: write(2) reads `data.len()` initialised bytes.
        let n = unsafe { libc::write(fd, data.as_ptr().cast(), data.len()) };
        if n < 0 && std::io::Error::last_os_error().raw_os_error() == Some(libc::EINTR) {
            continue;
        }
        if n <= 0 {
            return false;
        }
        data = &data[n as usize..];
    }
    true
}

/// Writes `data` to the existing file at `path` (a /proc/self file).
fn sys_write_file(path: &std::ffi::CStr, data: &[u8]) -> bool {
    // SAFETY: `path` is NUL-terminated; the descriptor is ours and closed.
    let fd = unsafe { libc::open(path.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC) };
    if fd < 0 {
        return false;
    }
    let ok = sys_write_all(fd, data);
    // SAFETY: closing the descriptor opened above.
    unsafe { libc::close(fd) };
    ok
}

/// Creates `name` in `dir` with O_EXCL, mode 0444; the new fd or -1.
fn sys_create(dir: libc::c_int, name: &std::ffi::CStr) -> libc::c_int {
    // SAFETY: openat(2) with a NUL-terminated name.
    unsafe {
        libc::openat(
            dir,
            name.as_ptr(),
            libc::O_WRONLY | libc::O_CREAT | libc::O_EXCL | libc::O_CLOEXEC,
            0o444,
        )
    }
}

/// `open_tree(OPEN_TREE_CLONE | AT_RECURSIVE)` of `path`, symlinks not
/// followed: a detached copy of the tree, like `mount --rbind`.
fn sys_clone_tree(path: &std::ffi::CStr) -> std::io::Result<OwnedFd> {
    use crate::sys::mount::{CWD, OpenTreeFlags as F};
    // AT_NO_AUTOMOUNT: an autofs entry in / is cloned as it is, never
    // mounted (a dead NFS server would block the proxy).
    crate::sys::mount::open_tree(
        CWD,
        path,
        F::OPEN_TREE_CLONE | F::AT_RECURSIVE | F::AT_SYMLINK_NOFOLLOW | F::AT_NO_AUTOMOUNT,
    )
}

/// A new, detached tmpfs (mode 0755, nosuid, nodev). Not
/// [`crate::mount::new_fs`]: its error names the path in a `String`, an
/// allocation the child must not make.
fn sys_new_tmpfs() -> std::io::Result<OwnedFd> {
    use crate::sys::mount::{self as m, MOUNT_ATTR_NODEV, MOUNT_ATTR_NOSUID};
    use std::os::fd::AsFd;
    let fs = m::fsopen(c"tmpfs")?;
    m::fsconfig_set_string(fs.as_fd(), c"mode", c"0755")?;
    m::fsconfig_create(fs.as_fd())?;
    m::fsmount(fs.as_fd(), MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV)
}

/// Attaches the detached mount `tree` at `name` in `dir` (`dir` may be
/// [`crate::sys::mount::CWD`] and `name` a path).
fn sys_attach(
    tree: std::os::fd::BorrowedFd<'_>,
    dir: std::os::fd::BorrowedFd<'_>,
    name: &std::ffi::CStr,
) -> std::io::Result<()> {
    use crate::sys::mount::MoveMountFlags;
    crate::sys::mount::move_mount(
        tree,
        c"",
        dir,
        name,
        MoveMountFlags::MOVE_MOUNT_F_EMPTY_PATH,
    )
}

/// In the forked child: new namespaces and a root of our own (see
/// [`ProxyRoot`]), pivoted into; returns only when all of it is in place
/// (any failure ends the child through [`child_fail`]). Only raw,
/// async-signal-safe calls on data prepared before fork (`root.trees` is
/// written by index, never grown), so it is sound after fork in a
/// multi-threaded process.
fn child_enter_root(root: &mut ProxyRoot) {
    use std::os::fd::AsFd;
    let flags = if root.id_maps.is_some() {
        libc::CLONE_NEWUSER | libc::CLONE_NEWNS
    } else {
        libc::CLONE_NEWNS
    };
    // SAFETY: unshare(2) takes flags only.
    if unsafe { libc::unshare(flags) } != 0 {
        child_fail(b"unshare", last_errno());
    }
    if let Some((uid_map, gid_map)) = &root.id_maps {
        // An unprivileged process may map only its own ids, and its gid
        // only after denying setgroups(2) (user_namespaces(7)).
        if !sys_write_file(c"/proc/self/setgroups", b"deny") {
            child_fail(b"write /proc/self/setgroups", last_errno());
        }
        if !sys_write_file(c"/proc/self/uid_map", uid_map) {
            child_fail(b"write /proc/self/uid_map", last_errno());
        }
        if !sys_write_file(c"/proc/self/gid_map", gid_map) {
            child_fail(b"write /proc/self/gid_map", last_errno());
        }
    }
    if let Err(e) = crate::sys::mount::make_rslave_root() {
        child_fail(b"mount(MS_REC|MS_SLAVE) /", errno_of(&e));
    }
    // Detached copies of the host's trees, taken before our root covers
    // /tmp: like `mount --rbind`, submounts included.
    for (entry, slot) in root.entries.iter().zip(root.trees.iter_mut()) {
        if matches!(entry.kind, RootEntryKind::Symlink(_)) {
            continue;
        }
        match sys_clone_tree(&entry.path) {
            // Assigning over `None` frees nothing: no allocation.
            Ok(fd) => *slot = Some(fd),
            Err(e) => child_fail(entry.path.as_bytes(), errno_of(&e)),
        }
    }
    // The new root: a tmpfs, attached over /tmp of this namespace.
    let rootfd = match sys_new_tmpfs() {
        Ok(fd) => fd,
        Err(e) => child_fail(b"new tmpfs root", errno_of(&e)),
    };
    if let Err(e) = sys_attach(rootfd.as_fd(), crate::sys::mount::CWD, c"/tmp") {
        child_fail(b"move_mount new root /tmp", errno_of(&e));
    }
    let root_raw = rootfd.as_raw_fd();
    for (entry, slot) in root.entries.iter().zip(root.trees.iter_mut()) {
        match &entry.kind {
            RootEntryKind::Symlink(target) => {
                // SAFETY: symlinkat(2) with two NUL-terminated strings.
                if unsafe { libc::symlinkat(target.as_ptr(), root_raw, entry.name.as_ptr()) } != 0 {
                    child_fail(entry.path.as_bytes(), last_errno());
                }
                continue;
            }
            RootEntryKind::Dir => {
                // SAFETY: mkdirat(2) with a NUL-terminated name.
                if unsafe { libc::mkdirat(root_raw, entry.name.as_ptr(), 0o755) } != 0 {
                    child_fail(entry.path.as_bytes(), last_errno());
                }
            }
            RootEntryKind::File => {
                let fd = sys_create(root_raw, &entry.name);
                if fd < 0 {
                    child_fail(entry.path.as_bytes(), last_errno());
                }
                // SAFETY: closing the descriptor just created.
                unsafe { libc::close(fd) };
            }
        }
        // Taken out of its slot and closed (dropped) once attached.
        let Some(tree) = slot.take() else {
            child_fail(entry.path.as_bytes(), libc::EBADF);
        };
        if let Err(e) = sys_attach(tree.as_fd(), rootfd.as_fd(), &entry.name) {
            child_fail(entry.path.as_bytes(), errno_of(&e));
        }
    }
    // The instance's identity, the same bytes as the sandbox's.
    let fd = sys_create(root_raw, c".flatpak-info");
    if fd < 0 {
        child_fail(b"create /.flatpak-info", last_errno());
    }
    if !sys_write_all(fd, &root.info) {
        child_fail(b"write /.flatpak-info", last_errno());
    }
    // SAFETY: closing the descriptor created above.
    unsafe { libc::close(fd) };
    // The root tmpfs itself (not the binds on it) becomes read-only.
    if let Err(e) = crate::sys::mount::set_attr(
        rootfd.as_fd(),
        crate::sys::mount::MOUNT_ATTR_RDONLY,
        0,
        false,
    ) {
        child_fail(b"mount_setattr(MOUNT_ATTR_RDONLY) new root", errno_of(&e));
    }
    if let Err((step, e)) = crate::sys::mount::pivot_into(rootfd.as_fd()) {
        child_fail(step.as_bytes(), errno_of(&e));
    }
    // Our fd of the new root, now `/`, closes.
    drop(rootfd);
    // Back where the launcher was (every host path is still there), else /.
    // SAFETY: chdir(2) with NUL-terminated paths.
    let back = root
        .cwd
        .as_ref()
        .is_some_and(|d| unsafe { libc::chdir(d.as_ptr()) } == 0);
    // SAFETY: as above.
    if !back && unsafe { libc::chdir(c"/".as_ptr()) } != 0 {
        child_fail(b"chdir /", last_errno());
    }
}

/// Starts the proxy. Returns at once, without waiting for its `execve`
/// (fork, not posix_spawn, whose vfork semantics would keep the launch
/// waiting for the exec): the caller reads the ready byte from
/// [`Proxy::sync_fd`] when it needs the sockets, and an exec failure shows
/// there as EOF.
///
/// The proxy runs in a mount namespace of its own (and a user namespace
/// when we are not root) whose root shows the host's `/` unchanged plus a
/// read-only `/.flatpak-info` holding `info`, the instance's info: the bus
/// reports the proxy as the sender of the app's messages, and services
/// identify the app from that file (see [`ProxyRoot`]).
pub fn start(plan: &ProxyPlan, info: &[u8]) -> Result<Proxy, BusError> {
    let args = args_fd(&plan.args()).map_err(PathIoError::with("memfd for", &plan.program))?;
    let mut root = ProxyRoot::prepare(info)
        .map_err(PathIoError::with("list / for the root of", &plan.program))?;
    let (sync_r, sync_w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)
        .map_err(PathIoError::with("pipe for", &plan.program))?;
    let null = std::fs::File::options()
        .read(true)
        .write(true)
        .open("/dev/null")
        .map_err(PathIoError::with("open /dev/null for", &plan.program))?;
    // Everything the child needs exists before fork: it only makes
    // async-signal-safe calls.
    let cstr = |s: &[u8]| {
        std::ffi::CString::new(s).map_err(|_| {
            PathIoError::new(
                "NUL byte in",
                &plan.program,
                std::io::ErrorKind::InvalidInput,
            )
        })
    };
    let program = cstr(plan.program.as_os_str().as_encoded_bytes())?;
    let fd_arg = cstr(format!("--fd={}", sync_w.as_raw_fd()).as_bytes())?;
    let args_arg = cstr(format!("--args={}", args.as_raw_fd()).as_bytes())?;
    let argv = [
        program.as_ptr(),
        fd_arg.as_ptr(),
        args_arg.as_ptr(),
        std::ptr::null(),
    ];
    let parent = nix::unistd::getpid().as_raw();
    let (args_raw, sync_raw, null_raw) = (args.as_raw_fd(), sync_w.as_raw_fd(), null.as_raw_fd());
    // SAFETY: the child calls only async-signal-safe functions (prctl,
    // getppid, setsid, close_range, unshare, open/write/close, the mount syscalls, pivot_root,
    // chdir, fcntl, dup2, execv, write, _exit) on data prepared above, so fork is
    // sound even if the process had other threads.
    let pid = match unsafe { nix::unistd::fork() } {
        Err(e) => return Err(PathIoError::new("fork for", &plan.program, e).into()),
        // SAFETY: in the forked child: only async-signal-safe libc calls on
        // descriptors and strings that stay valid until execv or _exit.
        Ok(nix::unistd::ForkResult::Child) => unsafe {
            // The proxy dies with the monitor, even a SIGKILLed one; the
            // sync pipe's hang-up says the same to the proxy itself.
            if crate::init::parent_death_signal(Signal::SIGKILL).is_err()
                || libc::getppid() != parent
            {
                libc::_exit(1);
            }
            // Its own session: a terminal's SIGINT or SIGTSTP for porthole
            // must not stop the app's bus (the app gets them forwarded).
            libc::setsid();
            // Nothing the caller of porthole left open survives our exec
            // (a directory fd would undo the proxy's mount namespace).
            // Ignored on failure, as before: a kernel older than 5.11 has
            // no CLOSE_RANGE_CLOEXEC, and the proxy still runs there.
            crate::sys::fd::set_cloexec_range(3, libc::c_uint::MAX).ok();
            child_enter_root(&mut root);
            for fd in [args_raw, sync_raw] {
                if libc::fcntl(fd, libc::F_SETFD, 0) != 0 {
                    libc::_exit(1);
                }
            }
            // stdin and stdout on /dev/null (unless the caller of porthole
            // started us with those closed and our pipes landed there).
            for fd in [0, 1] {
                if fd != args_raw && fd != sync_raw {
                    libc::dup2(null_raw, fd);
                }
            }
            libc::execv(argv[0], argv.as_ptr());
            // Tell the launcher why: a NUL (the proxy's ready byte is
            // never NUL) and errno, on the pipe that would have said ready.
            let errno = *libc::__errno_location();
            let mut msg = [0u8; 5];
            msg[1..].copy_from_slice(&errno.to_ne_bytes());
            libc::write(sync_raw, msg.as_ptr().cast(), msg.len());
            libc::_exit(127)
        },
        Ok(nix::unistd::ForkResult::Parent { child }) => child,
    };
    // Our copies of the write end and the arguments close here: EOF on the
    // sync pipe then means the proxy is gone.
    drop(sync_w);
    drop(args);
    drop(null);
    drop(root);
    Ok(Proxy { pid, sync: sync_r })
}

/// Waits for the proxy's ready byte on `fd`. `Err(Some(e))` when the proxy
/// could not be executed (the forked child reports errno), `Err(None)` when
/// it exited before listening.
pub fn wait_ready(fd: std::os::fd::BorrowedFd<'_>) -> Result<(), Option<std::io::Error>> {
    let mut b = [0u8; 5];
    let mut got = 0;
    loop {
        match nix::unistd::read(fd, &mut b[got..]) {
            Ok(0) => return Err(None),
            Ok(n) => {
                got += n;
                if b[0] != 0 {
                    return Ok(());
                }
                if got == b.len() {
                    let errno = i32::from_ne_bytes([b[1], b[2], b[3], b[4]]);
                    return Err(Some(std::io::Error::from_raw_os_error(errno)));
                }
            }
            Err(nix::Error::EINTR) => continue,
            Err(_) => return Err(None),
        }
    }
}

/// The app's address of the session bus inside the sandbox.
pub fn inside_session_address(uid: u32) -> String {
    address::unix_path(Path::new(&format!("/run/user/{uid}/bus")))
}

/// The app's address of the system bus inside the sandbox.
pub fn inside_system_address() -> String {
    address::unix_path(Path::new(SYSTEM_BUS_SOCKET))
}

/// For `--dry-run`: the proxy's command line as one would type it.
pub fn describe(plan: &ProxyPlan) -> String {
    let mut s = plan.program.display().to_string();
    for a in plan.args() {
        s.push(' ');
        s.push_str(&a);
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flatpak_default_session_policy_plus_grants() {
        let id = AppId::parse("org.example.App").unwrap();
        let p = Permissions {
            talk_names: vec!["org.example.Svc".into()],
            own_names: vec!["org.example.Other".into()],
            see_names: vec!["org.example.Seen".into()],
            ..Default::default()
        };
        assert_eq!(
            session_policy(&id, &p),
            vec![
                "--filter",
                "--own=org.example.App",
                "--own=org.example.App.*",
                "--talk=org.freedesktop.portal.*",
                "--call=org.freedesktop.portal.*=*",
                "--broadcast=org.freedesktop.portal.*=@/org/freedesktop/portal/*",
                "--see=org.example.Seen",
                "--talk=org.example.Svc",
                "--own=org.example.Other",
            ]
        );
        assert_eq!(system_policy(&p), None);
        let sys = Permissions {
            system_talk_names: vec!["org.freedesktop.login1".into()],
            ..Default::default()
        };
        assert_eq!(
            system_policy(&sys).unwrap(),
            vec!["--filter", "--talk=org.freedesktop.login1"]
        );
    }

    #[test]
    fn args_in_upstream_order() {
        let plan = ProxyPlan {
            program: "/usr/bin/xdg-dbus-proxy".into(),
            session: Some(BusLink {
                address: "unix:path=/run/user/1/bus".into(),
                socket: "/run/user/1/porthole/instances/7/bus".into(),
                policy: vec!["--filter".into()],
            }),
            system: Some(BusLink {
                address: "unix:path=/run/dbus/system_bus_socket".into(),
                socket: "/run/user/1/porthole/instances/7/system-bus".into(),
                policy: vec!["--filter".into(), "--talk=a.b.c".into()],
            }),
        };
        assert_eq!(
            plan.args(),
            vec![
                "unix:path=/run/user/1/bus",
                "/run/user/1/porthole/instances/7/bus",
                "--filter",
                "unix:path=/run/dbus/system_bus_socket",
                "/run/user/1/porthole/instances/7/system-bus",
                "--filter",
                "--talk=a.b.c",
            ]
        );
    }

    #[test]
    fn addresses() {
        // A unix:path address whose socket is missing is no bus.
        assert_eq!(
            session_address(Some("unix:path=/nonexistent/bus"), None),
            None
        );
        assert_eq!(
            system_address(Some("tcp:host=a;unix:path=/nonexistent/bus,guid=1")),
            None
        );
        // The socket's path is %-unescaped before it is looked at, and a
        // path we name ourselves is escaped.
        let dir = tempfile::tempdir().unwrap();
        let odd = dir.path().join("a b,c");
        std::fs::create_dir(&odd).unwrap();
        let _l = std::os::unix::net::UnixListener::bind(odd.join("bus")).unwrap();
        let escaped = format!("unix:path={}/a%20b%2cc/bus", dir.path().display());
        assert_eq!(
            session_address(Some(&escaped), None).as_deref(),
            Some(escaped.as_str())
        );
        assert_eq!(
            session_address(None, Some(&odd)).as_deref(),
            Some(escaped.as_str())
        );
        // Other transports are passed on as given.
        assert_eq!(
            session_address(Some("unix:abstract=/tmp/x"), None).as_deref(),
            Some("unix:abstract=/tmp/x")
        );
        assert_eq!(session_address(None, Some(Path::new("/nonexistent"))), None);
    }

    #[test]
    fn proxy_lookup_order() {
        let dir = tempfile::tempdir().unwrap();
        let exe = dir.path().join("porthole");
        let err = find_proxy(Some(&dir.path().join("none")), Some(&exe), None).unwrap_err();
        assert!(err.contains("PORTHOLE_DBUS_PROXY"), "{err}");
        let ours = dir.path().join("porthole-dbus-proxy");
        std::fs::write(&ours, "#!/bin/sh\n").unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&ours, std::fs::Permissions::from_mode(0o755)).unwrap();
        assert_eq!(find_proxy(None, Some(&exe), None).unwrap(), ours);
        assert!(find_proxy(None, None, Some(std::ffi::OsStr::new("/nonexistent"))).is_err());
    }
}
