//! Per-instance cgroups, in whichever hierarchy has the controller.
//!
//! Hosts differ: a pure cgroup v2 tree with delegated controllers; or, as on
//! the machine this was written on, a v2 tree with no controllers enabled and
//! `pids` and `memory` in v1 hierarchies. For each limit asked for we take the
//! hierarchy that actually offers the controller (v2 first), create
//! `porthole-INSTANCE` below our current cgroup there (or below a directory
//! an administrator delegated to us: `MOUNT/porthole/UID`) and write the
//! limit.
//!
//! Every instance gets a cgroup of its own, limits or not, wherever the host
//! offers a writable place, in this order: a systemd user scope (below); a
//! v2 directory (our own cgroup's, when we may write it, or a delegated
//! `MOUNT/porthole/UID`); one directory in each of the v1 `pids` and
//! `memory` hierarchies, in the same two places. Where there is none, an
//! info line says so and the instance stays in its caller's cgroups.
//!
//! Getting in: the sandbox's pid 1 is born in the v2 directory
//! (`clone3(CLONE_INTO_CGROUP)`), and joins the v1 ones itself as its first
//! step, through `tasks` files the monitor opened before the clone
//! ([`InstanceCgroup::v1_join_files`]): moving a process from outside takes
//! the kernel's cgroup_threadgroup_rwsem for writing (5 to 9 ms a launch on
//! the development host), moving the calling thread does not.
//!
//! Where a systemd user manager runs, the unified hierarchy is its own: the
//! instance then gets a transient scope from it ([`crate::systemd`]) and
//! only v1 hierarchies get directories from us, for the limits that live
//! there ([`InstanceCgroup::create_beside_scope`]).

use std::io::ErrorKind;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};

use crate::io_error::PathIoError;

/// Resource limits asked for on the command line.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Limits {
    pub memory_max: Option<u64>,
    pub pids_max: Option<u64>,
}

impl Limits {
    pub fn is_empty(&self) -> bool {
        self.memory_max.is_none() && self.pids_max.is_none()
    }
}

/// Errors while creating or using the instance cgroup.
#[derive(Debug, thiserror::Error)]
pub enum CgroupError {
    #[error("no cgroup hierarchy on this host offers the {0} controller")]
    NoController(&'static str),
    #[error(
        "cannot create a cgroup for the {controller} controller under {tried}: {source} (an administrator can delegate one: mkdir -p {mount}/porthole/{uid} && chown -R {uid} {mount}/porthole/{uid})"
    )]
    NotPermitted {
        controller: &'static str,
        tried: String,
        mount: String,
        uid: u32,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Io(#[from] PathIoError),
}

/// A mounted cgroup hierarchy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hierarchy {
    pub mount: PathBuf,
    /// v1 controllers of this mount; empty for v2.
    pub v1_controllers: Vec<String>,
    pub v2: bool,
}

/// Parses `/proc/self/mounts` text for cgroup hierarchies.
pub fn parse_mounts(text: &str) -> Vec<Hierarchy> {
    let mut out = Vec::new();
    for line in text.lines() {
        let f: Vec<&str> = line.split_whitespace().collect();
        if f.len() < 4 {
            continue;
        }
        let mount = PathBuf::from(f[1].replace("\\040", " "));
        match f[2] {
            "cgroup2" => out.push(Hierarchy {
                mount,
                v1_controllers: vec![],
                v2: true,
            }),
            "cgroup" => {
                let ctrls = f[3]
                    .split(',')
                    .filter(|o| {
                        !o.contains('=')
                            && !matches!(
                                *o,
                                "rw" | "ro"
                                    | "nosuid"
                                    | "nodev"
                                    | "noexec"
                                    | "relatime"
                                    | "noatime"
                            )
                    })
                    .map(str::to_owned)
                    .collect();
                out.push(Hierarchy {
                    mount,
                    v1_controllers: ctrls,
                    v2: false,
                })
            }
            _ => {}
        }
    }
    out
}

/// Our cgroup path in a hierarchy, from `/proc/self/cgroup` text.
pub fn current_path(proc_cgroup: &str, h: &Hierarchy) -> Option<PathBuf> {
    for line in proc_cgroup.lines() {
        let mut parts = line.splitn(3, ':');
        let (_, ctrls, path) = (parts.next()?, parts.next()?, parts.next()?);
        let matches = if h.v2 {
            ctrls.is_empty()
        } else {
            let set: Vec<&str> = ctrls.split(',').collect();
            h.v1_controllers.iter().all(|c| set.contains(&c.as_str())) && !set.is_empty()
        };
        if matches {
            return Some(PathBuf::from(path));
        }
    }
    None
}

fn v2_offers(dir: &Path, controller: &str) -> bool {
    std::fs::read_to_string(dir.join("cgroup.controllers"))
        .map(|s| s.split_whitespace().any(|c| c == controller))
        .unwrap_or(false)
}

/// One directory of the instance's cgroup.
#[derive(Debug, Clone)]
struct CgDir {
    path: PathBuf,
    v2: bool,
}

/// The instance's cgroup directories.
#[derive(Debug)]
pub struct InstanceCgroup {
    dirs: Vec<CgDir>,
}

/// Reads a small /proc file with one large read: `read_to_string` starts
/// with a 32-byte buffer, and every extra read makes the kernel generate
/// the seq_file text again up to the offset.
fn read_proc(path: &str, cap: usize) -> String {
    use std::io::Read;
    let mut s = String::with_capacity(cap);
    if let Ok(mut f) = std::fs::File::open(path) {
        let _ = f.read_to_string(&mut s);
    }
    s
}

/// The standard places of the v2 hierarchy: `/sys/fs/cgroup` (unified
/// hosts) and `/sys/fs/cgroup/unified` (hybrid hosts such as this one).
/// Checked with statfs(2) so that a launch without limits, which needs
/// only the v2 hierarchy, does not read and parse /proc/self/mounts (the
/// kernel formats every mount's options for it).
fn standard_v2_mount() -> Option<Hierarchy> {
    const CGROUP2_SUPER_MAGIC: libc::c_long = 0x6367_7270;
    for path in [c"/sys/fs/cgroup", c"/sys/fs/cgroup/unified"] {
        // SAFETY: statfs is plain old data; all-zero is a valid value.
        let mut st: libc::statfs = unsafe { std::mem::zeroed() };
        // SAFETY: `path` is a NUL-terminated string and `st` a writable
        // statfs; the kernel writes only into `st`.
        if unsafe { libc::statfs(path.as_ptr(), &mut st) } == 0
            && st.f_type as libc::c_long == CGROUP2_SUPER_MAGIC
        {
            return Some(Hierarchy {
                mount: PathBuf::from(path.to_str().expect("ASCII literal")),
                v1_controllers: vec![],
                v2: true,
            });
        }
    }
    None
}

/// The unified-hierarchy directory that holds `pid` (such as its systemd
/// scope), for `porthole enter` to join.
pub fn v2_dir_of(pid: i32) -> Option<PathBuf> {
    let h = standard_v2_mount()?;
    let text = read_proc(&format!("/proc/{pid}/cgroup"), 1024);
    let cur = current_path(&text, &h)?;
    Some(h.mount.join(cur.strip_prefix("/").unwrap_or(&cur)))
}

/// The hierarchies to consider and our own `/proc/self/cgroup` text. With
/// no limits only the v2 hierarchy matters (see [`standard_v2_mount`]).
fn host_state(limits: &Limits) -> (Vec<Hierarchy>, String) {
    let own = read_proc("/proc/self/cgroup", 1024);
    if limits.is_empty()
        && let Some(v2) = standard_v2_mount()
    {
        return (vec![v2], own);
    }
    let mounts = read_proc("/proc/self/mounts", 16384);
    (parse_mounts(&mounts), own)
}

/// Where a controller lives: (hierarchy, our cgroup dir in it).
fn locate<'a>(
    hs: &'a [Hierarchy],
    own: &str,
    controller: &'static str,
) -> Option<(&'a Hierarchy, PathBuf)> {
    for h in hs.iter().filter(|h| h.v2) {
        if let Some(cur) = current_path(own, h) {
            let dir = h.mount.join(cur.strip_prefix("/").unwrap_or(&cur));
            if v2_offers(&dir, controller) {
                return Some((h, dir));
            }
        }
    }
    for h in hs
        .iter()
        .filter(|h| !h.v2 && h.v1_controllers.iter().any(|c| c == controller))
    {
        if let Some(cur) = current_path(own, h) {
            return Some((h, h.mount.join(cur.strip_prefix("/").unwrap_or(&cur))));
        }
    }
    None
}

/// Removes `porthole-*` cgroups below `parent` that a monitor killed with
/// SIGKILL left behind: only empty ones (rmdir refuses populated cgroups
/// with EBUSY) and only older than a minute, so a concurrent launch's fresh,
/// still empty directory is never taken away from it.
fn sweep_stale(parent: &Path) {
    let Ok(entries) = std::fs::read_dir(parent) else {
        return;
    };
    let now = std::time::SystemTime::now();
    for e in entries.flatten() {
        if !e.file_name().to_string_lossy().starts_with("porthole-") {
            continue;
        }
        let old = e
            .metadata()
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| now.duration_since(t).ok())
            .is_some_and(|age| age > std::time::Duration::from_secs(60));
        // Ignored on failure: EBUSY is an instance whose monitor was
        // killed while its app still runs there, and whatever else stops
        // this best-effort sweep is met again by the next launch's.
        if old {
            let _ = std::fs::remove_dir(e.path());
        }
    }
}

/// mkdir `name` under the first writable parent; our own cgroup first, then
/// an administrator-delegated `MOUNT/porthole/UID`.
fn make_dir(
    h: &Hierarchy,
    own_dir: &Path,
    uid: u32,
    name: &str,
    controller: &'static str,
) -> Result<PathBuf, CgroupError> {
    let delegated = h.mount.join("porthole").join(uid.to_string());
    let mut first = None;
    for parent in [own_dir.to_path_buf(), delegated.clone()] {
        let dir = parent.join(name);
        match std::fs::create_dir(&dir) {
            Ok(()) => return Ok(dir),
            Err(e) if e.kind() == ErrorKind::AlreadyExists => return Ok(dir),
            Err(e) => {
                first.get_or_insert(e);
            }
        }
    }
    let source = first.expect("two attempts");
    Err(CgroupError::NotPermitted {
        controller,
        tried: format!("{} or {}", own_dir.display(), delegated.display()),
        mount: h.mount.display().to_string(),
        uid,
        source,
    })
}

fn write(path: &Path, value: &str) -> Result<(), CgroupError> {
    std::fs::write(path, value).map_err(PathIoError::with("write", path))?;
    Ok(())
}

/// Pid 1's first step: joins the v1 cgroups whose `tasks` files the monitor
/// opened ([`InstanceCgroup::v1_join_files`]) by writing "0" (the calling
/// thread) into each; pid 1's close_range of everything it does not keep
/// closes them right after. Writing `tasks`, not
/// `cgroup.procs`: the kernel moves a single thread that is the caller
/// without taking cgroup_threadgroup_rwsem for writing
/// (`cgroup_procs_write_start` in kernel/cgroup/cgroup.c), and pid 1 has
/// one thread, so the whole process moves. Only write(2): this runs in the
/// child of a clone.
pub fn join_v1(files: &[OwnedFd]) -> std::io::Result<()> {
    for f in files {
        match nix::unistd::write(f, b"0") {
            Ok(1) => {}
            Ok(_) => return Err(ErrorKind::WriteZero.into()),
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

/// The instance's cgroup when no limit needs one: the first writable place
/// in the order of [`InstanceCgroup::create`]'s doc (after the systemd
/// scope, which the monitor asks for instead of calling this): a v2
/// directory, else one in each delegated v1 `pids` and `memory` hierarchy.
/// Empty, with an info line naming every place tried, when there is none.
fn grouping_dirs(hs: &[Hierarchy], own: &str, uid: u32, name: &str) -> Vec<CgDir> {
    let mut tried = Vec::new();
    if let Some(h) = hs.iter().find(|h| h.v2)
        && let Some(cur) = current_path(own, h)
    {
        let own_dir = h.mount.join(cur.strip_prefix("/").unwrap_or(&cur));
        match make_dir(h, &own_dir, uid, name, "grouping") {
            Ok(d) => return vec![CgDir { path: d, v2: true }],
            Err(e) => tried.push(e.to_string()),
        }
    }
    // No v2 directory: the v1 hierarchies. [`host_state`] read only the
    // standard v2 mount for a launch without limits; the v1 mounts come
    // from /proc/self/mounts, read only on this slower path.
    let v1: Vec<Hierarchy> = if hs.iter().any(|h| !h.v2) {
        hs.to_vec()
    } else {
        parse_mounts(&read_proc("/proc/self/mounts", 16384))
    };
    let mut dirs = Vec::new();
    for controller in GROUPING_V1 {
        let Some(h) = v1
            .iter()
            .find(|h| !h.v2 && h.v1_controllers.iter().any(|c| c == controller))
        else {
            continue;
        };
        let Some(cur) = current_path(own, h) else {
            continue;
        };
        let own_dir = h.mount.join(cur.strip_prefix("/").unwrap_or(&cur));
        match make_dir(h, &own_dir, uid, name, controller) {
            Ok(d) => dirs.push(CgDir { path: d, v2: false }),
            Err(e) => tried.push(e.to_string()),
        }
    }
    if dirs.is_empty() {
        tracing::info!(
            tried = %tried.join("; "),
            "the instance has no cgroup of its own; it stays in its caller's"
        );
    }
    dirs
}

/// The v1 hierarchies an instance without limits is put in when v2 offers
/// no place: the ones an administrator delegates for the limits
/// (scripts/install-deps does it for the test user).
const GROUPING_V1: [&str; 2] = ["pids", "memory"];

impl InstanceCgroup {
    /// Creates the instance's cgroup(s) and writes the limits; with no
    /// limits, the cgroup of [`grouping_dirs`]. `Ok(None)` when there are no
    /// limits and no cgroup can be created.
    pub fn create(uid: u32, id: &str, limits: &Limits) -> Result<Option<Self>, CgroupError> {
        Self::create_inner(uid, id, limits, false).map(|(cg, _)| cg)
    }

    /// As [`InstanceCgroup::create`] for an instance that a systemd scope
    /// will hold (see [`crate::systemd`]): the unified hierarchy belongs to
    /// systemd, so nothing is created there. Limits whose controller lives
    /// in it are returned for the scope to carry; the others get
    /// directories in their v1 hierarchies as usual.
    pub fn create_beside_scope(
        uid: u32,
        id: &str,
        limits: &Limits,
    ) -> Result<(Option<Self>, Limits), CgroupError> {
        Self::create_inner(uid, id, limits, true)
    }

    fn create_inner(
        uid: u32,
        id: &str,
        limits: &Limits,
        scope: bool,
    ) -> Result<(Option<Self>, Limits), CgroupError> {
        let (hs, own) = host_state(limits);
        let name = format!("porthole-{id}");
        let mut cg = InstanceCgroup { dirs: Vec::new() };
        let mut for_scope = Limits::default();
        let result = (|| {
            for (controller, limit) in [("pids", limits.pids_max), ("memory", limits.memory_max)] {
                let Some(limit) = limit else {
                    continue;
                };
                let (h, own_dir) =
                    locate(&hs, &own, controller).ok_or(CgroupError::NoController(controller))?;
                if scope && h.v2 {
                    match controller {
                        "pids" => for_scope.pids_max = Some(limit),
                        _ => for_scope.memory_max = Some(limit),
                    }
                    continue;
                }
                let dir = match cg.dirs.iter().find(|d| d.path.starts_with(&h.mount)) {
                    Some(d) => d.path.clone(),
                    None => {
                        let d = make_dir(h, &own_dir, uid, &name, controller)?;
                        cg.dirs.push(CgDir {
                            path: d.clone(),
                            v2: h.v2,
                        });
                        d
                    }
                };
                match (controller, h.v2) {
                    ("pids", _) => write(&dir.join("pids.max"), &limit.to_string())?,
                    ("memory", true) => {
                        write(&dir.join("memory.max"), &limit.to_string())?;
                        // Swap would let the app exceed the limit. Ignored
                        // on failure: the file is absent without swap
                        // accounting, and then there is no swap to limit.
                        let _ = std::fs::write(dir.join("memory.swap.max"), "0");
                    }
                    ("memory", false) => {
                        write(&dir.join("memory.limit_in_bytes"), &limit.to_string())?;
                        // memsw (memory + swap) must be >= the limit; with
                        // both equal, swap cannot extend the app's memory.
                        let memsw = dir.join("memory.memsw.limit_in_bytes");
                        if memsw.exists() {
                            write(&memsw, &limit.to_string())?;
                        }
                    }
                    _ => {}
                }
            }
            Ok(())
        })();
        if let Err(e) = result {
            // The limit's error is the one returned; the clean-up's is
            // reported beside it.
            if let Err(c) = cg.remove_now() {
                crate::cleanup::failed("remove the half-made instance cgroup", &c);
            }
            return Err(e);
        }
        if cg.dirs.is_empty() && !scope {
            cg.dirs = grouping_dirs(&hs, &own, uid, &name);
        }
        Ok(((!cg.dirs.is_empty()).then_some(cg), for_scope))
    }

    /// An fd of the v2 directory, for `clone3(CLONE_INTO_CGROUP)`: the child
    /// is born there. Moving a running process instead takes the kernel's
    /// cgroup_threadgroup_rwsem for writing, an RCU grace period that costs
    /// milliseconds on every launch.
    pub fn v2_fd(&self) -> Option<std::os::fd::OwnedFd> {
        let d = self.dirs.iter().find(|d| d.v2)?;
        std::fs::File::open(&d.path)
            .ok()
            .map(std::os::fd::OwnedFd::from)
    }

    /// The `tasks` files of the v1 directories, opened for writing, for the
    /// sandbox's pid 1 to join them itself: it writes "0" into each as its
    /// first step (see [`join_v1`]). Opened here, before the clone, so that
    /// pid 1 needs no path of the host and the kernel checks the write
    /// against our credentials (cgroup v1 checks those of the file's
    /// opener: `__cgroup1_procs_write` in kernel/cgroup/cgroup-v1.c).
    pub fn v1_join_files(&self) -> Result<Vec<OwnedFd>, CgroupError> {
        use std::os::unix::fs::OpenOptionsExt;
        self.dirs
            .iter()
            .filter(|d| !d.v2)
            .map(|d| {
                let tasks = d.path.join("tasks");
                std::fs::OpenOptions::new()
                    .write(true)
                    .custom_flags(libc::O_CLOEXEC | libc::O_NOFOLLOW)
                    .open(&tasks)
                    .map(OwnedFd::from)
                    .map_err(|e| PathIoError::new("open", &tasks, e).into())
            })
            .collect()
    }

    /// True when the v2 directory still needs [`InstanceCgroup::add`]:
    /// the child was not born in it (no clone3). The v1 ones pid 1 joins
    /// itself ([`InstanceCgroup::v1_join_files`]).
    pub fn needs_move(&self, born_in_v2: bool) -> bool {
        !born_in_v2 && self.dirs.iter().any(|d| d.v2)
    }

    /// Moves `pid` (and so everything it will start) into the v2 directory,
    /// for a child that could not be born there; with `v1_too`, into the v1
    /// ones as well (a cgroup created after the clone, which pid 1 could
    /// not join itself).
    pub fn add(&self, pid: i32, v1_too: bool) -> Result<(), CgroupError> {
        for d in self.dirs.iter().filter(|d| d.v2 || v1_too) {
            write(&d.path.join("cgroup.procs"), &pid.to_string())?;
        }
        Ok(())
    }

    /// Removes empty `porthole-*` cgroups that monitors killed with SIGKILL
    /// left beside ours (see [`sweep_stale`]). Housekeeping: the monitor
    /// calls it after the clone, off the sandbox's start-up path (reading a
    /// cgroup directory costs a 32 KiB buffer and a stat per entry).
    pub fn sweep_stale_siblings(&self) {
        for d in &self.dirs {
            if let Some(parent) = d.path.parent() {
                sweep_stale(parent);
            }
        }
    }

    pub fn paths(&self) -> Vec<String> {
        self.dirs
            .iter()
            .map(|d| d.path.display().to_string())
            .collect()
    }

    fn remove_now(&self) -> Result<(), CgroupError> {
        for d in &self.dirs {
            match std::fs::remove_dir(&d.path) {
                Ok(()) => {}
                Err(e) if e.kind() == ErrorKind::NotFound => {}
                Err(e) => return Err(PathIoError::new("rmdir", &d.path, e).into()),
            }
        }
        Ok(())
    }

    /// The directories, as C strings for [`crate::janitor`].
    pub fn c_paths(&self) -> Vec<std::ffi::CString> {
        use std::os::unix::ffi::OsStrExt;
        self.dirs
            .iter()
            .filter_map(|d| std::ffi::CString::new(d.path.as_os_str().as_bytes()).ok())
            .collect()
    }

    /// Removes the directories once they are empty (processes killed with
    /// the pid namespace may take a moment to leave).
    pub fn remove(self) -> Result<(), CgroupError> {
        let mut last = Ok(());
        for _ in 0..1000 {
            last = self.remove_now();
            match &last {
                Err(CgroupError::Io(PathIoError { source, .. }))
                    if source.raw_os_error() == Some(libc::EBUSY) =>
                {
                    std::thread::sleep(std::time::Duration::from_millis(1))
                }
                _ => break,
            }
        }
        last
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // This host's layout: v2 with no controllers, pids and memory in v1.
    const MOUNTS: &str = "tmpfs /sys/fs/cgroup tmpfs rw,relatime,mode=755 0 0\n\
cgroup /sys/fs/cgroup/memory cgroup rw,relatime,memory 0 0\n\
cgroup /sys/fs/cgroup/cpu,cpuacct cgroup rw,relatime,cpu,cpuacct 0 0\n\
cgroup /sys/fs/cgroup/pids cgroup rw,relatime,pids 0 0\n\
cgroup /sys/fs/cgroup/systemd cgroup rw,relatime,name=systemd 0 0\n\
cgroup2 /sys/fs/cgroup/unified cgroup2 rw,relatime 0 0\n";
    const OWN: &str =
        "9:name=systemd:/\n8:pids:/\n4:memory:/process_api/abc\n2:cpu,cpuacct:/\n0::/\n";

    #[test]
    fn finds_v1_hierarchies_and_own_paths() {
        let hs = parse_mounts(MOUNTS);
        assert_eq!(hs.len(), 5);
        let mem = hs.iter().find(|h| h.v1_controllers == ["memory"]).unwrap();
        assert_eq!(
            current_path(OWN, mem),
            Some(PathBuf::from("/process_api/abc"))
        );
        let cpu = hs
            .iter()
            .find(|h| h.v1_controllers == ["cpu", "cpuacct"])
            .unwrap();
        assert_eq!(current_path(OWN, cpu), Some(PathBuf::from("/")));
        let v2 = hs.iter().find(|h| h.v2).unwrap();
        assert_eq!(current_path(OWN, v2), Some(PathBuf::from("/")));
        // v2 here offers no controllers (no such files in the test), so the
        // v1 hierarchy is chosen.
        let (h, dir) = locate(&hs, OWN, "memory").unwrap();
        assert!(!h.v2);
        assert_eq!(dir, PathBuf::from("/sys/fs/cgroup/memory/process_api/abc"));
        assert!(locate(&hs, OWN, "rdma").is_none());
    }
}
