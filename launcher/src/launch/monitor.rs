//! Host side, second stage: the monitor. Creates what the instance needs on
//! the host, clones into the namespaces, supervises, cleans up.

use super::resources::InstanceResources;
use super::sandbox::{FromMonitor, exec_parts, sandbox_init};
use super::*;

fn pipe() -> Result<(OwnedFd, OwnedFd), LaunchError> {
    nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(|e| LaunchError::Io {
        op: "pipe2",
        source: e.into(),
    })
}

/// The app's own Wayland socket, registered through wp_security_context_v1.
struct WaylandListener {
    path: PathBuf,
    _ctx: wayland::SecurityContext,
}

impl Drop for WaylandListener {
    fn drop(&mut self) {
        remove_wayland_socket(&self.path);
    }
}

/// Removes the app's Wayland socket, logging a failure through
/// [`crate::cleanup::failed`] like the instance's other clean-up steps.
/// NotFound is not a failure: the socket is gone, which is all this step
/// wants (the user, or a janitor of the runtime dir, got there first).
fn remove_wayland_socket(path: &Path) {
    match std::fs::remove_file(path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => crate::cleanup::failed(
            "remove the app's Wayland socket",
            &format_args!("{}: {e}", path.display()),
        ),
    }
}

/// When the compositor offers wp_security_context_v1, points the plan's
/// Wayland bind at a listener registered with the app's identity; otherwise
/// leaves the bind of the host socket (weston 10 and older compositors).
fn wayland_security_context(p: &mut Prepared) -> Option<WaylandListener> {
    let host = p.wayland_host.clone()?;
    let dir = p.instances_dir.parent()?.join("wayland");
    {
        use std::os::unix::fs::DirBuilderExt;
        let _ = std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&dir);
    }
    let path = dir.join(format!("{}.sock", p.instance_id));
    let listener = match std::os::unix::net::UnixListener::bind(&path) {
        Ok(l) => l,
        Err(e) => {
            tracing::warn!(error = %e, path = %path.display(), "no socket for a Wayland security context; binding the host socket");
            return None;
        }
    };
    match wayland::create_security_context(&host, &listener, p.app_id.as_str(), &p.instance_id) {
        Ok(Some(ctx)) => {
            for op in &mut p.ops {
                if let Op::Bind { src, .. } = op
                    && *src == host
                {
                    *src = path.clone();
                }
            }
            tracing::info!(socket = %path.display(), "Wayland socket through wp_security_context_v1");
            Some(WaylandListener { path, _ctx: ctx })
        }
        Ok(None) => {
            tracing::info!(
                "the compositor does not offer wp_security_context_v1; binding its socket"
            );
            remove_wayland_socket(&path);
            None
        }
        Err(e) => {
            tracing::warn!(error = %e, "Wayland security context failed; binding the host socket");
            remove_wayland_socket(&path);
            None
        }
    }
}

/// `network=ask`: asks the portal, through the instance's proxy (so as
/// the app), whether the app may use the network; yes shares the host's
/// network, anything else (no, no proxy, no portal) leaves the sandbox
/// with its own namespace and the SOCKS5 endpoint.
fn decide_network(p: &mut Prepared, proxy: Option<&bus::Proxy>) {
    let session = p.bus.as_ref().and_then(|b| b.session.as_ref());
    let answer = match (proxy, session) {
        (Some(px), Some(session)) => {
            crate::socks::request_network(px.sync_fd(), &session.socket, p.uid)
        }
        _ => Err(crate::socks::CallError::Remote {
            name: "org.freedesktop.DBus.Error.ServiceUnknown".into(),
            message: "the instance has no D-Bus proxy".into(),
        }),
    };
    let allowed = match answer {
        Ok(allowed) => allowed,
        Err(e) => {
            tracing::warn!("network=ask: no answer ({e}); the app runs without network");
            false
        }
    };
    tracing::info!(allowed, "network=ask");
    if allowed {
        p.namespaces.network = false;
        p.env.retain(|(k, _)| k != "ALL_PROXY" && k != "all_proxy");
    } else {
        let network_etc: Vec<PathBuf> = super::prepare::NETWORK_ETC
            .iter()
            .map(|n| Path::new("/etc").join(n))
            .collect();
        p.ops
            .retain(|op| !matches!(op, Op::Bind { dest, .. } if network_etc.contains(dest)));
    }
}

/// Runs a prepared launch to the end; returns the app's exit code. What
/// the launch cannot honour (a missing socket, a bus or limits it runs
/// without) goes to `warn` as it is found, before the app starts.
pub fn execute(p: Prepared, warn: Warnings<'_>) -> Result<i32, LaunchError> {
    let mut p = p;
    let _wayland_listener = wayland_security_context(&mut p);
    for m in &p.missing_sockets {
        warn(Warning::SocketMissing { name: m.name() });
    }
    trace_stage(p.trace, "execute");
    ensure_app_data(&p.home, &p.app_data, p.uid)?;
    trace_stage(p.trace, "app data ready");
    // The D-Bus proxy starts first and comes up while the sandbox is
    // assembled; the sandbox waits for its ready byte only just before
    // binding its socket, the last step of the root. Its socket lives in
    // the instance dir, which therefore exists before the proxy.
    // Everything the instance holds on the host, released on every way
    // out of here (see InstanceResources).
    let mut res = InstanceResources::default();
    if let Some(plan) = p.bus.clone() {
        let instances = instance::instances_dir(&p.runtime_dir)?;
        res.dir = Some(InstanceDir::create(&instances, &p.instance_id, &p.info)?);
        match bus::start(&plan, p.info.as_bytes()) {
            Ok(px) => {
                tracing::debug!(pid = px.pid().as_raw(), "D-Bus proxy started");
                res.proxy = Some(px);
            }
            Err(e) => {
                warn(Warning::NoBusProxy {
                    reason: e.to_string(),
                });
                p.ops.retain(|op| !matches!(op, Op::ProxySocket { .. }));
                p.env.retain(|(k, _)| {
                    k != "DBUS_SESSION_BUS_ADDRESS" && k != "DBUS_SYSTEM_BUS_ADDRESS"
                });
            }
        }
        trace_stage(p.trace, "d-bus proxy started");
    }
    if p.network_ask {
        decide_network(&mut p, res.proxy.as_ref());
        trace_stage(p.trace, "network=ask answered");
    }
    let parts = exec_parts(&p.argv, &p.env, &p.home)?;
    let (go_rd, go_wr) = pipe()?;
    let (ready_rd, ready_wr) = pipe()?;
    // The SOCKS5 listener comes out of the sandbox's network namespace on
    // this pair (see crate::socks).
    let (socks_rd, socks_wr) = if p.namespaces.network {
        let (rd, wr) = crate::socks::handover_pair().map_err(|e| LaunchError::Io {
            op: "socketpair",
            source: e,
        })?;
        (Some(rd), Some(wr))
    } else {
        (None, None)
    };
    if p.die_with_parent {
        // Like bubblewrap's --die-with-parent: when whoever started us dies,
        // we die, and our pid 1 follows through its own parent-death signal.
        // The parent recorded first thing in main: a parent that died before
        // this point left us orphaned, and getppid() now would not tell.
        let parent = init::original_parent().unwrap_or_else(nix::unistd::getppid);
        init::parent_death_signal(Signal::SIGKILL).map_err(|e| LaunchError::Io {
            op: "prctl(PR_SET_PDEATHSIG)",
            source: e.into(),
        })?;
        if nix::unistd::getppid() != parent {
            return Err(LaunchError::Io {
                op: "parent exited during start-up",
                source: std::io::ErrorKind::BrokenPipe.into(),
            });
        }
    }

    let old_mask = init::block_signals().map_err(|e| LaunchError::Io {
        op: "sigprocmask",
        source: e.into(),
    })?;
    // Where a systemd user manager runs, the instance gets a transient
    // scope from it (asked for once the sandbox's pid is known, below) and
    // we create directories only in v1 hierarchies.
    let scope_dir = Some(p.runtime_dir.as_path()).filter(|d| crate::systemd::available(d));
    // Limits that cannot be enforced are said clearly; the launch goes on.
    let created = match scope_dir {
        Some(_) => cgroup::InstanceCgroup::create_beside_scope(p.uid, &p.instance_id, &p.limits),
        None => cgroup::InstanceCgroup::create(p.uid, &p.instance_id, &p.limits)
            .map(|cg| (cg, cgroup::Limits::default())),
    };
    let (cgroup, scope_limits) = match created {
        Ok(c) => c,
        Err(e) => {
            if p.limits.is_empty() {
                tracing::info!(error = %e, "no cgroup for this instance; continuing without");
            } else {
                warn(Warning::LimitsNoCgroup(e));
            }
            (None, cgroup::Limits::default())
        }
    };
    res.cgroup = cgroup;
    // Pid 1 joins the v1 directories itself (see cgroup::join_v1). Files
    // that cannot be opened leave the instance without its cgroup, as a
    // failed move would.
    let v1_join = match res
        .cgroup
        .as_ref()
        .map(cgroup::InstanceCgroup::v1_join_files)
    {
        Some(Ok(files)) => files,
        Some(Err(e)) => {
            if p.limits.is_empty() {
                tracing::info!(error = %e, "no cgroup for this instance; continuing without");
            } else {
                warn(Warning::CgroupMoveFailed(e));
            }
            res.remove_cgroup();
            Vec::new()
        }
        None => Vec::new(),
    };
    trace_stage(p.trace, "cgroup created, cloning");
    let flags = p.namespaces.clone_flags();
    let mut born_in_cgroup = false;
    let forked = match res.cgroup.as_ref().and_then(|cg| cg.v2_fd()) {
        Some(fd) => match namespace::fork_into_cgroup(flags, fd.as_fd()) {
            Ok(f) => {
                born_in_cgroup = true;
                Ok(f)
            }
            Err(e) => {
                tracing::debug!(error = %e, "clone3(CLONE_INTO_CGROUP) failed; cloning, then moving");
                namespace::fork_into(flags)
            }
        },
        None => namespace::fork_into(flags),
    };
    // A failed clone leaves nothing behind: `res` is released on return.
    let forked = forked?;
    // The sandbox waits for "go" only when the host still has to move it
    // into a cgroup (its systemd scope, or v2 without clone3): each
    // cross-process wake-up costs scheduling latency on a busy machine.
    let child_waits = scope_dir.is_some()
        || res
            .cgroup
            .as_ref()
            .is_some_and(|c| c.needs_move(born_in_cgroup));
    let child = match forked {
        Forked::Child => {
            drop(go_wr);
            drop(ready_rd);
            drop(socks_rd);
            let bus_ready = res.proxy.as_ref().map(|px| px.sync_fd());
            sandbox_init(
                &p,
                &parts,
                FromMonitor {
                    v1_cgroups: &v1_join,
                    go: go_rd,
                    wait_go: child_waits,
                    ready: ready_wr,
                    bus_ready,
                    socks: socks_wr,
                },
                &old_mask,
            );
        }
        Forked::Parent { child } => Pid::from_raw(child),
    };
    drop(go_rd);
    drop(ready_wr);
    drop(socks_wr);
    drop(v1_join);
    // The manager creates the scope while the sandbox assembles its root.
    let unit = crate::systemd::unit_name(p.app_id.as_str(), &p.instance_id);
    let description = format!("porthole sandbox of {}", p.app_id.as_str());
    let pending_scope = scope_dir.map(|d| {
        crate::systemd::request_scope(
            d,
            &crate::systemd::ScopeRequest {
                unit: &unit,
                description: &description,
                pid: child.as_raw() as u32,
                memory_max: scope_limits.memory_max,
                tasks_max: scope_limits.pids_max,
            },
        )
    });
    // While the sandbox assembles its root (on the other core), record the
    // instance and create its cgroup; the sandbox waits for "go" before
    // anything of the app runs.
    if res.dir.is_none() {
        let created = instance::instances_dir(&p.runtime_dir)
            .and_then(|instances| InstanceDir::create(&instances, &p.instance_id, &p.info));
        match created {
            Ok(d) => res.dir = Some(d),
            Err(e) => {
                // Our unreaped child: kill cannot miss it (a zombie takes
                // the signal too). The rest goes with `res`.
                if let Err(k) = nix::sys::signal::kill(child, Signal::SIGKILL) {
                    crate::cleanup::failed("kill the sandbox", &k);
                }
                if let Err(w) = nix::sys::wait::waitpid(child, None) {
                    crate::cleanup::failed("reap the sandbox", &w);
                }
                return Err(e.into());
            }
        }
    }
    trace_stage(p.trace, "instance dir ready");
    let mut cleanup = Vec::new();
    if let Some(cg) = &res.cgroup
        && cg.needs_move(born_in_cgroup)
        && let Err(e) = cg.add(child.as_raw(), false)
    {
        // Without limits nothing is lost but the grouping: no warning.
        if p.limits.is_empty() {
            tracing::info!(error = %e, "no cgroup for this instance; continuing without");
        } else {
            warn(Warning::CgroupMoveFailed(e));
        }
        res.remove_cgroup();
    }
    let mut scope_cgroup = None;
    if let Some(pending) = pending_scope {
        match pending.and_then(crate::systemd::PendingScope::wait) {
            // Trusted only when the sandbox really is in a cgroup of that
            // name: the limits it carries are enforced nowhere else.
            Ok(()) => match cgroup::v2_dir_of(child.as_raw())
                .filter(|d| d.file_name().is_some_and(|n| n == unit.as_str()))
            {
                Some(d) => {
                    tracing::debug!(unit, "in its systemd scope");
                    scope_cgroup = Some(d);
                }
                None if scope_limits.is_empty() => {
                    tracing::info!(unit, "the systemd scope does not hold the sandbox")
                }
                None => warn(Warning::ScopeMissesSandbox { unit: unit.clone() }),
            },
            Err(e) if scope_limits.is_empty() => {
                tracing::info!(error = %e, "no systemd scope for this instance; continuing without")
            }
            Err(e) => warn(Warning::LimitsNoScope {
                reason: e.to_string(),
            }),
        }
        if scope_cgroup.is_none() && res.cgroup.is_none() {
            // No scope after all: the next place in the order of
            // crate::cgroup (a v2 directory, else the v1 ones), without the
            // limits (a warning above said they are not enforced). The
            // sandbox still waits for "go", so the host moves it in.
            res.cgroup = cgroup::InstanceCgroup::create(p.uid, &p.instance_id, &Default::default())
                .unwrap_or_else(|e| {
                    tracing::info!(error = %e, "no cgroup for this instance; continuing without");
                    None
                });
            if let Some(cg) = &res.cgroup
                && let Err(e) = cg.add(child.as_raw(), true)
            {
                tracing::info!(error = %e, "no cgroup for this instance; continuing without");
                res.remove_cgroup();
            }
        }
    }
    if child_waits {
        // The sandbox may go on: it is in its cgroups.
        // Ignored on failure (EPIPE): only a sandbox that already died
        // stops reading, and we learn that from the ready pipe next.
        let _ = nix::unistd::write(&go_wr, b"g");
    }
    trace_stage(p.trace, "cgroup ready");
    // The record appears only once the sandbox's root is in place, so that
    // whoever reads it finds /proc/PID/root/.flatpak-info.
    let mut b = [0u8; 1];
    if !matches!(nix::unistd::read(&ready_rd, &mut b), Ok(1)) {
        drop(go_wr);
        // Reaped: its cgroup is empty and goes now, with the rest of `res`.
        return Ok(init::supervise(child, Reap::MainOnly));
    }
    trace_stage(p.trace, "sandbox root ready");
    // The sandbox sent its SOCKS5 listener before reporting ready.
    if let Some(listener) = socks_rd
        .as_ref()
        .and_then(|fd| crate::socks::receive_listener(fd.as_fd()))
    {
        let link = match (&res.proxy, p.bus.as_ref().and_then(|b| b.session.as_ref())) {
            (Some(_), Some(session)) => Some(crate::socks::PortalLink {
                socket: session.socket.clone(),
                uid: p.uid,
            }),
            _ => None,
        };
        if let Err(e) = crate::socks::serve(listener, link) {
            tracing::warn!("no SOCKS5 endpoint: {e}");
        }
    }
    drop(socks_rd);
    let record = Record {
        instance: p.instance_id.clone(),
        app_id: p.app_id.to_string(),
        monitor_pid: std::process::id() as i32,
        pid: child.as_raw(),
        pid_start: instance::process_start(child.as_raw()).unwrap_or(0),
        started_unix: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0),
        command: p
            .argv
            .iter()
            .map(|a| a.to_string_lossy().into_owned())
            .collect(),
        uid: p.uid,
        env: p.env.clone(),
        home: p.home.display().to_string(),
        features: crate::permissions::feature_names(p.features)
            .into_iter()
            .map(str::to_owned)
            .collect(),
        // `enter` joins each of these: the scope's directory too, so an
        // entered command is under the same limits.
        cgroups: res
            .cgroup
            .as_ref()
            .map(|c| c.paths())
            .unwrap_or_default()
            .into_iter()
            .chain(scope_cgroup.map(|d| d.display().to_string()))
            .collect(),
    };
    if let Some(dir) = &res.dir
        && let Err(e) = dir.write_record(&record)
    {
        cleanup.push(e.to_string());
    }
    trace_stage(p.trace, "recorded");
    // Housekeeping while the app runs, off the start-up path.
    if let Some(cg) = &res.cgroup {
        cg.sweep_stale_siblings();
    }
    // Pid 1 reports the app's exit status on the ready pipe as soon as the
    // app has exited; its own exit and the namespaces' teardown then
    // happen while we clean up and report (as with bwrap).
    let ended = init::supervise_with_status(child, ready_rd.as_fd());
    let code = match ended {
        init::Ended::Reported(c) | init::Ended::Reaped(c) => c,
    };
    trace_stage(p.trace, "sandbox exited");
    // Held open until now: its hang-up tells a sandbox that starts after we
    // died (before its parent-death signal was armed) to give up.
    drop(go_wr);
    for c in cleanup {
        tracing::warn!(error = %c, "instance record");
    }
    // Pid 1 may still be exiting (Reported): the cgroup empties out only
    // after its teardown, which a janitor waits for, started last of all.
    res.finish(child, matches!(ended, init::Ended::Reaped(_)));
    trace_stage(p.trace, "cgroup removal arranged");
    Ok(code)
}
