//! Which file a caller's fd names, and whether the caller has shown it may
//! export it: upstream's `xdp_app_info_get_path_for_fd` and `validate_fd`.
//!
//! The fd must be one the caller opened for reading (or an `O_PATH` fd
//! through which the file can be read, which GTK and libportal still pass;
//! never `O_PATH|O_NOFOLLOW`), name a file or directory (not a socket, a
//! pipe or a deleted file: `/proc/self/fd` shows those without a leading
//! `/`), and the path it names must still lead to the same inode. The
//! directory holding it is opened and checked too, so what is recorded
//! (path, and the directory's device and inode) is what the fd named.
//! Every refusal is the same `InvalidArgument` ("Invalid fd passed") in the
//! reply, as upstream: nothing about the host's files leaks to the caller.

use std::ffi::OsStr;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use rustix::fs::{Access, AtFlags, CWD, FileType, Mode, OFlags, Stat};

/// What kind of file the caller must pass.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Want {
    Regular,
    Directory,
    Any,
}

/// A validated fd: its host path, its own stat, and the stat of the
/// directory the document will be checked against.
#[derive(Debug)]
pub struct Validated {
    pub path: PathBuf,
    pub dev: u64,
    pub ino: u64,
    pub is_dir: bool,
    /// The directory holding a file, or a directory document itself.
    pub dir_dev: u64,
    pub dir_ino: u64,
    /// Whether the caller showed write access (an `O_RDWR` fd, or an
    /// `O_PATH` fd to a file it may write); always true for the host.
    pub writable: bool,
}

/// Why an fd was refused (for our log; the reply never says).
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
    #[error("wrong file type for this call")]
    WrongType,
    #[error("checking the directory of {0:?}: {1}")]
    Dir(PathBuf, rustix::io::Errno),
}

fn same(a: &Stat, b: &Stat) -> bool {
    a.st_dev == b.st_dev && a.st_ino == b.st_ino
}

/// The file behind `fd` as the caller sees it, checked as upstream's
/// `xdp_app_info_get_path_for_fd` does. `alternate` maps a path on the
/// documents mount as the app sees it (`/run/user/UID/doc/ID/NAME`) to the
/// host's (`.../doc/by-app/APP/ID/NAME`), tried when the first does not
/// lead to the same file.
pub fn path_for_fd(
    fd: BorrowedFd<'_>,
    is_host: bool,
    alternate: impl Fn(&Path) -> Option<PathBuf>,
) -> Result<(PathBuf, Stat, bool), FdError> {
    let flags = rustix::fs::fcntl_getfl(fd).map_err(FdError::Flags)?;
    let st = rustix::fs::fstat(fd).map_err(FdError::Stat)?;
    let proc_path = format!("/proc/self/fd/{}", fd.as_raw_fd());
    let link = rustix::fs::readlinkat(CWD, proc_path.as_str(), Vec::new())
        .map_err(|e| FdError::Readlink(proc_path.clone(), e))?;
    let mut link = link.into_bytes();
    // Sockets, pipes, anonymous inodes: "socket:[1234]" and the like.
    if link.first() != Some(&b'/') {
        return Err(FdError::NotAFile(PathBuf::from(OsStr::from_bytes(&link))));
    }
    const DELETED: &[u8] = b" (deleted)";
    if link.ends_with(DELETED) {
        return Err(FdError::Deleted(PathBuf::from(OsStr::from_bytes(&link))));
    }
    link.shrink_to_fit();
    let path = PathBuf::from(OsStr::from_bytes(&link));

    let writable = if flags.contains(OFlags::PATH) {
        // Upstream still takes O_PATH fds (GTK passes them), but only when
        // the file can be read through the fd, which applies the caller's
        // own mount options.
        if flags.contains(OFlags::NOFOLLOW) {
            return Err(FdError::NoFollow);
        }
        let mut want = Access::READ_OK;
        if FileType::from_raw_mode(st.st_mode) == FileType::Directory {
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
    let same_at =
        |p: &Path| rustix::fs::statat(CWD, p, AtFlags::empty()).is_ok_and(|now| same(&now, &st));
    if same_at(&path) {
        return Ok((path, st, writable));
    }
    if let Some(alt) = alternate(&path)
        && same_at(&alt)
    {
        return Ok((alt, st, writable));
    }
    Err(FdError::NotSameFile(path))
}

/// Upstream's `validate_fd`: [`path_for_fd`], then the directory holding
/// the file (or the directory itself) opened `O_PATH` and checked to hold
/// the same inode under the same name, not following a symlink.
pub fn validate(
    fd: BorrowedFd<'_>,
    is_host: bool,
    want: Want,
    alternate: impl Fn(&Path) -> Option<PathBuf>,
) -> Result<Validated, FdError> {
    let (path, st, writable) = path_for_fd(fd, is_host, alternate)?;
    let kind = FileType::from_raw_mode(st.st_mode);
    let is_dir = kind == FileType::Directory;
    let ok = match want {
        Want::Regular => kind == FileType::RegularFile,
        Want::Directory => is_dir,
        Want::Any => kind == FileType::RegularFile || is_dir,
    };
    if !ok {
        return Err(FdError::WrongType);
    }
    let dir_path: &Path = if is_dir {
        &path
    } else {
        path.parent().unwrap_or(Path::new("/"))
    };
    let dir = rustix::fs::openat(
        CWD,
        dir_path,
        OFlags::PATH | OFlags::CLOEXEC | OFlags::DIRECTORY,
        Mode::empty(),
    )
    .map_err(|e| FdError::Dir(dir_path.to_owned(), e))?;
    let dir_st = rustix::fs::fstat(&dir).map_err(|e| FdError::Dir(dir_path.to_owned(), e))?;
    if is_dir {
        if !same(&dir_st, &st) {
            return Err(FdError::NotSameFile(path));
        }
    } else {
        let name = path.file_name().ok_or(FdError::WrongType)?;
        let real = rustix::fs::statat(dir.as_fd(), name, AtFlags::SYMLINK_NOFOLLOW)
            .map_err(|e| FdError::Dir(path.clone(), e))?;
        if !same(&real, &st) {
            return Err(FdError::NotSameFile(path));
        }
    }
    Ok(Validated {
        dev: st.st_dev,
        ino: st.st_ino,
        is_dir,
        dir_dev: dir_st.st_dev,
        dir_ino: dir_st.st_ino,
        writable,
        path,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::OpenOptionsExt;

    fn none(_: &Path) -> Option<PathBuf> {
        None
    }

    #[test]
    fn a_readable_file_is_named_and_its_directory_recorded() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("a.txt");
        std::fs::write(&file, b"x").unwrap();
        let f = std::fs::File::open(&file).unwrap();
        let v = validate(f.as_fd(), false, Want::Regular, none).unwrap();
        assert_eq!(v.path, file.canonicalize().unwrap());
        assert!(!v.writable, "read-only fd from an app is not writable");
        let dir_st = rustix::fs::stat(dir.path()).unwrap();
        assert_eq!((v.dir_dev, v.dir_ino), (dir_st.st_dev, dir_st.st_ino));
        let rw = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(&file)
            .unwrap();
        assert!(
            validate(rw.as_fd(), false, Want::Regular, none)
                .unwrap()
                .writable
        );
        assert!(
            validate(f.as_fd(), true, Want::Regular, none)
                .unwrap()
                .writable
        );
        assert!(matches!(
            validate(f.as_fd(), false, Want::Directory, none),
            Err(FdError::WrongType)
        ));
    }

    #[test]
    fn write_only_pipes_sockets_and_deleted_files_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("a.txt");
        std::fs::write(&file, b"x").unwrap();
        let wo = std::fs::OpenOptions::new().write(true).open(&file).unwrap();
        assert!(matches!(
            validate(wo.as_fd(), true, Want::Regular, none),
            Err(FdError::AccessMode)
        ));
        let (r, _w) = std::io::pipe().unwrap();
        assert!(matches!(
            validate(r.as_fd(), true, Want::Any, none),
            Err(FdError::NotAFile(_))
        ));
        let (s, _t) = std::os::unix::net::UnixStream::pair().unwrap();
        assert!(matches!(
            validate(s.as_fd(), true, Want::Any, none),
            Err(FdError::NotAFile(_))
        ));
        let gone = std::fs::File::open(&file).unwrap();
        std::fs::remove_file(&file).unwrap();
        assert!(matches!(
            validate(gone.as_fd(), true, Want::Regular, none),
            Err(FdError::Deleted(_))
        ));
    }

    #[test]
    fn o_path_needs_read_access_and_no_nofollow() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("a.txt");
        std::fs::write(&file, b"x").unwrap();
        let open = |flags| {
            std::fs::OpenOptions::new()
                .read(true)
                .custom_flags(flags)
                .open(&file)
                .unwrap()
        };
        let p = open(libc::O_PATH);
        assert!(validate(p.as_fd(), false, Want::Regular, none).is_ok());
        let nf = open(libc::O_PATH | libc::O_NOFOLLOW);
        assert!(matches!(
            validate(nf.as_fd(), false, Want::Regular, none),
            Err(FdError::NoFollow)
        ));
    }

    #[test]
    fn a_file_renamed_after_open_is_named_where_it_is_now() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("a.txt");
        std::fs::write(&file, b"x").unwrap();
        let f = std::fs::File::open(&file).unwrap();
        std::fs::rename(&file, dir.path().join("old")).unwrap();
        std::fs::write(&file, b"other").unwrap();
        let v = validate(f.as_fd(), true, Want::Regular, none).unwrap();
        assert_eq!(v.path.file_name().unwrap(), "old");
    }
}
