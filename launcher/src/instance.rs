//! Instance records: `$XDG_RUNTIME_DIR/porthole/instances/ID/` holds `info`
//! (the same bytes as the sandbox's `/.flatpak-info`) and `instance.json`.
//! The monitor removes the directory when the instance ends; `ps` skips (and
//! cleans) records whose process is gone.

use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::io_error::PathIoError;
use crate::warning::{Warning, Warnings};

/// Errors around instance records.
#[derive(Debug, thiserror::Error)]
pub enum InstanceError {
    #[error(transparent)]
    Io(#[from] PathIoError),
    #[error("{path}: owned by uid {owner}, not by us; refusing to use it")]
    NotOurs { path: PathBuf, owner: u32 },
    #[error("{path}: {source}")]
    Json {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error("no running instance {0:?} (see `porthole ps`)")]
    NotFound(String),
    #[error("{0:?} matches several instances; use the instance id")]
    Ambiguous(String),
}

/// What `instance.json` records.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Record {
    pub instance: String,
    pub app_id: String,
    /// The host-side monitor (`porthole run`).
    pub monitor_pid: i32,
    /// The sandbox's pid 1, as seen from the host.
    pub pid: i32,
    /// Start time of `pid` (field 22 of /proc/PID/stat), to detect reuse.
    pub pid_start: u64,
    pub started_unix: u64,
    pub command: Vec<String>,
    pub uid: u32,
    /// The app's environment, for `porthole enter`.
    pub env: Vec<(String, String)>,
    /// The app's home inside, for `porthole enter`.
    pub home: String,
    /// The instance's cgroup directories (one per hierarchy used).
    pub cgroups: Vec<String>,
    /// The `--allow` features its filter was built for (`devel`,
    /// `multiarch`): `enter` loads the same filter. Absent in records of
    /// older launchers: none.
    #[serde(default)]
    pub features: Vec<String>,
}

/// The per-user runtime directory: `$XDG_RUNTIME_DIR` when it is a
/// directory of ours that nobody else may write to (instance records, the
/// proxy's sockets and the systemd manager's socket are trusted from it),
/// else `/run/user/UID`, else `/tmp/porthole-UID` (created 0700, ours, not
/// a link). An `$XDG_RUNTIME_DIR` passed over is reported to `warn`.
pub fn runtime_dir(uid: u32, warn: Warnings<'_>) -> Result<PathBuf, InstanceError> {
    if let Some(d) = std::env::var_os("XDG_RUNTIME_DIR").map(PathBuf::from)
        && d.is_absolute()
    {
        match std::fs::metadata(&d) {
            Ok(m) if m.is_dir() && m.uid() == uid && m.mode() & 0o022 == 0 => return Ok(d),
            Ok(m) if m.is_dir() => warn(Warning::RuntimeDirNotPrivate {
                dir: d,
                uid,
                owner: m.uid(),
                mode: m.mode() & 0o7777,
            }),
            _ => {}
        }
    }
    let run = PathBuf::from(format!("/run/user/{uid}"));
    if let Ok(m) = std::fs::symlink_metadata(&run)
        && m.is_dir()
        && m.uid() == uid
    {
        return Ok(run);
    }
    let tmp = PathBuf::from(format!("/tmp/porthole-{uid}"));
    match std::fs::DirBuilder::new().mode(0o700).create(&tmp) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(PathIoError::new("mkdir", &tmp, e).into()),
    }
    let m = std::fs::symlink_metadata(&tmp).map_err(PathIoError::with("stat", &tmp))?;
    if !m.is_dir() || m.uid() != uid {
        return Err(InstanceError::NotOurs {
            path: tmp,
            owner: m.uid(),
        });
    }
    Ok(tmp)
}

/// `RUNTIME/porthole/instances`, where the instance records are.
pub fn instances_path(runtime: &Path) -> PathBuf {
    runtime.join("porthole/instances")
}

/// [`instances_path`], created 0700.
pub fn instances_dir(runtime: &Path) -> Result<PathBuf, InstanceError> {
    let dir = instances_path(runtime);
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&dir)
        .map_err(PathIoError::with("mkdir", &dir))?;
    Ok(dir)
}

/// A fresh instance id: a random 32-bit number, as Flatpak uses.
pub fn new_id() -> String {
    let mut buf = [0u8; 4];
    // SAFETY: getrandom writes at most buf.len() bytes into `buf`.
    let n = unsafe { libc::getrandom(buf.as_mut_ptr().cast(), buf.len(), 0) };
    if n != 4 {
        // Fall back to time and pid; uniqueness is checked by mkdir anyway.
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        return (t ^ std::process::id()).to_string();
    }
    u32::from_ne_bytes(buf).to_string()
}

/// An instance directory we created; removed on drop.
#[derive(Debug)]
pub struct InstanceDir {
    pub path: PathBuf,
}

impl InstanceDir {
    /// Creates `dir/ID` (must not exist) and writes `info`.
    pub fn create(instances: &Path, id: &str, info: &str) -> Result<Self, InstanceError> {
        let path = instances.join(id);
        std::fs::DirBuilder::new()
            .mode(0o700)
            .create(&path)
            .map_err(PathIoError::with("mkdir", &path))?;
        let dir = InstanceDir { path };
        write_new(&dir.path.join("info"), info.as_bytes(), 0o444)?;
        Ok(dir)
    }

    pub fn write_record(&self, record: &Record) -> Result<(), InstanceError> {
        let path = self.path.join("instance.json");
        let tmp = self.path.join(".instance.json.tmp");
        let bytes = serde_json::to_vec_pretty(record).map_err(|source| InstanceError::Json {
            path: path.clone(),
            source,
        })?;
        write_new(&tmp, &bytes, 0o600)?;
        std::fs::rename(&tmp, &path).map_err(PathIoError::with("rename", &path))?;
        Ok(())
    }
}

impl Drop for InstanceDir {
    fn drop(&mut self) {
        // The files we wrote, then the directory; then the D-Bus proxy's
        // sockets ("bus", "system-bus"), which exist only with a proxy; a
        // full directory walk (opendir allocates 32 KiB) only when
        // something else was left in it. Each file may be absent (the
        // record is written late, the sockets only with a proxy), so a
        // failed unlink is not an error by itself: whatever stays shows as
        // the failure of the last removal, which is logged.
        for name in ["instance.json", "info"] {
            let _ = std::fs::remove_file(self.path.join(name));
        }
        if std::fs::remove_dir(&self.path).is_ok() {
            return;
        }
        for name in ["bus", "system-bus"] {
            let _ = std::fs::remove_file(self.path.join(name));
        }
        if std::fs::remove_dir(&self.path).is_ok() {
            return;
        }
        if let Err(e) = std::fs::remove_dir_all(&self.path) {
            let e = PathIoError::new("remove", &self.path, e);
            crate::cleanup::failed("remove the instance directory", &e);
        }
    }
}

fn write_new(path: &Path, bytes: &[u8], mode: u32) -> Result<(), InstanceError> {
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)
        .map_err(PathIoError::with("create", path))?;
    f.write_all(bytes)
        .map_err(PathIoError::with("write", path))?;
    Ok(())
}

/// Start time (clock ticks since boot) of a process, field 22 of its stat.
pub fn process_start(pid: i32) -> Option<u64> {
    // One read into a buffer large enough for any stat line: the default
    // read_to_string grows from 32 bytes, one read(2) per doubling.
    let mut stat = String::with_capacity(1024);
    std::io::Read::read_to_string(
        &mut std::fs::File::open(format!("/proc/{pid}/stat")).ok()?,
        &mut stat,
    )
    .ok()?;
    // The command name may contain spaces and parentheses: skip past the last ')'.
    let rest = &stat[stat.rfind(')')? + 2..];
    rest.split_whitespace().nth(19)?.parse().ok()
}

/// A record whose process still runs.
pub fn is_alive(r: &Record) -> bool {
    process_start(r.pid) == Some(r.pid_start)
}

/// All live instances of this user, oldest first; stale records are removed.
pub fn list(instances: &Path) -> Result<Vec<Record>, InstanceError> {
    let mut out = Vec::new();
    let entries = match std::fs::read_dir(instances) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
        Err(e) => return Err(PathIoError::new("read dir", instances, e).into()),
    };
    for entry in entries.flatten() {
        let json = entry.path().join("instance.json");
        let Ok(bytes) = std::fs::read(&json) else {
            continue; // being created or removed
        };
        let Ok(record) = serde_json::from_slice::<Record>(&bytes) else {
            continue;
        };
        if is_alive(&record) {
            out.push(record);
        } else if process_start(record.monitor_pid).is_none() {
            // Monitor gone without cleaning up (killed with SIGKILL).
            if let Err(e) = std::fs::remove_dir_all(entry.path()) {
                let e = PathIoError::new("remove", entry.path(), e);
                crate::cleanup::failed("remove a stale instance directory", &e);
            }
        }
    }
    out.sort_by_key(|r| (r.started_unix, r.instance.clone()));
    Ok(out)
}

/// Finds one live instance by instance id, or by app id when unique.
pub fn find(instances: &Path, key: &str) -> Result<Record, InstanceError> {
    let all = list(instances)?;
    if let Some(r) = all.iter().find(|r| r.instance == key) {
        return Ok(r.clone());
    }
    let mut by_app = all.into_iter().filter(|r| r.app_id == key);
    match (by_app.next(), by_app.next()) {
        (Some(r), None) => Ok(r),
        (Some(_), Some(_)) => Err(InstanceError::Ambiguous(key.to_owned())),
        _ => Err(InstanceError::NotFound(key.to_owned())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip_and_stale_ones_vanish() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = InstanceDir::create(tmp.path(), "42", "[Application]\nname=a.b.C\n").unwrap();
        let me = std::process::id() as i32;
        let mut rec = Record {
            instance: "42".into(),
            app_id: "a.b.C".into(),
            monitor_pid: me,
            pid: me,
            pid_start: process_start(me).unwrap(),
            started_unix: 1,
            command: vec!["/bin/true".into()],
            uid: 0,
            env: vec![],
            home: "/root".into(),
            cgroups: vec![],
            features: vec!["devel".into()],
        };
        dir.write_record(&rec).unwrap();
        assert_eq!(list(tmp.path()).unwrap(), vec![rec.clone()]);
        assert_eq!(find(tmp.path(), "a.b.C").unwrap().instance, "42");
        assert!(matches!(
            find(tmp.path(), "nope"),
            Err(InstanceError::NotFound(_))
        ));
        // Same pid, different start time: a reused pid is not our instance.
        rec.pid_start += 1;
        dir.write_record(&rec).unwrap();
        assert!(list(tmp.path()).unwrap().is_empty());
        let path = dir.path.clone();
        drop(dir);
        assert!(!path.exists());
    }

    #[test]
    fn stat_parsing_handles_odd_names() {
        assert!(process_start(std::process::id() as i32).unwrap() > 0);
        assert_eq!(process_start(-5), None);
    }
}
