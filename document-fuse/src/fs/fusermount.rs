//! Mounting without privilege, as libfuse does: `fusermount3` (setuid
//! root) opens `/dev/fuse`, mounts it, and passes the fd back over a
//! socket named by `_FUSE_COMMFD`. Needed wherever an ordinary user may
//! not open `/dev/fuse` itself (here it is mode 0600) or mount. Unmounting
//! is `fusermount3 -u`.

use std::io::IoSliceMut;
use std::mem::MaybeUninit;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::process::{Command, Stdio};

use rustix::net::{RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags};

const FUSERMOUNT: &str = "fusermount3";

#[derive(Debug, thiserror::Error)]
pub enum FusermountError {
    #[error("running {FUSERMOUNT}: {0}")]
    Spawn(std::io::Error),
    #[error("{FUSERMOUNT} failed ({status}): {stderr}")]
    Failed { status: String, stderr: String },
    #[error("receiving the /dev/fuse fd from {FUSERMOUNT}: {0}")]
    Receive(std::io::Error),
    #[error("{FUSERMOUNT} sent no fd")]
    NoFd,
}

/// Mounts FUSE at `mountpoint` with `options` (comma-separated, as
/// fusermount3's `-o`); returns the `/dev/fuse` fd to serve.
pub fn mount(mountpoint: &Path, options: &str) -> Result<OwnedFd, FusermountError> {
    let (ours, theirs) = UnixStream::pair().map_err(FusermountError::Spawn)?;
    // std makes both ends close-on-exec; dup(2) gives fusermount3 a copy
    // that survives exec (and is closed here right after the spawn).
    let inherited = rustix::io::dup(&theirs).map_err(|e| FusermountError::Spawn(e.into()))?;
    let output = Command::new(FUSERMOUNT)
        .env("_FUSE_COMMFD", inherited.as_raw_fd().to_string())
        .arg("-o")
        .arg(options)
        .arg("--")
        .arg(mountpoint)
        .stdin(Stdio::null())
        .output()
        .map_err(FusermountError::Spawn)?;
    drop(inherited);
    drop(theirs);
    if !output.status.success() {
        return Err(FusermountError::Failed {
            status: output.status.to_string(),
            stderr: String::from_utf8_lossy(&output.stderr).trim().to_owned(),
        });
    }
    let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(1))];
    let mut control = RecvAncillaryBuffer::new(&mut space);
    let mut byte = [0u8; 1];
    rustix::net::recvmsg(
        &ours,
        &mut [IoSliceMut::new(&mut byte)],
        &mut control,
        RecvFlags::CMSG_CLOEXEC,
    )
    .map_err(|e| FusermountError::Receive(e.into()))?;
    for message in control.drain() {
        if let RecvAncillaryMessage::ScmRights(mut fds) = message
            && let Some(fd) = fds.next()
        {
            return Ok(fd);
        }
    }
    Err(FusermountError::NoFd)
}

/// `fusermount3 -u -z`: a lazy unmount, which also works while a process
/// still has a file open there.
pub fn unmount(mountpoint: &Path) -> Result<(), FusermountError> {
    let output = Command::new(FUSERMOUNT)
        .args(["-u", "-z", "--"])
        .arg(mountpoint)
        .stdin(Stdio::null())
        .output()
        .map_err(FusermountError::Spawn)?;
    if output.status.success() {
        Ok(())
    } else {
        Err(FusermountError::Failed {
            status: output.status.to_string(),
            stderr: String::from_utf8_lossy(&output.stderr).trim().to_owned(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mounted(path: &Path) -> bool {
        let want = path.to_string_lossy().into_owned();
        std::fs::read_to_string("/proc/self/mountinfo")
            .unwrap()
            .lines()
            .any(|l| l.split(' ').nth(4) == Some(want.as_str()))
    }

    /// The unprivileged path, exercised as root (fusermount3 opens
    /// /dev/fuse as the calling user, and on this CI host /dev/fuse is
    /// 0600): fusermount3 mounts, passes the fd back, and unmounts.
    #[test]
    fn fusermount_mounts_and_passes_the_fd_back() {
        if !porthole_tests::running_as_root("fusermount_mounts_and_passes_the_fd_back")
            || !porthole_tests::anchor_present("/usr/bin/fusermount3", "fuse3")
        {
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let fd = mount(
            dir.path(),
            "fsname=portal,subtype=portal,nosuid,nodev,noexec",
        )
        .unwrap();
        assert!(mounted(dir.path()));
        // The fd is the FUSE connection: the kernel's INIT is waiting on it.
        let st = rustix::fs::fstat(&fd).unwrap();
        assert_eq!(
            rustix::fs::FileType::from_raw_mode(st.st_mode),
            rustix::fs::FileType::CharacterDevice
        );
        unmount(dir.path()).unwrap();
        assert!(!mounted(dir.path()));
        assert!(matches!(
            unmount(dir.path()),
            Err(FusermountError::Failed { .. })
        ));
    }
}
