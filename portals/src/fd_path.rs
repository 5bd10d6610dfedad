//! The file behind a caller's fd, and whether the caller has shown it may
//! read (and write) it: upstream's `xdp_app_info_get_path_for_fd`
//! (`xdp-app-info.c`), used by OpenFile and OpenDirectory.
//!
//! The fd must name a file or directory (`/proc/self/fd` shows sockets,
//! pipes and anonymous inodes without a leading `/`, and deleted files
//! with ` (deleted)`); an `O_PATH` fd is taken only without `O_NOFOLLOW`
//! and only when the file can be read through it (which applies the
//! caller's own mount options); any other fd must be open for reading.
//! The path it names must still lead to the same inode. Writable means an
//! `O_RDWR` fd, or an `O_PATH` fd through which the file may be written;
//! always for the host.

use std::ffi::OsStr;
use std::os::fd::{AsRawFd, BorrowedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use rustix::fs::{Access, AtFlags, CWD, FileType, OFlags};

/// A checked fd.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FdPath {
    /// The path the fd names, as this process sees it.
    pub path: PathBuf,
    /// `/proc/self/fd/N`: reaches exactly the caller's file.
    pub proc_path: PathBuf,
    pub is_dir: bool,
    pub writable: bool,
}

/// Why an fd was refused (for our log; the caller gets response 2).
#[derive(Debug, thiserror::Error)]
pub enum FdError {
    #[error("fcntl(F_GETFL): {0}")]
    Flags(rustix::io::Errno),
    #[error("fstat: {0}")]
    Stat(rustix::io::Errno),
    #[error("readlink {0}: {1}")]
    Readlink(String, rustix::io::Errno),
    #[error("not a file or directory: {0:?}")]
    NotAFile(PathBuf),
    #[error("a deleted file: {0:?}")]
    Deleted(PathBuf),
    #[error("an O_PATH fd opened with O_NOFOLLOW")]
    NoFollow,
    #[error("{0:?} cannot be read through the caller's O_PATH fd")]
    NoReadAccess(PathBuf),
    #[error("opened neither for reading nor for reading and writing")]
    AccessMode,
    #[error("{0:?} is no longer the file the fd names")]
    NotSameFile(PathBuf),
}

/// Checks `fd` as upstream does. `alternate` maps a path that does not
/// lead to the fd's inode to another to try (a document as the app sees
/// it, to the host's per-app view), as upstream's
/// `xdp_get_alternate_document_path`.
pub fn path_for_fd(
    fd: BorrowedFd<'_>,
    is_host: bool,
    alternate: impl Fn(&Path) -> Option<PathBuf>,
) -> Result<FdPath, FdError> {
    let flags = rustix::fs::fcntl_getfl(fd).map_err(FdError::Flags)?;
    let st = rustix::fs::fstat(fd).map_err(FdError::Stat)?;
    let proc_path = format!("/proc/self/fd/{}", fd.as_raw_fd());
    let link = rustix::fs::readlinkat(CWD, proc_path.as_str(), Vec::new())
        .map_err(|e| FdError::Readlink(proc_path.clone(), e))?
        .into_bytes();
    if link.first() != Some(&b'/') {
        return Err(FdError::NotAFile(PathBuf::from(OsStr::from_bytes(&link))));
    }
    if link.ends_with(b" (deleted)") {
        return Err(FdError::Deleted(PathBuf::from(OsStr::from_bytes(&link))));
    }
    let path = PathBuf::from(OsStr::from_bytes(&link));
    let is_dir = FileType::from_raw_mode(st.st_mode) == FileType::Directory;

    let writable = if flags.contains(OFlags::PATH) {
        if flags.contains(OFlags::NOFOLLOW) {
            return Err(FdError::NoFollow);
        }
        let mut want = Access::READ_OK;
        if is_dir {
            want |= Access::EXEC_OK;
        }
        if rustix::fs::accessat(CWD, proc_path.as_str(), want, AtFlags::empty()).is_err() {
            return Err(FdError::NoReadAccess(path));
        }
        is_host
            || rustix::fs::accessat(CWD, proc_path.as_str(), Access::WRITE_OK, AtFlags::empty())
                .is_ok()
    } else {
        let mode = flags & OFlags::RWMODE;
        if mode != OFlags::RDONLY && mode != OFlags::RDWR {
            return Err(FdError::AccessMode);
        }
        is_host || mode == OFlags::RDWR
    };

    let same_at = |p: &Path| {
        rustix::fs::statat(CWD, p, AtFlags::empty())
            .is_ok_and(|now| now.st_dev == st.st_dev && now.st_ino == st.st_ino)
    };
    let path = if same_at(&path) {
        path
    } else {
        match alternate(&path) {
            Some(alt) if same_at(&alt) => alt,
            _ => return Err(FdError::NotSameFile(path)),
        }
    };
    Ok(FdPath {
        path,
        proc_path: PathBuf::from(proc_path),
        is_dir,
        writable,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsFd;
    use std::os::unix::fs::OpenOptionsExt;

    fn open(path: &Path, flags: i32, write: bool) -> std::fs::File {
        std::fs::OpenOptions::new()
            .read(!write)
            .write(write)
            .custom_flags(flags)
            .open(path)
            .unwrap()
    }

    #[test]
    fn fds_are_checked_as_upstream() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("a.txt");
        std::fs::write(&file, "x").unwrap();
        let none = |_: &Path| None;

        let ro = open(&file, 0, false);
        let got = path_for_fd(ro.as_fd(), false, none).unwrap();
        assert_eq!(got.path, file);
        assert!(!got.writable && !got.is_dir);
        assert!(path_for_fd(ro.as_fd(), true, none).unwrap().writable);

        let rw = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(&file)
            .unwrap();
        assert!(path_for_fd(rw.as_fd(), false, none).unwrap().writable);

        let wo = open(&file, 0, true);
        assert!(matches!(
            path_for_fd(wo.as_fd(), false, none),
            Err(FdError::AccessMode)
        ));

        let nofollow = open(&file, libc::O_PATH | libc::O_NOFOLLOW, false);
        assert!(matches!(
            path_for_fd(nofollow.as_fd(), false, none),
            Err(FdError::NoFollow)
        ));

        let d = open(dir.path(), libc::O_DIRECTORY, false);
        assert!(path_for_fd(d.as_fd(), false, none).unwrap().is_dir);

        let (reader, _writer) = std::io::pipe().unwrap();
        assert!(matches!(
            path_for_fd(reader.as_fd(), false, none),
            Err(FdError::NotAFile(_))
        ));

        std::fs::remove_file(&file).unwrap();
        assert!(matches!(
            path_for_fd(ro.as_fd(), false, none),
            Err(FdError::Deleted(_))
        ));
    }
}
