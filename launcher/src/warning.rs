//! [`Warning`]: what a command should tell its user about a launch that
//! goes on anyway (a grant that cannot be honoured, a setting not used).
//!
//! The library never prints: it hands each warning to the command, which
//! owns stderr and the wording of its output (`porthole: warning: ...`).
//! Stages report through a [`Warnings`] sink as they go, instead of
//! returning a list with the result, because `porthole run`'s result comes
//! when the app has exited: a warning that the memory limit is not
//! enforced belongs before the app's own output, not hours after it.
//!
//! The sandbox's pid 1 is another process (a clone that never returns to
//! the command): the few lines it writes itself (a D-Bus proxy that did not
//! come up, the bus notes it says once the app runs, a failed set-up step)
//! stay its own writes to the stderr it shares with the command.

use std::fmt;
use std::path::PathBuf;

use crate::cgroup::CgroupError;

/// Something the user should know; the command goes on.
#[derive(Debug)]
pub enum Warning {
    /// `$XDG_RUNTIME_DIR` is not private to us, so it is not trusted.
    RuntimeDirNotPrivate {
        dir: PathBuf,
        uid: u32,
        owner: u32,
        mode: u32,
    },
    /// A `--socket` grant for a socket the host does not have.
    SocketMissing { name: &'static str },
    /// The D-Bus proxy could not be started; the app runs without D-Bus.
    NoBusProxy { reason: String },
    /// `--memory-max`/`--pids-max` given, but no cgroup of ours to set them.
    LimitsNoCgroup(CgroupError),
    /// The sandbox could not be moved into its cgroup.
    CgroupMoveFailed(CgroupError),
    /// The limits were to be set on a systemd scope, which is not there.
    LimitsNoScope { reason: String },
    /// The systemd scope was created but the sandbox is not in it.
    ScopeMissesSandbox { unit: String },
    /// A Flatpak-installed app's permissions that porthole does not
    /// provide yet: one line naming all of them.
    FlatpakUnsupported { items: Vec<String> },
}

impl Warning {
    /// The word the command puts before the text: most are warnings; a
    /// missing socket is a note (the grant is harmless, just unused).
    pub fn label(&self) -> &'static str {
        match self {
            Warning::SocketMissing { .. } => "note",
            _ => "warning",
        }
    }
}

const LIMITS: &str = "--memory-max/--pids-max cannot be enforced";

impl fmt::Display for Warning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Warning::RuntimeDirNotPrivate {
                dir,
                uid,
                owner,
                mode,
            } => write!(
                f,
                "XDG_RUNTIME_DIR={} is not private to uid {uid} (owner {owner}, mode {mode:o}); not used",
                dir.display()
            ),
            Warning::SocketMissing { name } => write!(
                f,
                "--socket={name} granted but the host has no such socket; not provided"
            ),
            Warning::NoBusProxy { reason } => {
                write!(f, "D-Bus proxy: {reason}; the app runs without D-Bus")
            }
            Warning::LimitsNoCgroup(e) => write!(f, "{LIMITS}: {e}"),
            Warning::CgroupMoveFailed(e) => write!(
                f,
                "could not move the sandbox into its cgroup; limits are not enforced: {e}"
            ),
            Warning::LimitsNoScope { reason } => {
                write!(f, "{LIMITS}: no systemd scope: {reason}")
            }
            Warning::ScopeMissesSandbox { unit } => write!(
                f,
                "{LIMITS}: the systemd scope {unit} does not hold the sandbox"
            ),
            Warning::FlatpakUnsupported { items } => write!(
                f,
                "not supported by porthole yet, so not granted: {}",
                items.join(", ")
            ),
        }
    }
}

/// Where a stage reports its warnings: the command passes one that prints
/// them (or, in a test, collects them).
pub type Warnings<'a> = &'a mut dyn FnMut(Warning);

#[cfg(test)]
mod tests {
    use super::*;

    /// The wording is a contract: launcher/tests match on these lines.
    #[test]
    fn texts_are_the_ones_users_and_tests_see() {
        let w = Warning::RuntimeDirNotPrivate {
            dir: "/tmp".into(),
            uid: 1000,
            owner: 0,
            mode: 0o1777,
        };
        assert_eq!(w.label(), "warning");
        assert_eq!(
            w.to_string(),
            "XDG_RUNTIME_DIR=/tmp is not private to uid 1000 (owner 0, mode 1777); not used"
        );
        let w = Warning::SocketMissing { name: "wayland" };
        assert_eq!(w.label(), "note");
        assert_eq!(
            w.to_string(),
            "--socket=wayland granted but the host has no such socket; not provided"
        );
        let w = Warning::ScopeMissesSandbox {
            unit: "app-porthole-x.scope".into(),
        };
        assert_eq!(
            w.to_string(),
            "--memory-max/--pids-max cannot be enforced: the systemd scope app-porthole-x.scope does not hold the sandbox"
        );
    }
}
