//! Sandbox side: pid 1 of the new pid namespace, and the last steps before
//! a command runs inside (also used by `porthole enter`).

use std::os::fd::AsRawFd;

use super::*;

/// What the sandbox side needs, prepared before `clone` so the child does not
/// have to build strings it could fail on.
pub(super) struct ExecParts {
    path_candidates: Vec<CString>,
    argv: Vec<CString>,
    envp: Vec<CString>,
    home: CString,
}

fn cstring(b: &[u8]) -> Result<CString, LaunchError> {
    CString::new(b).map_err(|_| LaunchError::Io {
        op: "argument with a NUL byte",
        source: std::io::ErrorKind::InvalidInput.into(),
    })
}

pub(super) fn exec_parts(
    argv: &[OsString],
    env: &[(String, String)],
    home: &Path,
) -> Result<ExecParts, LaunchError> {
    let cmd = argv.first().ok_or(LaunchError::Io {
        op: "no command",
        source: std::io::ErrorKind::InvalidInput.into(),
    })?;
    let cmd_bytes = cmd.as_bytes();
    let path_candidates = if cmd_bytes.contains(&b'/') {
        vec![cstring(cmd_bytes)?]
    } else {
        environ::PATH
            .split(':')
            .map(|d| cstring(format!("{d}/{}", cmd.to_string_lossy()).as_bytes()))
            .collect::<Result<_, _>>()?
    };
    Ok(ExecParts {
        path_candidates,
        argv: argv
            .iter()
            .map(|a| cstring(a.as_bytes()))
            .collect::<Result<_, _>>()?,
        envp: env
            .iter()
            .map(|(k, v)| cstring(format!("{k}={v}").as_bytes()))
            .collect::<Result<_, _>>()?,
        home: cstring(home.as_os_str().as_bytes())?,
    })
}

/// What pid 1 takes from the monitor across the clone.
pub(super) struct FromMonitor<'a> {
    /// The `tasks` files of the instance's v1 cgroups, to join
    /// ([`cgroup::join_v1`]).
    pub(super) v1_cgroups: &'a [OwnedFd],
    /// "go" once the host has put us into our cgroups (scope, or v2 without
    /// clone3); its hang-up tells us the monitor died.
    pub(super) go: OwnedFd,
    /// Whether to wait for "go" (else only check the monitor is alive).
    pub(super) wait_go: bool,
    /// Ours to write: "r" once the root is ready, then the app's status.
    pub(super) ready: OwnedFd,
    /// The D-Bus proxy's ready pipe, when there is a proxy.
    pub(super) bus_ready: Option<std::os::fd::BorrowedFd<'a>>,
    /// Our end of the pair the SOCKS5 listener goes out on (own network
    /// namespace only).
    pub(super) socks: Option<OwnedFd>,
}

/// Pid 1 of the sandbox. Never returns.
pub(super) fn sandbox_init(
    p: &Prepared,
    parts: &ExecParts,
    from_monitor: FromMonitor<'_>,
    old_mask: &nix::sys::signal::SigSet,
) -> ! {
    let FromMonitor {
        v1_cgroups,
        go,
        wait_go,
        ready,
        bus_ready,
        socks,
    } = from_monitor;
    // Into the instance's v1 cgroups before anything else, so that all we
    // start is counted there. A failure with limits asked for ends the
    // launch (the app must not run outside them); without, the instance
    // runs in its caller's cgroups, as where no cgroup can be created.
    if let Err(e) = cgroup::join_v1(v1_cgroups) {
        if !p.limits.is_empty() {
            fail("join the instance's cgroups", e);
        }
        let line = format!(
            "porthole: warning: the sandbox could not join its cgroups; it stays in its caller's: {e}\n"
        );
        let _ = nix::unistd::write(std::io::stderr(), line.as_bytes());
    }
    if !v1_cgroups.is_empty() {
        trace_stage(p.trace, "v1 cgroups joined");
    }
    // First, before anything else can use them: close what the caller of
    // `porthole` left open (fds >= 3), keeping only our pipes (the D-Bus
    // proxy's sync pipe is our copy of the monitor's read end).
    let bus_raw = bus_ready.map(|fd| fd.as_raw_fd()).unwrap_or(-1);
    let socks_raw = socks.as_ref().map(|fd| fd.as_raw_fd()).unwrap_or(-1);
    if let Err(e) =
        init::close_fds_from_3_except(&[go.as_raw_fd(), ready.as_raw_fd(), bus_raw, socks_raw])
    {
        fail("close_range", e);
    }
    // Our own session and process group: terminal signals then reach the
    // app only once, through the monitor's forwarding, and pid 1 keeps no
    // controlling terminal of the host.
    if let Err(e) = nix::unistd::setsid() {
        fail("setsid", e);
    }
    if let Err(e) = init::wipe_environment() {
        fail("environment", e);
    }
    if p.die_with_parent
        && let Err(e) = init::parent_death_signal(Signal::SIGKILL)
    {
        fail("PR_SET_PDEATHSIG", e);
    }
    trace_stage(p.trace, "child started");
    if let Err(e) = namespace::map_ids_1to1(p.uid, p.gid) {
        fail("id maps", e);
    }
    trace_stage(p.trace, "id maps written");
    if let Err(e) = rootfs::assemble(&p.ops, bus_ready) {
        fail("root file system", e);
    }
    if bus_raw >= 0 {
        // Done with the proxy's ready byte; the monitor's copy alone keeps
        // the proxy alive from here on.
        // Cannot fail: a range of one descriptor (first == last).
        crate::sys::fd::close_range(bus_raw as libc::c_uint, bus_raw as libc::c_uint).ok();
    }
    if p.namespaces.network
        && let Err(e) = namespace::loopback_up()
    {
        fail("network", e);
    }
    if let Some(pair) = socks {
        // The SOCKS5 endpoint: a listener in our namespace, served from
        // outside. Without it the app has no network, which is what it
        // would have anyway: a warning, not a failed launch.
        let sent = crate::socks::listen()
            .and_then(|l| crate::socks::send_listener(pair.as_fd(), l.as_fd()));
        if let Err(e) = sent {
            let line = format!(
                "porthole: warning: no SOCKS5 endpoint on 127.0.0.1:{}: {e}\n",
                crate::socks::PORT
            );
            let _ = nix::unistd::write(std::io::stderr(), line.as_bytes());
        }
    }
    trace_stage(p.trace, "root assembled");
    let _ = nix::unistd::write(&ready, b"r");
    // Kept: the app's exit status goes to the monitor on it (below).
    // Wait until the host has moved us into our cgroups, when it has to;
    // otherwise only check that it is still there. EOF or hang-up means it
    // died, possibly before our parent-death signal was armed.
    let parent_alive = if wait_go {
        let mut b = [0u8; 1];
        matches!(nix::unistd::read(&go, &mut b), Ok(1))
    } else {
        let mut fds = [nix::poll::PollFd::new(
            go.as_fd(),
            nix::poll::PollFlags::POLLIN,
        )];
        match nix::poll::poll(&mut fds, nix::poll::PollTimeout::ZERO) {
            Ok(0) => true,
            _ => !fds[0].revents().is_some_and(|r| {
                r.intersects(nix::poll::PollFlags::POLLHUP | nix::poll::PollFlags::POLLERR)
            }),
        }
    };
    if !parent_alive {
        // SAFETY: see `fail`.
        unsafe { libc::_exit(exit_code::SETUP_FAILED) }
    }
    drop(go);
    trace_stage(p.trace, "go received");
    // The cgroup namespace comes last: its root is the cgroup we are in now,
    // which is the instance's own when the host could create one.
    if let Err(e) = namespace::unshare_cgroup() {
        fail("cgroup namespace", e);
    }
    trace_stage(p.trace, "cgroup namespace");
    // pid 1 locks itself down before the app exists, and the app inherits
    // it all (empty capability sets, no_new_privs, the filters): the app can
    // reach pid 1 (same uid: /proc/1/mem), so pid 1 must never hold more
    // than the app, not even for an instant.
    if let Err(e) = init::not_dumpable() {
        fail("PR_SET_DUMPABLE", e);
    }
    if let Err(e) = lock_down(&p.filters, Some(&p.writable)) {
        fail("privileges", e);
    }
    trace_stage(p.trace, "locked down");
    let child = match spawn::spawn(
        &parts.path_candidates,
        &parts.argv,
        &parts.envp,
        old_mask,
        &parts.home,
    ) {
        Ok(pid) => Pid::from_raw(pid),
        Err(spawn::SpawnError(errno)) => exec_failed(parts, errno),
    };
    trace_stage(p.trace, "app spawned");
    // Said once the app runs, so that a command that cannot start still
    // gets exactly one line (the bad-input contract).
    for w in &p.bus_warnings {
        let line = format!("porthole: warning: {w}\n");
        let _ = nix::unistd::write(std::io::stderr(), line.as_bytes());
    }
    {
        {
            let code = init::supervise(child, Reap::All);
            trace_stage(p.trace, "app exited");
            // The monitor learns the status now, as bwrap's does from its
            // pid 1, and need not wait for our exit and the namespaces'
            // teardown (half a millisecond and more) to report it.
            let _ = nix::unistd::write(&ready, &[code as u8]);
            // SAFETY: see `fail`.
            unsafe { libc::_exit(code) }
        }
    }
}

#[derive(Debug, thiserror::Error)]
enum LockDownError {
    #[error(transparent)]
    Capability(#[from] CapabilityError),
    #[error(transparent)]
    Seccomp(#[from] SeccompError),
    #[error(transparent)]
    Landlock(#[from] crate::landlock::LandlockError),
}

/// Capabilities, no_new_privs, Landlock (when `writable` is given), seccomp:
/// in this order, because dropping the bounding set needs CAP_SETPCAP,
/// landlock_restrict_self needs no_new_privs, and the filter denies
/// nothing we call after.
fn lock_down(filters: &Filters, writable: Option<&[PathBuf]>) -> Result<(), LockDownError> {
    capability::drop_all()?;
    capability::no_new_privs()?;
    if let Some(writable) = writable
        && !crate::landlock::restrict(writable)?
    {
        tracing::debug!("no Landlock in this kernel; the mount plan alone confines writes");
    }
    filters.load()?;
    Ok(())
}

/// `porthole enter`: the same last steps and exec for a command joining a
/// running sandbox. Never returns.
pub fn exec_joined(
    filters: &Filters,
    argv: &[OsString],
    env: &[(String, String)],
    home: &Path,
    old_mask: &nix::sys::signal::SigSet,
) -> ! {
    match exec_parts(argv, env, home) {
        Ok(parts) => exec_common(filters, &parts, old_mask),
        Err(e) => fail("command", e),
    }
}

/// `porthole enter`'s last steps and exec: new session, parent-death
/// signal, signal mask, working directory, lock-down.
fn exec_common(filters: &Filters, parts: &ExecParts, old_mask: &nix::sys::signal::SigSet) -> ! {
    if let Err(e) = nix::unistd::setsid() {
        fail("setsid", e);
    }
    // The parent is the host-side `porthole enter`.
    if let Err(e) = init::parent_death_signal(Signal::SIGKILL) {
        fail("PR_SET_PDEATHSIG", e);
    }
    if let Err(e) = init::restore_signals(old_mask) {
        fail("sigprocmask", e);
    }
    // Our process ignores SIGPIPE and an ignored signal survives exec: give
    // the command the default, as `run` does (POSIX_SPAWN_SETSIGDEF).
    // SAFETY: setting SIG_DFL installs no handler.
    unsafe { libc::signal(libc::SIGPIPE, libc::SIG_DFL) };
    // SAFETY: `home` is a valid NUL-terminated string.
    if unsafe { libc::chdir(parts.home.as_ptr()) } != 0 {
        // SAFETY: "/" is a valid NUL-terminated string.
        unsafe { libc::chdir(c"/".as_ptr()) };
    }
    if let Err(e) = lock_down(filters, None) {
        fail("privileges", e);
    }
    // `porthole enter` is a host process: the caller's descriptors (without
    // O_CLOEXEC) must not follow the command into the sandbox.
    if let Err(e) = crate::sys::fd::close_range(3, libc::c_uint::MAX) {
        fail("close_range", e);
    }
    let mut argv: Vec<*const libc::c_char> = parts.argv.iter().map(|a| a.as_ptr()).collect();
    argv.push(std::ptr::null());
    let mut envp: Vec<*const libc::c_char> = parts.envp.iter().map(|a| a.as_ptr()).collect();
    envp.push(std::ptr::null());
    let mut last = libc::ENOENT;
    for path in &parts.path_candidates {
        // SAFETY: path, argv and envp are NUL-terminated strings in
        // null-terminated arrays, all alive until execve returns (it only
        // returns on failure).
        unsafe { libc::execve(path.as_ptr(), argv.as_ptr(), envp.as_ptr()) };
        let e = std::io::Error::last_os_error()
            .raw_os_error()
            .unwrap_or(libc::ENOENT);
        if e != libc::ENOENT {
            last = e;
        }
    }
    exec_failed(parts, last)
}

/// One line on stderr and the shell's exit code for a command that could
/// not be executed (127 not found, 126 otherwise).
fn exec_failed(parts: &ExecParts, errno: i32) -> ! {
    let name = parts
        .argv
        .first()
        .map(|a| a.to_string_lossy().into_owned())
        .unwrap_or_default();
    let (msg, code) = if errno == libc::ENOENT {
        (
            "command not found".to_string(),
            exit_code::COMMAND_NOT_FOUND,
        )
    } else {
        (
            std::io::Error::from_raw_os_error(errno).to_string(),
            exit_code::COMMAND_NOT_EXECUTABLE,
        )
    };
    eprintln!("porthole: {name}: {msg}");
    // SAFETY: see `fail`.
    unsafe { libc::_exit(code) }
}
