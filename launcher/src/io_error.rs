//! [`PathIoError`], the launcher's one I/O error with context.

use std::path::{Path, PathBuf};

/// An I/O error with what we were doing and on which path: a bare
/// `io::Error` ("Permission denied") names neither, and a user cannot act on
/// it (STYLE.md, Errors). One type for every module instead of a copy of the
/// same variant in each, as youki has `WrappedIoError`; a module's error
/// enum carries it as `#[error(transparent)] Io(#[from] PathIoError)`, so
/// `?` converts and the message stays `OP PATH: ERROR`.
#[derive(Debug, thiserror::Error)]
#[error("{op} {path}: {source}")]
pub struct PathIoError {
    /// What failed, worded to read before the path: "mkdir", "write to".
    pub op: &'static str,
    pub path: PathBuf,
    #[source]
    pub source: std::io::Error,
}

impl PathIoError {
    /// `source` may be an `io::Error`, a `nix::Error` (an errno) or an
    /// `io::ErrorKind`.
    pub fn new(
        op: &'static str,
        path: impl AsRef<Path>,
        source: impl Into<std::io::Error>,
    ) -> Self {
        PathIoError {
            op,
            path: path.as_ref().to_owned(),
            source: source.into(),
        }
    }

    /// For `map_err`: `.map_err(PathIoError::with("mkdir", &dir))?`. The
    /// closure borrows `path` and copies it only on failure, so the success
    /// path allocates nothing.
    pub fn with<P, E>(op: &'static str, path: &P) -> impl FnOnce(E) -> Self
    where
        P: AsRef<Path> + ?Sized,
        E: Into<std::io::Error>,
    {
        move |source| PathIoError::new(op, path, source)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::error::Error as _;

    #[test]
    fn message_is_op_path_error_and_source_is_the_io_error() {
        let e = PathIoError::with("mkdir", Path::new("/a/b"))(nix::errno::Errno::EACCES);
        assert_eq!(e.to_string(), "mkdir /a/b: Permission denied (os error 13)");
        let inner = e.source().and_then(|s| s.downcast_ref::<std::io::Error>());
        assert_eq!(inner.and_then(|s| s.raw_os_error()), Some(libc::EACCES));
    }
}
