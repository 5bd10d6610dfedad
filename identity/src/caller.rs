//! Which app is behind a D-Bus sender.
//!
//! The bus tells us the sender's process (a pidfd where the bus offers
//! `ProcessFD`, else a PID that we turn into a pidfd at once). We read
//! `/proc/PID/root/.flatpak-info` and then check that the pidfd still names a
//! live process: if the process had died and its PID been reused while we
//! read, the pidfd reports it and we refuse rather than trust the stranger's
//! file (xdg-desktop-portal issue 913). The app can never name its own id:
//! the keyfile sits in a root it cannot write. Services use [`CallerLookup`],
//! which bounds what reading that file may cost them.

use std::io::Read;
use std::os::fd::{AsRawFd, OwnedFd};

#[cfg(feature = "dbus")]
use zbus::fdo::DBusProxy;
#[cfg(feature = "dbus")]
use zbus::names::BusName;

use crate::keyfile::KeyFile;

/// The calling app as far as the services care.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppInfo {
    /// Empty for a host (unsandboxed) process, as upstream.
    pub app_id: String,
    /// The sandbox instance id, when sandboxed.
    pub instance_id: Option<String>,
    /// Whether the process may use the network: always for the host; for
    /// a sandboxed app, `network` in its `[Context] shared` (upstream's
    /// `xdp_app_info_has_network`).
    pub network: bool,
    pub pid: u32,
}

impl AppInfo {
    pub fn is_host(&self) -> bool {
        self.app_id.is_empty()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum CallerError {
    #[cfg(feature = "dbus")]
    #[error("asking the bus for the credentials of {sender}: {source}")]
    Credentials {
        sender: String,
        source: Box<zbus::fdo::Error>,
    },
    #[error("the bus gave no process id for {0}")]
    NoProcess(String),
    #[error("pidfd_open({pid}): {source}")]
    PidFd { pid: u32, source: std::io::Error },
    #[error("reading {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("process {0} ended while it was being identified")]
    Gone(u32),
    #[error("the instance info of process {pid} is malformed: {reason}")]
    BadInfo { pid: u32, reason: String },
    #[error("reading the instance info of process {pid} took over {after:?}")]
    TimedOut {
        pid: u32,
        after: std::time::Duration,
    },
    #[error("too many callers' instance info reads are stuck; none freed a slot within {0:?}")]
    Busy(std::time::Duration),
    #[error("the instance info read failed: {0}")]
    Panicked(String),
}

/// Identifies callers for a service that must stay responsive whatever a
/// caller does.
///
/// Reading a caller's `.flatpak-info` can block: a caller that made its own
/// mount namespace chooses that file, and a FUSE file that never answers
/// holds the reading thread until its file system does. So each read runs
/// on a blocking thread under a deadline, and at most `max_stuck` reads run
/// at once. A lookup that finds every slot taken waits for one (a task
/// waiting costs no thread), so a hundred apps starting together are all
/// identified; only when no slot frees within the deadline, because callers
/// wedged them all, is it reported as [`CallerError::Busy`]: a bounded
/// wait, not a growing pile of threads.
#[cfg(feature = "dbus")]
#[derive(Clone)]
pub struct CallerLookup {
    slots: std::sync::Arc<tokio::sync::Semaphore>,
    deadline: std::time::Duration,
}

#[cfg(feature = "dbus")]
impl CallerLookup {
    pub fn new(max_stuck: usize, deadline: std::time::Duration) -> Self {
        Self {
            slots: std::sync::Arc::new(tokio::sync::Semaphore::new(max_stuck)),
            deadline,
        }
    }

    /// Identifies the app behind `sender` on `conn`'s bus.
    pub async fn identify(
        &self,
        conn: &zbus::Connection,
        sender: &str,
    ) -> Result<AppInfo, CallerError> {
        let (pid, pidfd) = sender_process(conn, sender).await?;
        let slot =
            match tokio::time::timeout(self.deadline, self.slots.clone().acquire_owned()).await {
                Ok(Ok(slot)) => slot,
                // Timed out, or closed (never done; no slot either way).
                Ok(Err(_)) | Err(_) => return Err(CallerError::Busy(self.deadline)),
            };
        let read = tokio::task::spawn_blocking(move || {
            let _slot = slot;
            identify_pid(pid, &pidfd)
        });
        match tokio::time::timeout(self.deadline, read).await {
            Ok(Ok(answer)) => answer,
            Ok(Err(join)) => Err(CallerError::Panicked(join.to_string())),
            Err(_) => Err(CallerError::TimedOut {
                pid,
                after: self.deadline,
            }),
        }
    }
}

/// The process behind `sender`: its PID and a pidfd that keeps naming it.
#[cfg(feature = "dbus")]
async fn sender_process(
    conn: &zbus::Connection,
    sender: &str,
) -> Result<(u32, OwnedFd), CallerError> {
    let err = |source: zbus::fdo::Error| CallerError::Credentials {
        sender: sender.to_owned(),
        source: Box::new(source),
    };
    let dbus = DBusProxy::new(conn).await.map_err(|e| err(e.into()))?;
    let name =
        BusName::try_from(sender).map_err(|e| err(zbus::fdo::Error::InvalidArgs(e.to_string())))?;
    let creds = dbus.get_connection_credentials(name).await.map_err(err)?;
    let pid = creds
        .process_id()
        .ok_or_else(|| CallerError::NoProcess(sender.to_owned()))?;
    let pidfd = match creds.process_fd() {
        Some(fd) => std::os::fd::AsFd::as_fd(fd)
            .try_clone_to_owned()
            .map_err(|source| CallerError::PidFd { pid, source })?,
        None => pidfd_open(pid)?,
    };
    Ok((pid, pidfd))
}

/// Reads the instance info of `pid`, then proves `pidfd` (which names the
/// same process) is still alive, so the answer belongs to that process.
pub fn identify_pid(pid: u32, pidfd: &OwnedFd) -> Result<AppInfo, CallerError> {
    let text = read_info(pid)?;
    if !pidfd_alive(pidfd) {
        return Err(CallerError::Gone(pid));
    }
    let Some(text) = text else {
        return Ok(AppInfo {
            app_id: String::new(),
            instance_id: None,
            network: true,
            pid,
        });
    };
    let kf = KeyFile::parse_bytes(&text).map_err(|e| CallerError::BadInfo {
        pid,
        reason: e.to_string(),
    })?;
    let app_id = kf
        .get("Application", "name")
        .ok_or_else(|| CallerError::BadInfo {
            pid,
            reason: "no [Application] name".into(),
        })?;
    crate::AppId::parse(&app_id).map_err(|e| CallerError::BadInfo {
        pid,
        reason: e.to_string(),
    })?;
    let network = kf
        .get_list("Context", "shared")
        .is_some_and(|shared| shared.iter().any(|s| s == "network"));
    Ok(AppInfo {
        app_id,
        instance_id: kf.get("Instance", "instance-id"),
        network,
        pid,
    })
}

/// The most a `.flatpak-info` may hold; Flatpak's and ours are under 4 KiB.
pub const INFO_MAX: u64 = 64 * 1024;

/// The text of `/proc/PID/root/.flatpak-info`, or None when there is none.
///
/// The caller's root is the caller's to shape when it made its own mount
/// namespace, so the file is not trusted to be a file: a symlink there would
/// resolve absolute targets in *our* root (O_NOFOLLOW refuses it), a FIFO
/// would block the open until someone writes (O_NONBLOCK), and `/dev/zero`
/// would never end (a regular file of at most [`INFO_MAX`] bytes is read).
fn read_info(pid: u32) -> Result<Option<Vec<u8>>, CallerError> {
    use std::os::unix::fs::OpenOptionsExt;
    let path = format!("/proc/{pid}/root/.flatpak-info");
    let bad = |reason: String| CallerError::BadInfo { pid, reason };
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(&path);
    let file = match file {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) if e.raw_os_error() == Some(libc::ELOOP) => {
            return Err(bad("/.flatpak-info is a symbolic link".into()));
        }
        Err(source) => return Err(CallerError::Read { path, source }),
    };
    let read_err = |source| CallerError::Read {
        path: path.clone(),
        source,
    };
    let meta = file.metadata().map_err(read_err)?;
    if !meta.file_type().is_file() {
        return Err(bad("/.flatpak-info is not a regular file".into()));
    }
    // Bytes, not a string: the key file parser (fuzzed and compared with
    // GLib's on bytes) decides what a file that is not UTF-8 means.
    let mut text = Vec::new();
    file.take(INFO_MAX + 1)
        .read_to_end(&mut text)
        .map_err(read_err)?;
    if text.len() as u64 > INFO_MAX {
        return Err(bad(format!(
            "/.flatpak-info is larger than {INFO_MAX} bytes"
        )));
    }
    Ok(Some(text))
}

/// `pidfd_open(2)`: a handle that keeps naming this process even if the PID
/// is later reused.
pub fn pidfd_open(pid: u32) -> Result<OwnedFd, CallerError> {
    let err = |source| CallerError::PidFd { pid, source };
    let raw = rustix::process::RawPid::try_from(pid)
        .ok()
        .and_then(rustix::process::Pid::from_raw)
        .ok_or_else(|| err(std::io::ErrorKind::InvalidInput.into()))?;
    rustix::process::pidfd_open(raw, rustix::process::PidfdFlags::empty())
        .map_err(|e| err(e.into()))
}

/// Whether the process behind `pidfd` still runs (signal 0 sends nothing).
fn pidfd_alive(pidfd: &OwnedFd) -> bool {
    // SAFETY: signal 0 only checks the target; null siginfo is allowed.
    let r = unsafe {
        libc::syscall(
            libc::SYS_pidfd_send_signal,
            pidfd.as_raw_fd(),
            0,
            std::ptr::null::<libc::siginfo_t>(),
            0,
        )
    };
    // EPERM still proves the process exists.
    r == 0 || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_process_is_a_host_app() {
        let pid = std::process::id();
        let fd = pidfd_open(pid).unwrap();
        let info = identify_pid(pid, &fd).unwrap();
        assert!(info.is_host());
        assert_eq!(info.pid, pid);
    }

    #[test]
    fn a_dead_process_is_refused() {
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let pid = child.id();
        let fd = pidfd_open(pid).unwrap();
        child.wait().unwrap();
        assert!(matches!(identify_pid(pid, &fd), Err(CallerError::Gone(p)) if p == pid));
    }
}
