//! [`InstanceResources`]: what one instance holds on the host, and their
//! clean-up in one place.
//!
//! An instance owns its directory under
//! `$XDG_RUNTIME_DIR/porthole/instances/ID` (the record `porthole ps`
//! reads, the proxy's sockets), its cgroup(s) and its D-Bus proxy. Every
//! way out of the monitor (a failed clone, a sandbox that died during
//! set-up, the app's exit) releases the same three, so the monitor holds
//! them here instead of removing each by hand on each path: a path that
//! returns early drops the owner, which releases everything now. Failures
//! are logged with what and why (STYLE.md: a failed clean-up is reported,
//! never dropped), never returned: the launch's own error or the app's
//! exit status is what the command reports.

use std::ffi::CString;

use nix::unistd::Pid;

use crate::bus;
use crate::cgroup::InstanceCgroup;
use crate::instance::InstanceDir;

/// The instance's directory, cgroup and proxy, each present once created.
/// Dropping it releases all of them now ([`InstanceResources::finish`] is
/// the end of a launch that got as far as running the app).
#[derive(Debug, Default)]
pub(super) struct InstanceResources {
    pub(super) dir: Option<InstanceDir>,
    pub(super) cgroup: Option<InstanceCgroup>,
    pub(super) proxy: Option<bus::Proxy>,
}

impl InstanceResources {
    /// Removes the cgroup now (it is empty, or will be within the retries
    /// of [`InstanceCgroup::remove`]); from here on the instance has none.
    pub(super) fn remove_cgroup(&mut self) {
        if let Some(cg) = self.cgroup.take() {
            remove_cgroup(cg);
        }
    }

    /// The end of a launch whose pid 1 ran: the proxy is killed at once and
    /// reaped after the rest (its exit overlaps that work), the directory
    /// removed, and the cgroup removed now if pid 1 has been reaped, else by
    /// a janitor once pid 1 is gone (`porthole run` then reports the app's
    /// status without waiting for the namespaces' teardown). Must be the
    /// last thing before returning the status (see the janitor's notes on
    /// shared memory and errno).
    pub(super) fn finish(mut self, pid1: Pid, pid1_reaped: bool) {
        if let Some(px) = &self.proxy {
            px.kill();
        }
        drop(self.dir.take());
        let later = if pid1_reaped {
            self.remove_cgroup();
            None
        } else {
            self.cgroup.take()
        };
        drop(self.proxy.take());
        if let Some(cg) = later {
            remove_cgroup_later(cg, pid1);
        }
    }
}

impl Drop for InstanceResources {
    /// Releases what is left: proxy ended first (its sockets are in the
    /// directory), then the directory and the cgroup; the proxy is reaped
    /// last, so its exit overlaps the removals.
    fn drop(&mut self) {
        if let Some(px) = &self.proxy {
            px.kill();
        }
        drop(self.dir.take());
        self.remove_cgroup();
        drop(self.proxy.take());
    }
}

fn remove_cgroup(cg: InstanceCgroup) {
    // The error names the directory that stayed.
    if let Err(e) = cg.remove() {
        crate::cleanup::failed("remove the instance cgroup", &e);
    }
}

/// Removes the instance's cgroup once `pid1` has exited, through
/// [`crate::janitor`]. The pidfd is taken while pid 1 is still our unreaped
/// child, so it names that process and no other. If the janitor cannot
/// start, we remove the cgroup ourselves, waiting as before.
fn remove_cgroup_later(cg: InstanceCgroup, pid1: Pid) {
    // Either fallback is the removal as it was before the janitor: no
    // failure to report, only a wait.
    let Ok(pidfd) = crate::sys::pidfd::open(pid1.as_raw()) else {
        return remove_cgroup(cg);
    };
    let dirs: Vec<CString> = cg.c_paths();
    if !crate::janitor::remove_when_gone(pidfd, dirs) {
        remove_cgroup(cg);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dropping_the_owner_removes_the_instance_dir_with_what_was_left_in_it() {
        let tmp = tempfile::tempdir().unwrap();
        let mut res = InstanceResources::default();
        res.dir = Some(InstanceDir::create(tmp.path(), "42", "[Application]\n").unwrap());
        // A proxy socket and something unexpected, as a crashed proxy might leave.
        std::fs::write(tmp.path().join("42/bus"), b"").unwrap();
        std::fs::write(tmp.path().join("42/stray"), b"").unwrap();
        assert!(tmp.path().join("42/info").exists());
        drop(res);
        assert!(!tmp.path().join("42").exists());
    }
}
