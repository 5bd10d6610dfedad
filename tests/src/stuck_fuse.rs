//! A FUSE file system with one file, `info`, whose reads are never
//! answered: a real file that hangs, as on a dead network file system.
//! The permission store's tests put it where a caller's `/.flatpak-info`
//! is read, the document store's behind an exported document.

use std::path::Path;
use std::time::Duration;

/// Holds each read's reply instead of answering it (fuser answers a
/// dropped reply with EIO, which would not hang anything).
struct StuckFile {
    held: Vec<fuser::ReplyData>,
}

impl StuckFile {
    fn attr(ino: u64) -> fuser::FileAttr {
        let dir = ino == 1;
        fuser::FileAttr {
            ino,
            size: if dir { 0 } else { 64 },
            blocks: 1,
            atime: std::time::UNIX_EPOCH,
            mtime: std::time::UNIX_EPOCH,
            ctime: std::time::UNIX_EPOCH,
            crtime: std::time::UNIX_EPOCH,
            kind: if dir {
                fuser::FileType::Directory
            } else {
                fuser::FileType::RegularFile
            },
            perm: if dir { 0o755 } else { 0o644 },
            nlink: if dir { 2 } else { 1 },
            uid: 0,
            gid: 0,
            rdev: 0,
            blksize: 4096,
            flags: 0,
        }
    }
}

impl fuser::Filesystem for StuckFile {
    fn lookup(
        &mut self,
        _req: &fuser::Request<'_>,
        parent: u64,
        name: &std::ffi::OsStr,
        reply: fuser::ReplyEntry,
    ) {
        if parent == 1 && name == "info" {
            reply.entry(&Duration::ZERO, &Self::attr(2), 0);
        } else {
            reply.error(libc::ENOENT);
        }
    }

    fn getattr(
        &mut self,
        _req: &fuser::Request<'_>,
        ino: u64,
        _fh: Option<u64>,
        reply: fuser::ReplyAttr,
    ) {
        match ino {
            1 | 2 => reply.attr(&Duration::ZERO, &Self::attr(ino)),
            _ => reply.error(libc::ENOENT),
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn read(
        &mut self,
        _req: &fuser::Request<'_>,
        _ino: u64,
        _fh: u64,
        _offset: i64,
        _size: u32,
        _flags: i32,
        _lock: Option<u64>,
        reply: fuser::ReplyData,
    ) {
        self.held.push(reply);
    }
}

/// Mounts the file system read-only at `dir` (the hanging file is then
/// `dir/info`) under the name `fsname`; unmounted when the session drops.
pub fn mount(dir: &Path, fsname: &str) -> fuser::BackgroundSession {
    fuser::spawn_mount2(
        StuckFile { held: Vec::new() },
        dir,
        &[
            fuser::MountOption::RO,
            fuser::MountOption::FSName(fsname.into()),
        ],
    )
    .expect("mounting a FUSE file system (is /dev/fuse there?)")
}
