//! The document store's view for one app, bound at `/run/user/UID/doc`.
//!
//! The document store (`porthole-documents`, or upstream's
//! xdg-document-portal) serves a FUSE file system at
//! `$XDG_RUNTIME_DIR/doc`; its `by-app/APP_ID` directory shows only the
//! documents granted to APP_ID, with the permissions granted. Flatpak binds
//! that directory into every sandbox, and so do we: a portal then answers an
//! app with `/run/user/UID/doc/ID/NAME`, a path that exists inside.
//!
//! Flatpak asks the store for its mount point over D-Bus at every launch
//! (GetMountPoint, which activates it). We look at the mount instead: a
//! statx and a lookup, no bus round trip on the launch path. When the store
//! is not running the app gets no `doc` directory, and the launch says so
//! at info level; the store's systemd unit or D-Bus activation by any client
//! starts it.

use std::path::{Path, PathBuf};

/// The app's view in the store mounted under `runtime_dir`, if a file
/// system is mounted at `runtime_dir/doc` and offers one.
pub fn app_view(runtime_dir: &Path, app_id: &str) -> Option<PathBuf> {
    use rustix::fs::{AtFlags, CWD, StatxAttributes, StatxFlags, statx};
    let mount = runtime_dir.join("doc");
    // A plain directory (the store not running, or something left there)
    // is not the store: binding it would show the app whatever lies there.
    // The file system's type cannot tell: upstream's store answers statfs
    // with EPERM. That it is a mount point can (STATX_ATTR_MOUNT_ROOT, set
    // by the VFS, not by the file system).
    let st = statx(CWD, &mount, AtFlags::SYMLINK_NOFOLLOW, StatxFlags::TYPE).ok()?;
    if !st.stx_attributes_mask.contains(StatxAttributes::MOUNT_ROOT)
        || !st.stx_attributes.contains(StatxAttributes::MOUNT_ROOT)
    {
        return None;
    }
    // The store creates an app's view when it is first looked up, as
    // upstream's does; a store refusing the id leaves the app without one.
    let view = mount.join("by-app").join(app_id);
    let meta = std::fs::symlink_metadata(&view).ok()?;
    meta.is_dir().then_some(view)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_plain_directory_is_not_the_store() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("doc/by-app/org.example.App")).unwrap();
        assert_eq!(app_view(dir.path(), "org.example.App"), None);
    }

    #[test]
    fn no_mount_no_view() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(app_view(dir.path(), "org.example.App"), None);
    }
}
