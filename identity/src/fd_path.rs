//! Which file a caller's fd names, and whether the caller has shown it may
//! read (and write) it: upstream's `xdp_app_info_get_path_for_fd`
//! (`xdp-app-info.c`). The Documents portal (`porthole-documents`, which
//! adds upstream's `validate_fd` directory check) and OpenURI's OpenFile
//! and OpenDirectory (`porthole-portals`) both check fds here.
//!
//! The fd must name a file or directory (`/proc/self/fd` shows sockets,
//! pipes and anonymous inodes without a leading `/`, and deleted files
//! with ` (deleted)`); an `O_PATH` fd (GTK and libportal still pass them)
//! is taken only without `O_NOFOLLOW` and only when the file can be read
//! through it, which applies the caller's own mount options; any other fd
//! must be open for reading. The path it names must still lead to the same
//! inode. Writable means an `O_RDWR` fd, or an `O_PATH` fd through which
//! the file may be written; always for the host.

use std::ffi::OsStr;
use std::os::fd::{AsRawFd, BorrowedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use rustix::fs::{Access, AtFlags, CWD, FileType, OFlags};

/// A checked fd: the path it names and the inode it holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FdPath {
    /// The path the fd names, as this process sees it (or its
    /// `alternate`).
    pub path: PathBuf,
    pub dev: u64,
    pub ino: u64,
    pub file_type: FileType,
    /// Whether the caller showed write access; always true for the host.
    pub writable: bool,
}

impl FdPath {
    pub fn is_dir(&self) -> bool {
        self.file_type == FileType::Directory
    }

    /// Whether `st` is the inode the fd holds.
    pub fn same_inode(&self, st: &rustix::fs::Stat) -> bool {
        st.st_dev == self.dev && st.st_ino == self.ino
    }
}

/// Why an fd was refused: for the service's log, never for the reply,
/// which says nothing about the host's files.
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
    /// The file is not of the kind the call takes (the Documents portal's
    /// `validate_fd`).
    #[error("wrong file type for this call")]
    WrongType,
    /// The directory holding the file could not be opened or checked (the
    /// Documents portal's `validate_fd`).
    #[error("checking the directory of {0:?}: {1}")]
    Dir(PathBuf, rustix::io::Errno),
}

fn proc_path(fd: BorrowedFd<'_>) -> String {
    format!("/proc/self/fd/{}", fd.as_raw_fd())
}

/// Checks `fd` as upstream's `xdp_app_info_get_path_for_fd` does.
/// `alternate` maps a path that does not lead to the fd's inode to another
/// to try: a document as the app sees it (`/run/user/UID/doc/ID/NAME`) to
/// the host's per-app view (`.../doc/by-app/APP/ID/NAME`), as upstream's
/// `xdp_get_alternate_document_path`.
pub fn path_for_fd(
    fd: BorrowedFd<'_>,
    is_host: bool,
    alternate: impl Fn(&Path) -> Option<PathBuf>,
) -> Result<FdPath, FdError> {
    let flags = rustix::fs::fcntl_getfl(fd).map_err(FdError::Flags)?;
    let st = rustix::fs::fstat(fd).map_err(FdError::Stat)?;
    let proc_path = proc_path(fd);
    let link = rustix::fs::readlinkat(CWD, proc_path.as_str(), Vec::new())
        .map_err(|e| FdError::Readlink(proc_path.clone(), e))?
        .into_bytes();
    // Sockets, pipes, anonymous inodes: "socket:[1234]" and the like.
    if link.first() != Some(&b'/') {
        return Err(FdError::NotAFile(PathBuf::from(OsStr::from_bytes(&link))));
    }
    if link.ends_with(b" (deleted)") {
        return Err(FdError::Deleted(PathBuf::from(OsStr::from_bytes(&link))));
    }
    let path = PathBuf::from(OsStr::from_bytes(&link));
    let file_type = FileType::from_raw_mode(st.st_mode);

    let writable = if flags.contains(OFlags::PATH) {
        if flags.contains(OFlags::NOFOLLOW) {
            return Err(FdError::NoFollow);
        }
        let mut want = Access::READ_OK;
        if file_type == FileType::Directory {
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

    // The path must still lead to the inode the fd holds.
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
        dev: st.st_dev,
        ino: st.st_ino,
        file_type,
        writable,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsFd;
    use std::os::unix::fs::OpenOptionsExt;

    fn none(_: &Path) -> Option<PathBuf> {
        None
    }

    fn open(path: &Path, flags: i32, write: bool) -> std::fs::File {
        std::fs::OpenOptions::new()
            .read(!write)
            .write(write)
            .custom_flags(flags)
            .open(path)
            .unwrap()
    }

    #[test]
    fn readable_fds_are_named_and_writable_only_when_shown() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("a.txt");
        std::fs::write(&file, "x").unwrap();

        let ro = open(&file, 0, false);
        let got = path_for_fd(ro.as_fd(), false, none).unwrap();
        assert_eq!(got.path, file);
        assert!(!got.writable && !got.is_dir());
        assert!(got.same_inode(&rustix::fs::stat(&file).unwrap()));
        assert!(path_for_fd(ro.as_fd(), true, none).unwrap().writable);

        let rw = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(&file)
            .unwrap();
        assert!(path_for_fd(rw.as_fd(), false, none).unwrap().writable);

        let p = open(&file, libc::O_PATH, false);
        assert_eq!(path_for_fd(p.as_fd(), false, none).unwrap().path, file);

        let d = open(dir.path(), libc::O_DIRECTORY, false);
        assert!(path_for_fd(d.as_fd(), false, none).unwrap().is_dir());
    }

    #[test]
    fn write_only_o_path_nofollow_pipes_sockets_and_deleted_files_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("a.txt");
        std::fs::write(&file, "x").unwrap();

        let wo = open(&file, 0, true);
        assert!(matches!(
            path_for_fd(wo.as_fd(), true, none),
            Err(FdError::AccessMode)
        ));

        let nofollow = open(&file, libc::O_PATH | libc::O_NOFOLLOW, false);
        assert!(matches!(
            path_for_fd(nofollow.as_fd(), false, none),
            Err(FdError::NoFollow)
        ));

        let (reader, _writer) = std::io::pipe().unwrap();
        assert!(matches!(
            path_for_fd(reader.as_fd(), true, none),
            Err(FdError::NotAFile(_))
        ));
        let (s, _t) = std::os::unix::net::UnixStream::pair().unwrap();
        assert!(matches!(
            path_for_fd(s.as_fd(), true, none),
            Err(FdError::NotAFile(_))
        ));

        let gone = open(&file, 0, false);
        std::fs::remove_file(&file).unwrap();
        assert!(matches!(
            path_for_fd(gone.as_fd(), true, none),
            Err(FdError::Deleted(_))
        ));
    }
}
