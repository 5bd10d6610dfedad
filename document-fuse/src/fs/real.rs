//! The real files behind documents, reached so that a path swapped after
//! export exposes nothing: the directory is opened and must still be the
//! directory recorded at export (device and inode), and the file in it is
//! opened relative to that fd without following a symlink.

use std::ffi::OsStr;
use std::os::fd::{AsFd, OwnedFd};

use rustix::fs::{AtFlags, CWD, FileType, Mode, OFlags, Stat};
use rustix::io::Errno;

use crate::document::Document;

/// The document's directory, checked to be the one recorded at export.
/// ENOENT when it is gone or is another directory now.
pub fn open_dir(doc: &Document) -> Result<OwnedFd, Errno> {
    let fd = rustix::fs::openat(
        CWD,
        doc.dir(),
        OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )?;
    let st = rustix::fs::fstat(&fd)?;
    if st.st_dev != doc.dev || st.st_ino != doc.ino {
        return Err(Errno::NOENT);
    }
    Ok(fd)
}

/// A regular file in `dir`, not following a symlink. Anything else at that
/// name (a symlink swapped in, a directory, a fifo) is ENOENT: the document
/// is a file, and nothing else is exposed under its name.
pub fn stat_file(dir: impl AsFd, name: &OsStr) -> Result<Stat, Errno> {
    let st = rustix::fs::statat(dir, name, AtFlags::SYMLINK_NOFOLLOW)?;
    if FileType::from_raw_mode(st.st_mode) != FileType::RegularFile {
        return Err(Errno::NOENT);
    }
    Ok(st)
}

/// Opens a file in `dir` with the kernel's open flags, never following a
/// symlink at the last component (ELOOP) and never becoming our
/// controlling terminal.
pub fn open_file(dir: impl AsFd, name: &OsStr, flags: i32, mode: u32) -> Result<OwnedFd, Errno> {
    let flags = OFlags::from_bits_retain(flags as u32)
        | OFlags::NOFOLLOW
        | OFlags::CLOEXEC
        | OFlags::NOCTTY;
    let fd = rustix::fs::openat(dir, name, flags, Mode::from_raw_mode(mode))?;
    let st = rustix::fs::fstat(&fd)?;
    if FileType::from_raw_mode(st.st_mode) != FileType::RegularFile {
        return Err(Errno::NOENT);
    }
    Ok(fd)
}

/// A new temporary file next to the document, as upstream names them
/// (`.xdp-NAME-XXXXXX`), created exclusively.
pub fn create_temp(
    dir: impl AsFd,
    visible: &OsStr,
    mode: u32,
) -> Result<(OwnedFd, std::ffi::OsString), Errno> {
    const LETTERS: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    let dir = dir.as_fd();
    for _ in 0..100 {
        let mut name = std::ffi::OsString::from(".xdp-");
        name.push(visible);
        name.push("-");
        let mut seed = [0u8; 6];
        fill_random(&mut seed);
        let suffix: String = seed
            .iter()
            .map(|b| LETTERS[*b as usize % LETTERS.len()] as char)
            .collect();
        name.push(suffix);
        match rustix::fs::openat(
            dir,
            name.as_os_str(),
            OFlags::CREATE
                | OFlags::EXCL
                | OFlags::NOFOLLOW
                | OFlags::NOCTTY
                | OFlags::RDWR
                | OFlags::CLOEXEC,
            Mode::from_raw_mode(mode),
        ) {
            Ok(fd) => return Ok((fd, name)),
            Err(Errno::EXIST) => continue,
            Err(e) => return Err(e),
        }
    }
    Err(Errno::EXIST)
}

fn fill_random(buf: &mut [u8]) {
    use std::io::Read;
    if std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(buf))
        .is_err()
    {
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        for (i, b) in buf.iter_mut().enumerate() {
            *b = (t >> (i * 8)) as u8;
        }
    }
}

/// `/proc/self/fd/N` for an fd, to reach a file's xattrs through an
/// `O_PATH` fd (the f*xattr calls refuse those).
pub fn proc_path(fd: &OwnedFd) -> String {
    use std::os::fd::AsRawFd;
    format!("/proc/self/fd/{}", fd.as_raw_fd())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::document::DocFlags;

    fn doc_in(dir: &std::path::Path, name: &str) -> Document {
        let st = rustix::fs::stat(dir).unwrap();
        Document {
            path: dir.join(name),
            dev: st.st_dev,
            ino: st.st_ino,
            flags: DocFlags(0),
            apps: Default::default(),
        }
    }

    #[test]
    fn a_directory_swapped_for_a_symlink_exposes_nothing() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("d");
        std::fs::create_dir(&dir).unwrap();
        std::fs::write(dir.join("f"), b"mine").unwrap();
        let doc = doc_in(&dir, "f");
        let fd = open_dir(&doc).unwrap();
        assert!(stat_file(&fd, OsStr::new("f")).is_ok());
        drop(fd);
        // Swap the directory for a symlink to another one holding "f".
        let secret = root.path().join("secret");
        std::fs::create_dir(&secret).unwrap();
        std::fs::write(secret.join("f"), b"secret").unwrap();
        std::fs::rename(&dir, root.path().join("moved")).unwrap();
        std::os::unix::fs::symlink(&secret, &dir).unwrap();
        assert_eq!(open_dir(&doc).unwrap_err(), Errno::NOENT);
    }

    #[test]
    fn a_file_swapped_for_a_symlink_is_not_followed() {
        let root = tempfile::tempdir().unwrap();
        std::fs::write(root.path().join("secret"), b"secret").unwrap();
        std::os::unix::fs::symlink(root.path().join("secret"), root.path().join("f")).unwrap();
        let doc = doc_in(root.path(), "f");
        let dir = open_dir(&doc).unwrap();
        assert_eq!(stat_file(&dir, OsStr::new("f")).unwrap_err(), Errno::NOENT);
        assert_eq!(
            open_file(&dir, OsStr::new("f"), libc::O_RDONLY, 0).unwrap_err(),
            Errno::LOOP
        );
    }

    #[test]
    fn temp_names_are_upstreams_and_exclusive() {
        let root = tempfile::tempdir().unwrap();
        let dir = rustix::fs::openat(CWD, root.path(), OFlags::PATH, Mode::empty()).unwrap();
        let (_fd, name) = create_temp(&dir, OsStr::new("doc.txt"), 0o600).unwrap();
        let name = name.to_string_lossy().into_owned();
        assert!(name.starts_with(".xdp-doc.txt-") && name.len() == ".xdp-doc.txt-".len() + 6);
        assert!(root.path().join(&name).is_file());
    }
}
