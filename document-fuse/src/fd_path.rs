//! Which file a caller's fd names, and whether the caller has shown it may
//! export it: upstream's `validate_fd`, on top of its
//! `xdp_app_info_get_path_for_fd` ([`porthole_identity::fd_path`], shared
//! with OpenURI).
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

use std::os::fd::{AsFd, BorrowedFd};
use std::path::{Path, PathBuf};

use rustix::fs::{AtFlags, CWD, FileType, Mode, OFlags};

pub use porthole_identity::fd_path::{FdError, FdPath, path_for_fd};

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

/// Upstream's `validate_fd`: [`path_for_fd`], then the directory holding
/// the file (or the directory itself) opened `O_PATH` and checked to hold
/// the same inode under the same name, not following a symlink.
pub fn validate(
    fd: BorrowedFd<'_>,
    is_host: bool,
    want: Want,
    alternate: impl Fn(&Path) -> Option<PathBuf>,
) -> Result<Validated, FdError> {
    let found = path_for_fd(fd, is_host, alternate)?;
    let kind = found.file_type;
    let is_dir = found.is_dir();
    let ok = match want {
        Want::Regular => kind == FileType::RegularFile,
        Want::Directory => is_dir,
        Want::Any => kind == FileType::RegularFile || is_dir,
    };
    if !ok {
        return Err(FdError::WrongType);
    }
    let path = &found.path;
    let dir_path: &Path = if is_dir {
        path
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
        if !found.same_inode(&dir_st) {
            return Err(FdError::NotSameFile(found.path));
        }
    } else {
        let name = path.file_name().ok_or(FdError::WrongType)?;
        let real = rustix::fs::statat(dir.as_fd(), name, AtFlags::SYMLINK_NOFOLLOW)
            .map_err(|e| FdError::Dir(path.clone(), e))?;
        if !found.same_inode(&real) {
            return Err(FdError::NotSameFile(found.path));
        }
    }
    Ok(Validated {
        dev: found.dev,
        ino: found.ino,
        is_dir,
        dir_dev: dir_st.st_dev,
        dir_ino: dir_st.st_ino,
        writable: found.writable,
        path: found.path,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

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
