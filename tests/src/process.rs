//! Our built binaries, processes by PID, commands run with a hard
//! time-out, and threads without capabilities.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// The directory holding this workspace's built binaries (`target/debug` or
/// `target/release`), found from the running test executable.
pub fn bin_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("PORTHOLE_BIN_DIR") {
        return PathBuf::from(dir);
    }
    let exe = std::env::current_exe().expect("test executable path");
    // target/<profile>/deps/<test>-<hash>
    exe.parent()
        .and_then(Path::parent)
        .expect("target/<profile>")
        .to_owned()
}

/// Path of one of our binaries; panics with the command to run if missing.
pub fn bin(name: &str) -> PathBuf {
    let path = bin_dir().join(name);
    assert!(
        path.exists(),
        "{} is not built; run `cargo build --workspace --bins` before the tests",
        path.display()
    );
    path
}

/// Path of one of our example programs (the clients the tests run, built
/// with the tests); panics with the command to run if missing.
pub fn example(name: &str) -> PathBuf {
    let path = bin_dir().join("examples").join(name);
    assert!(
        path.exists(),
        "{} is not built; run `cargo build -p porthole-tests --examples` before the tests",
        path.display()
    );
    path
}

/// Sends `sig` to `pid`, then waits up to `grace` for it to go away.
/// Returns whether it exited in time.
pub fn signal_and_wait(pid: u32, sig: i32, grace: Duration) -> bool {
    // SAFETY: kill(2) takes plain integers; a stale PID only yields ESRCH.
    unsafe { libc::kill(pid as libc::pid_t, sig) };
    let deadline = Instant::now() + grace;
    while Instant::now() < deadline {
        if !pid_alive(pid) {
            return true;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    !pid_alive(pid)
}

/// Whether `pid` exists and is not a zombie.
pub fn pid_alive(pid: u32) -> bool {
    match fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => {
            // The state follows the parenthesised command name.
            let state = stat
                .rsplit_once(") ")
                .and_then(|(_, rest)| rest.chars().next());
            !matches!(state, Some('Z') | Some('X') | None)
        }
        Err(_) => false,
    }
}

/// Runs `cmd` to completion with a hard timeout; returns (status, stdout, stderr).
///
/// The pipes are read while the command runs (a command that writes more
/// than a pipe holds, 64 KiB, would otherwise block and look like a
/// time-out). The command gets its own process group, and on time-out the
/// whole group is killed and the test fails with what it printed so far.
pub fn run_with_timeout(
    cmd: &mut Command,
    timeout: Duration,
) -> (std::process::ExitStatus, String, String) {
    use std::os::unix::process::CommandExt;
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0);
    let child = cmd.spawn().expect("spawn");
    let pgid = child.id() as libc::pid_t;
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    let out = match rx.recv_timeout(timeout) {
        Ok(out) => out.expect("waiting for the command"),
        Err(_) => {
            // SAFETY: kill(2) takes plain integers; the group is the one this
            // command leads, created for it above.
            unsafe { libc::kill(-pgid, libc::SIGKILL) };
            let printed = rx
                .recv_timeout(Duration::from_secs(5))
                .ok()
                .and_then(Result::ok)
                .map(|out| {
                    format!(
                        "stdout: {}\nstderr: {}",
                        String::from_utf8_lossy(&out.stdout),
                        String::from_utf8_lossy(&out.stderr)
                    )
                })
                .unwrap_or_else(|| "(its pipes stayed open after the kill)".into());
            panic!("command timed out after {timeout:?}: {cmd:?}\n{printed}");
        }
    };
    (
        out.status,
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Runs `f` on a thread of its own that holds no capabilities, as an app
/// (and any ordinary process) holds none: a test running as root then
/// meets the file modes as a user's process does (root's CAP_DAC_OVERRIDE
/// would pass over them). Capabilities are per thread, so the rest of the
/// test keeps its own.
pub fn without_capabilities<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    std::thread::spawn(move || {
        drop_capabilities();
        f()
    })
    .join()
    .expect("the thread without capabilities panicked")
}

fn drop_capabilities() {
    #[repr(C)]
    struct Header {
        version: u32,
        pid: i32,
    }
    #[repr(C)]
    #[derive(Clone, Copy, Default)]
    struct Data {
        effective: u32,
        permitted: u32,
        inheritable: u32,
    }
    const LINUX_CAPABILITY_VERSION_3: u32 = 0x2008_0522;
    let header = Header {
        version: LINUX_CAPABILITY_VERSION_3,
        pid: 0,
    };
    let data = [Data::default(); 2];
    // SAFETY: capset(2) reads a version 3 header and two data structs,
    // both live for the call; pid 0 is the calling thread.
    let r = unsafe { libc::syscall(libc::SYS_capset, &header, data.as_ptr()) };
    assert_eq!(r, 0, "capset: {}", std::io::Error::last_os_error());
}

#[cfg(test)]
mod tests {
    use super::*;

    /// More output than a pipe holds (64 KiB) is read while the command
    /// runs, not reported as a time-out.
    #[test]
    fn run_with_timeout_reads_large_output() {
        let mut cmd = Command::new("sh");
        cmd.args([
            "-c",
            "head -c 300000 /dev/zero | tr '\\0' x; head -c 100000 /dev/zero | tr '\\0' y >&2",
        ]);
        let (status, out, err) = run_with_timeout(&mut cmd, Duration::from_secs(20));
        assert!(status.success());
        assert_eq!((out.len(), err.len()), (300_000, 100_000));
        assert!(out.bytes().all(|b| b == b'x') && err.bytes().all(|b| b == b'y'));
    }

    /// A command past its time is killed with its children, and the panic
    /// shows what it printed.
    #[test]
    fn run_with_timeout_kills_the_group_and_shows_output() {
        let mut cmd = Command::new("sh");
        cmd.args(["-c", "echo started; sleep 60 & sleep 60"]);
        let err = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            run_with_timeout(&mut cmd, Duration::from_millis(300))
        }))
        .expect_err("the command must time out");
        let msg = err.downcast_ref::<String>().cloned().unwrap_or_default();
        assert!(
            msg.contains("timed out") && msg.contains("stdout: started"),
            "{msg}"
        );
    }
}
