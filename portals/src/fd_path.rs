//! The file behind a caller's fd, and whether the caller has shown it may
//! read (and write) it, for OpenFile and OpenDirectory: upstream's
//! `xdp_app_info_get_path_for_fd` ([`porthole_identity::fd_path`], shared
//! with the Documents portal), plus the `/proc/self/fd/N` path through
//! which the caller's own file is read (its content type is sniffed there).

use std::os::fd::{AsRawFd, BorrowedFd};
use std::path::{Path, PathBuf};

pub use porthole_identity::fd_path::FdError;

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

/// Checks `fd` as upstream does ([`porthole_identity::fd_path::path_for_fd`]).
/// `alternate` maps a path that does not lead to the fd's inode to another
/// to try (a document as the app sees it, to the host's per-app view), as
/// upstream's `xdp_get_alternate_document_path`.
pub fn path_for_fd(
    fd: BorrowedFd<'_>,
    is_host: bool,
    alternate: impl Fn(&Path) -> Option<PathBuf>,
) -> Result<FdPath, FdError> {
    let found = porthole_identity::fd_path::path_for_fd(fd, is_host, alternate)?;
    Ok(FdPath {
        is_dir: found.is_dir(),
        writable: found.writable,
        path: found.path,
        proc_path: PathBuf::from(format!("/proc/self/fd/{}", fd.as_raw_fd())),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsFd;

    #[test]
    fn the_proc_path_reaches_the_callers_file() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("a.txt");
        std::fs::write(&file, "x").unwrap();
        let f = std::fs::File::open(&file).unwrap();
        let got = path_for_fd(f.as_fd(), false, |_| None).unwrap();
        assert_eq!(got.path, file);
        assert!(!got.is_dir && !got.writable);
        std::fs::remove_file(&file).unwrap();
        // The name is gone; the caller's file is still there to sniff.
        assert_eq!(std::fs::read(&got.proc_path).unwrap(), b"x");
        let d = std::fs::File::open(dir.path()).unwrap();
        assert!(path_for_fd(d.as_fd(), false, |_| None).unwrap().is_dir);
    }
}
