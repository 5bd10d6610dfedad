//! What a test does when it cannot run its real parts here.

use std::io::Write;
use std::path::Path;

/// Whether this is CI's run (`CI` set to anything but "", "0" or "false";
/// `.ci/run` runs with `CI=true`). CI installs every real part the tests
/// use, so there a test that cannot run them fails instead of skipping.
pub fn under_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| !matches!(v.as_str(), "" | "0" | "false"))
}

/// Reports that a test (or one case of it) cannot run here, `msg` naming
/// the test and what is missing. Under CI ([`under_ci`]) this fails the test
/// with that message, so a skipped test never passes silently there;
/// elsewhere it prints `SKIPPED msg` on the real stderr (not the test
/// harness's captured output), so every run shows the skip, and the caller
/// returns.
pub fn skipped(msg: &str) {
    assert!(!under_ci(), "cannot run under CI: {msg}");
    let _ = writeln!(std::io::stderr(), "SKIPPED {msg}");
}

/// Whether the anchor binary at `path` (a Debian package named by
/// `package`) is installed. When it is not, [`skipped`] says so (a failure
/// under CI) and the caller returns.
pub fn anchor_present(path: &str, package: &str) -> bool {
    if Path::new(path).exists() {
        return true;
    }
    skipped(&format!("{path} is missing (apt-get install {package})"));
    false
}

/// Whether the test runs as root; when not, [`skipped`] says that `test`
/// needs root (a failure under CI, which runs as root).
pub fn running_as_root(test: &str) -> bool {
    // SAFETY: geteuid(2) takes no arguments and cannot fail.
    let root = unsafe { libc::geteuid() } == 0;
    if !root {
        skipped(&format!("{test}: needs root"));
    }
    root
}

/// What a test that runs `porthole run` with a document store's FUSE mount
/// lacks here (it needs root and `/dev/fuse`), or None when it can run.
pub fn sandbox_with_fuse_missing() -> Option<String> {
    // SAFETY: geteuid(2) takes no arguments and cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        return Some("needs root (porthole run and the FUSE mount as root here)".into());
    }
    if !Path::new("/dev/fuse").exists() {
        return Some("/dev/fuse is missing (FUSE)".into());
    }
    None
}
