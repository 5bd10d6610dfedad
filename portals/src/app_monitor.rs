//! Installed apps changing while an app chooser dialog is up (upstream's
//! `GAppInfoMonitor`, which sends the dialog `UpdateChoices`): inotify
//! watches on every `applications/` directory and the config directories
//! holding `mimeapps.list`, for as long as one dialog lasts. Nothing polls:
//! the task sleeps until the kernel reports a change.

use std::os::fd::OwnedFd;
use std::path::PathBuf;

use rustix::fs::inotify::{self, CreateFlags, WatchFlags};
use tokio::io::unix::AsyncFd;

use crate::config::SearchDirs;

/// The watched directories of one dialog.
pub struct AppMonitor {
    fd: AsyncFd<OwnedFd>,
}

impl AppMonitor {
    /// Watches the directories of `dirs` that exist (a missing one is not
    /// watched, as GIO watches only what it could read).
    pub fn watch(dirs: &SearchDirs) -> std::io::Result<Self> {
        let fd = inotify::init(CreateFlags::CLOEXEC | CreateFlags::NONBLOCK)?;
        let watched: Vec<PathBuf> = std::iter::once(&dirs.config_home)
            .chain(&dirs.config_dirs)
            .cloned()
            .chain(
                std::iter::once(&dirs.data_home)
                    .chain(&dirs.data_dirs)
                    .map(|d| d.join("applications")),
            )
            .collect();
        let events = WatchFlags::CREATE
            | WatchFlags::DELETE
            | WatchFlags::CLOSE_WRITE
            | WatchFlags::MOVED_FROM
            | WatchFlags::MOVED_TO
            | WatchFlags::ATTRIB
            | WatchFlags::ONLYDIR;
        for dir in &watched {
            if let Err(e) = inotify::add_watch(&fd, dir.as_path(), events) {
                tracing::trace!(dir = %dir.display(), "not watched: {e}");
            }
        }
        // SAFETY: the OwnedFd keeps the inotify descriptor open for as
        // long as the AsyncFd owns it, and always returns that same
        // descriptor.
        let fd = unsafe { AsyncFd::register_with_interest(fd, tokio::io::Interest::READABLE) }
            .map_err(std::io::Error::from)?;
        Ok(Self { fd })
    }

    /// Waits for the next change (every event pending then counts as one).
    pub async fn changed(&self) -> std::io::Result<()> {
        let mut guard = self.fd.readable().await?;
        let mut buf = [std::mem::MaybeUninit::<u8>::uninit(); 4096];
        let mut reader = inotify::Reader::new(self.fd.get_ref(), &mut buf);
        loop {
            match reader.next() {
                Ok(_) => continue,
                Err(rustix::io::Errno::AGAIN) => break,
                Err(rustix::io::Errno::INTR) => continue,
                Err(e) => return Err(e.into()),
            }
        }
        guard.clear_ready();
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_new_desktop_file_is_a_change() {
        let root = tempfile::tempdir().unwrap();
        let apps = root.path().join("data/applications");
        std::fs::create_dir_all(&apps).unwrap();
        let dirs = SearchDirs {
            config_home: root.path().join("config"),
            data_home: root.path().join("data"),
            ..SearchDirs::default()
        };
        let monitor = AppMonitor::watch(&dirs).unwrap();
        let quiet = tokio::time::timeout(std::time::Duration::from_millis(100), monitor.changed());
        assert!(quiet.await.is_err(), "no change yet");
        std::fs::write(apps.join("x.desktop"), "[Desktop Entry]\n").unwrap();
        tokio::time::timeout(std::time::Duration::from_secs(5), monitor.changed())
            .await
            .expect("the change is seen")
            .unwrap();
    }
}
