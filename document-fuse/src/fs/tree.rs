//! Directory documents (`AddFull` with export-directory): the document's
//! directory shows the exported directory under its own name, and below it
//! the real tree, with the view's permissions.
//!
//! Every request resolves its node's path again from the exported
//! directory (opened and checked against the device and inode recorded at
//! export), one component at a time with `O_PATH|O_NOFOLLOW`: a symlink in
//! the tree is shown as a symlink (the app's kernel resolves it in the
//! app's own view), never followed by us, and a directory renamed or
//! swapped for a symlink on the host cannot lead us outside the tree.

use std::ffi::{OsStr, OsString};
use std::os::fd::OwnedFd;
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};

use fuser::{FileAttr, FileType};
use rustix::fs::{AtFlags, Mode, OFlags};
use rustix::io::Errno;

use super::{DocFs, check_name, real, wants_write};
use crate::document::Document;
use crate::permissions::Perms;

/// The components of `rel` below the exported directory's own name, or
/// None when `rel` does not start with it.
fn below<'a>(doc: &Document, rel: &'a Path) -> Option<Vec<&'a OsStr>> {
    let mut comps = rel.components();
    match comps.next() {
        Some(Component::Normal(first)) if first == doc.name() => {}
        _ => return None,
    }
    comps
        .map(|c| match c {
            Component::Normal(n) => Some(n),
            _ => None,
        })
        .collect()
}

/// Opens the node at `rel` of a directory document, one component at a
/// time without following symlinks.
fn walk(doc: &Document, comps: &[&OsStr]) -> Result<OwnedFd, Errno> {
    let mut fd = real::open_dir(doc)?;
    for comp in comps {
        fd = rustix::fs::openat(
            &fd,
            *comp,
            OFlags::PATH | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::empty(),
        )?;
    }
    Ok(fd)
}

/// Where a file or directory inside a directory document is on the host,
/// for Add of an fd on the mount: its path (through the real directory
/// holding it, as the kernel names that directory now), that directory's
/// device and inode, and whether it is a directory. The walk never
/// follows a symlink, so a symlink made inside the tree cannot point the
/// new document elsewhere.
pub fn locate(doc: &Document, rel: &Path) -> Result<(PathBuf, u64, u64, bool), Errno> {
    let comps = below(doc, rel).ok_or(Errno::NOENT)?;
    let (last, parents) = comps.split_last().ok_or(Errno::INVAL)?;
    let parent = walk(doc, parents)?;
    let st = rustix::fs::statat(&parent, *last, AtFlags::SYMLINK_NOFOLLOW)?;
    let is_dir = match rustix::fs::FileType::from_raw_mode(st.st_mode) {
        rustix::fs::FileType::Directory => true,
        rustix::fs::FileType::RegularFile => false,
        _ => return Err(Errno::INVAL),
    };
    let dir_path = rustix::fs::readlinkat(
        rustix::fs::CWD,
        real::proc_path(&parent).as_str(),
        Vec::new(),
    )?;
    let path = PathBuf::from(OsStr::from_bytes(dir_path.as_bytes())).join(last);
    if is_dir {
        Ok((path, st.st_dev, st.st_ino, true))
    } else {
        let dst = rustix::fs::fstat(&parent)?;
        Ok((path, dst.st_dev, dst.st_ino, false))
    }
}

impl DocFs {
    /// The document, the view's permissions, and an `O_PATH` fd of the
    /// node at `rel`.
    pub(super) fn resolve(
        &self,
        view: &str,
        id: &str,
        rel: &Path,
    ) -> Result<(Document, Perms, OwnedFd), Errno> {
        let (doc, perms) = self.visible(view, id).ok_or(Errno::NOENT)?;
        if !doc.flags.directory() {
            return Err(Errno::NOENT);
        }
        let comps = below(&doc, rel).ok_or(Errno::NOENT)?;
        let fd = walk(&doc, &comps)?;
        Ok((doc, perms, fd))
    }

    /// The directory holding `rel`'s last component (itself checked to be
    /// a directory), and that component's name.
    pub(super) fn resolve_parent(
        &self,
        view: &str,
        id: &str,
        rel: &Path,
    ) -> Result<(Perms, OwnedFd, OsString), Errno> {
        let name = rel.file_name().ok_or(Errno::PERM)?.to_owned();
        let parent = rel.parent().ok_or(Errno::PERM)?;
        if parent.as_os_str().is_empty() {
            // The exported directory itself: its parent is not ours.
            return Err(Errno::PERM);
        }
        let (_, perms, fd) = self.resolve(view, id, parent)?;
        Ok((perms, fd, name))
    }

    pub(super) fn tree_attr(
        &self,
        ino: u64,
        fd: &OwnedFd,
        perms: Perms,
    ) -> Result<FileAttr, Errno> {
        let st = rustix::fs::fstat(fd)?;
        Ok(self.file_attr(ino, &st, perms))
    }

    /// A node inside the tree: its number and attributes.
    pub(super) fn tree_node(
        &mut self,
        view: &str,
        id: &str,
        rel: PathBuf,
    ) -> Result<FileAttr, Errno> {
        let (_, perms, fd) = self.resolve(view, id, &rel)?;
        let st = rustix::fs::fstat(&fd)?;
        let ino = self.sub_ino(view, id, rel, &st);
        Ok(self.file_attr(ino, &st, perms))
    }

    fn sub_ino(&self, view: &str, id: &str, rel: PathBuf, st: &rustix::fs::Stat) -> u64 {
        super::lock(&self.shared.inodes).sub_ino(view, id, rel, st.st_dev, st.st_ino)
    }

    pub(super) fn tree_readdir(
        &self,
        view: &str,
        id: &str,
        rel: &Path,
    ) -> Result<Vec<(u64, FileType, OsString)>, Errno> {
        let (_, _, fd) = self.resolve(view, id, rel)?;
        let dir = rustix::fs::openat(
            &fd,
            ".",
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )?;
        let dir_dev = rustix::fs::fstat(&dir)?.st_dev;
        let mut out = Vec::new();
        for entry in rustix::fs::Dir::read_from(&dir)? {
            let entry = entry?;
            let name = OsStr::from_bytes(entry.file_name().to_bytes()).to_owned();
            if name == "." || name == ".." {
                continue;
            }
            let kind = match entry.file_type() {
                rustix::fs::FileType::Directory => FileType::Directory,
                rustix::fs::FileType::Symlink => FileType::Symlink,
                rustix::fs::FileType::Fifo => FileType::NamedPipe,
                rustix::fs::FileType::Socket => FileType::Socket,
                rustix::fs::FileType::CharacterDevice => FileType::CharDevice,
                rustix::fs::FileType::BlockDevice => FileType::BlockDevice,
                _ => FileType::RegularFile,
            };
            // The entry's inode on the real file system (a hard link shows
            // as the one inode it is); a mount point inside the tree is
            // told apart by the number its lookup gets.
            let ino = super::lock(&self.shared.inodes).sub_ino(
                view,
                id,
                rel.join(&name),
                dir_dev,
                entry.ino(),
            );
            out.push((ino, kind, name));
        }
        Ok(out)
    }

    pub(super) fn tree_open_real(
        &mut self,
        view: &str,
        id: &str,
        rel: &Path,
        flags: i32,
    ) -> Result<OwnedFd, Errno> {
        let (perms, parent, name) = self.resolve_parent(view, id, rel)?;
        if wants_write(flags) && !perms.contains(Perms::WRITE) {
            return Err(Errno::ACCESS);
        }
        real::open_file(&parent, &name, flags, 0)
    }

    /// The writable directory `parent_rel` and a checked new name in it.
    fn writable_dir(
        &self,
        view: &str,
        id: &str,
        parent_rel: &Path,
        name: &OsStr,
    ) -> Result<OwnedFd, Errno> {
        let (_, perms, dir) = self.resolve(view, id, parent_rel)?;
        if !perms.contains(Perms::WRITE) {
            return Err(Errno::ACCESS);
        }
        check_name(name)?;
        Ok(dir)
    }

    pub(super) fn tree_create(
        &mut self,
        view: &str,
        id: &str,
        parent_rel: &Path,
        name: &OsStr,
        mode: u32,
        flags: i32,
    ) -> Result<(FileAttr, u64), Errno> {
        let dir = self.writable_dir(view, id, parent_rel, name)?;
        let fd = real::open_file(&dir, name, flags | libc::O_CREAT, mode)?;
        let (_, perms) = self.visible(view, id).ok_or(Errno::NOENT)?;
        let st = rustix::fs::fstat(&fd)?;
        let ino = self.sub_ino(view, id, parent_rel.join(name), &st);
        let attr = self.file_attr(ino, &st, perms);
        let fh = self.adopt_created(ino, fd, view.to_owned(), id.to_owned());
        Ok((attr, fh))
    }

    pub(super) fn tree_mkdir(
        &mut self,
        view: &str,
        id: &str,
        parent_rel: &Path,
        name: &OsStr,
        mode: u32,
    ) -> Result<FileAttr, Errno> {
        let dir = self.writable_dir(view, id, parent_rel, name)?;
        rustix::fs::mkdirat(&dir, name, Mode::from_raw_mode(mode & 0o777))?;
        self.tree_node(view, id, parent_rel.join(name))
    }

    pub(super) fn tree_symlink(
        &mut self,
        view: &str,
        id: &str,
        parent_rel: &Path,
        name: &OsStr,
        target: &Path,
    ) -> Result<FileAttr, Errno> {
        let dir = self.writable_dir(view, id, parent_rel, name)?;
        rustix::fs::symlinkat(target, &dir, name)?;
        self.tree_node(view, id, parent_rel.join(name))
    }

    pub(super) fn tree_unlink(
        &mut self,
        view: &str,
        id: &str,
        parent_rel: &Path,
        name: &OsStr,
        directory: bool,
    ) -> Result<(), Errno> {
        let dir = self.writable_dir(view, id, parent_rel, name)?;
        let flags = if directory {
            AtFlags::REMOVEDIR
        } else {
            AtFlags::empty()
        };
        let kept = self.keep_sub(view, id, &parent_rel.join(name), &dir, name);
        rustix::fs::unlinkat(&dir, name, flags)?;
        self.detach_sub(view, id, kept);
        Ok(())
    }

    pub(super) fn tree_rename(
        &mut self,
        view: &str,
        id: &str,
        (from, name): (&Path, &OsStr),
        (to, newname): (&Path, &OsStr),
    ) -> Result<(), Errno> {
        let src = self.writable_dir(view, id, from, name)?;
        let dst = self.writable_dir(view, id, to, newname)?;
        let kept = self.keep_sub(view, id, &to.join(newname), &dst, newname);
        let moved = rustix::fs::statat(&src, name, AtFlags::SYMLINK_NOFOLLOW)?;
        rustix::fs::renameat(&src, name, &dst, newname)?;
        self.detach_sub(view, id, kept);
        // The moved node keeps its number under the new name, as the
        // kernel keeps its inode (reads of a file open across the rename
        // name the number).
        self.sub_ino(view, id, to.join(newname), &moved);
        Ok(())
    }

    /// Before the file at `rel` (`name` in `dir`) loses its name through
    /// us: its number, if the kernel may know it, and an fd of it, so that
    /// a process with it open keeps the file itself.
    fn keep_sub(
        &self,
        view: &str,
        id: &str,
        rel: &Path,
        dir: &OwnedFd,
        name: &OsStr,
    ) -> Option<(u64, OwnedFd)> {
        let n = super::lock(&self.shared.inodes).known(&super::Node::Sub {
            view: view.to_owned(),
            id: id.to_owned(),
            rel: rel.to_owned(),
        })?;
        Some((n, Self::keep_for_detach(dir, name)?))
    }

    fn detach_sub(&mut self, view: &str, id: &str, kept: Option<(u64, OwnedFd)>) {
        if let Some((n, fd)) = kept {
            self.hold(n, fd, view.to_owned(), id.to_owned(), true);
        }
    }

    pub(super) fn tree_link(
        &mut self,
        view: &str,
        id: &str,
        rel: &Path,
        parent_rel: &Path,
        newname: &OsStr,
    ) -> Result<FileAttr, Errno> {
        let (perms, src_dir, name) = self.resolve_parent(view, id, rel)?;
        if !perms.contains(Perms::WRITE) {
            return Err(Errno::ACCESS);
        }
        let dst = self.writable_dir(view, id, parent_rel, newname)?;
        rustix::fs::linkat(&src_dir, &name, &dst, newname, AtFlags::empty())?;
        self.tree_node(view, id, parent_rel.join(newname))
    }

    pub(super) fn tree_readlink(&self, view: &str, id: &str, rel: &Path) -> Result<Vec<u8>, Errno> {
        let (_, parent, name) = self.resolve_parent(view, id, rel)?;
        Ok(rustix::fs::readlinkat(&parent, &name, Vec::new())?.into_bytes())
    }

    /// The host path of a node in the tree, for the host-path xattr.
    pub(super) fn tree_host_path(&self, view: &str, id: &str, rel: &Path) -> Option<PathBuf> {
        let (doc, _) = self.visible(view, id)?;
        let comps = below(&doc, rel)?;
        Some(comps.into_iter().fold(doc.path.clone(), |p, c| p.join(c)))
    }

    #[allow(clippy::too_many_arguments)]
    pub(super) fn tree_setattr(
        &mut self,
        ino: u64,
        view: &str,
        id: &str,
        rel: &Path,
        mode: Option<u32>,
        size: Option<u64>,
        times: Option<rustix::fs::Timestamps>,
    ) -> Result<FileAttr, Errno> {
        let (perms, parent, name) = self.resolve_parent(view, id, rel)?;
        if !perms.contains(Perms::WRITE) {
            return Err(Errno::ACCESS);
        }
        if let Some(size) = size {
            let fd = real::open_file(&parent, &name, libc::O_WRONLY, 0)?;
            rustix::fs::ftruncate(&fd, size)?;
        }
        if let Some(mode) = mode {
            // Not through a symlink: the node itself, opened without
            // following it.
            let fd = rustix::fs::openat(
                &parent,
                &name,
                OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC | OFlags::NONBLOCK,
                Mode::empty(),
            )?;
            rustix::fs::fchmod(&fd, Mode::from_raw_mode(mode & 0o7777))?;
        }
        if let Some(times) = times {
            rustix::fs::utimensat(&parent, &name, &times, AtFlags::SYMLINK_NOFOLLOW)?;
        }
        let (_, perms, fd) = self.resolve(view, id, rel)?;
        self.tree_attr(ino, &fd, perms)
    }
}
