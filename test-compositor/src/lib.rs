//! A small Wayland compositor for tests, built on wayland-server: it offers
//! `wp_security_context_manager_v1` (no compositor in Debian 12 does), so
//! the launcher's positive path can run against a real server-side
//! implementation of the protocol rather than a script of expected bytes.
//!
//! It implements what a sandbox engine uses: `create_listener`,
//! `set_sandbox_engine`, `set_app_id`, `set_instance_id` and `commit`, with
//! the protocol's errors (`invalid_listen_fd`, `already_set`,
//! `already_used`). After a commit it accepts clients on the registered
//! listening socket until the engine closes its end of `close_fd`, and
//! records each step as an [`Event`] that a test can wait for. Clients that
//! arrive through a registered listener do not see the manager global (the
//! protocol asks compositors to forbid nesting). It offers no other global:
//! a client's registry roundtrip is all the tests need.

use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use wayland_protocols::wp::security_context::v1::server::{
    wp_security_context_manager_v1::{self, WpSecurityContextManagerV1},
    wp_security_context_v1::{self, WpSecurityContextV1},
};
use wayland_server::backend::{ClientData, ClientId, DisconnectReason};
use wayland_server::{
    Client, DataInit, Dispatch, Display, DisplayHandle, GlobalDispatch, New, Resource,
};

/// The metadata a sandbox engine attached to a security context.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Metadata {
    pub engine: Option<String>,
    pub app_id: Option<String>,
    pub instance_id: Option<String>,
}

/// What the compositor saw, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A security context was committed: from now on its listener is served.
    Committed(Metadata),
    /// A client connected through the listener of the context with this
    /// metadata.
    Connected(Metadata),
    /// The engine closed `close_fd`: the context's listener is dropped.
    Closed(Metadata),
    /// A client of a security context disconnected.
    Disconnected(Metadata),
}

#[derive(Default)]
struct Log {
    events: Mutex<Vec<Event>>,
    changed: Condvar,
}

impl Log {
    fn push(&self, e: Event) {
        self.events.lock().unwrap().push(e);
        self.changed.notify_all();
    }
}

/// A running test compositor; stopped, and its socket removed, on drop.
pub struct Compositor {
    socket: PathBuf,
    log: Arc<Log>,
    stop: Option<OwnedFd>,
    thread: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for Compositor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Compositor")
            .field("socket", &self.socket)
            .finish_non_exhaustive()
    }
}

impl Compositor {
    /// Listens on `socket` (a path, like `$XDG_RUNTIME_DIR/wayland-N`) and
    /// serves clients on a thread of its own. `security_context`: whether
    /// the manager global is offered.
    pub fn start(socket: &Path, security_context: bool) -> std::io::Result<Compositor> {
        let _ = std::fs::remove_file(socket);
        let listener = UnixListener::bind(socket)?;
        listener.set_nonblocking(true)?;
        let display = Display::<State>::new().map_err(std::io::Error::other)?;
        if security_context {
            display
                .handle()
                .create_global::<State, WpSecurityContextManagerV1, ()>(1, ());
        }
        let (stop_rd, stop_wr) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)?;
        let log = Arc::new(Log::default());
        let state = State {
            log: log.clone(),
            contexts: Vec::new(),
        };
        let thread = std::thread::Builder::new()
            .name("test-compositor".into())
            .spawn(move || serve(display, listener, stop_rd, state))?;
        Ok(Compositor {
            socket: socket.to_owned(),
            log,
            stop: Some(stop_wr),
            thread: Some(thread),
        })
    }

    /// Everything seen so far.
    pub fn events(&self) -> Vec<Event> {
        self.log.events.lock().unwrap().clone()
    }

    /// The events after the first `seen`, waiting up to `timeout` for at
    /// least one.
    pub fn events_after(&self, seen: usize, timeout: Duration) -> Vec<Event> {
        let events = self.log.events.lock().unwrap();
        let events = self
            .log
            .changed
            .wait_timeout_while(events, timeout, |e| e.len() <= seen)
            .unwrap()
            .0;
        events.get(seen..).unwrap_or_default().to_vec()
    }

    /// The first event matching `pred`, waiting for it up to `timeout`.
    pub fn wait_for(&self, timeout: Duration, pred: impl Fn(&Event) -> bool) -> Option<Event> {
        let end = Instant::now() + timeout;
        let mut events = self.log.events.lock().unwrap();
        loop {
            if let Some(e) = events.iter().find(|e| pred(e)) {
                return Some(e.clone());
            }
            let left = end.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return None;
            }
            events = self.log.changed.wait_timeout(events, left).unwrap().0;
        }
    }
}

impl Drop for Compositor {
    fn drop(&mut self) {
        // The serving thread sees the pipe's write end close.
        drop(self.stop.take());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        let _ = std::fs::remove_file(&self.socket);
    }
}

/// A committed context whose listener is being served.
struct Context {
    listener: UnixListener,
    close_fd: OwnedFd,
    metadata: Metadata,
}

struct State {
    log: Arc<Log>,
    contexts: Vec<Context>,
}

/// Per-client data: the security context the client came through, if any.
struct ClientState {
    context: Option<Metadata>,
    log: Arc<Log>,
}

impl ClientData for ClientState {
    fn disconnected(&self, _: ClientId, _: DisconnectReason) {
        if let Some(m) = &self.context {
            self.log.push(Event::Disconnected(m.clone()));
        }
    }
}

fn serve(mut display: Display<State>, listener: UnixListener, stop: OwnedFd, mut state: State) {
    let mut dh = display.handle();
    loop {
        // Readiness of: stop, the public socket, the clients, then per
        // context its close_fd and its listener.
        let ready: Vec<bool> = {
            let mut fds = vec![
                PollFd::new(stop.as_fd(), PollFlags::POLLIN),
                PollFd::new(listener.as_fd(), PollFlags::POLLIN),
                PollFd::new(display.as_fd(), PollFlags::POLLIN),
            ];
            for c in &state.contexts {
                fds.push(PollFd::new(c.close_fd.as_fd(), PollFlags::POLLIN));
                fds.push(PollFd::new(c.listener.as_fd(), PollFlags::POLLIN));
            }
            match poll(&mut fds, PollTimeout::NONE) {
                Ok(_) => {}
                Err(nix::errno::Errno::EINTR) => continue,
                Err(e) => panic!("test compositor: poll: {e}"),
            }
            fds.iter()
                .map(|f| f.revents().is_some_and(|r| !r.is_empty()))
                .collect()
        };
        if ready[0] {
            return;
        }
        if ready[1] {
            while let Ok((stream, _)) = listener.accept() {
                insert(&mut dh, stream, None, &state.log);
            }
        }
        // Contexts whose close_fd closed go first, in reverse so the
        // indices stay valid.
        let n = state.contexts.len();
        for i in (0..n).rev() {
            if ready[3 + 2 * i] {
                let c = state.contexts.remove(i);
                state.log.push(Event::Closed(c.metadata));
            } else if ready[3 + 2 * i + 1] {
                let c = &state.contexts[i];
                while let Ok((stream, _)) = c.listener.accept() {
                    state.log.push(Event::Connected(c.metadata.clone()));
                    insert(&mut dh, stream, Some(c.metadata.clone()), &state.log);
                }
            }
        }
        let _ = display.dispatch_clients(&mut state);
        let _ = display.flush_clients();
    }
}

fn insert(dh: &mut DisplayHandle, stream: UnixStream, context: Option<Metadata>, log: &Arc<Log>) {
    let data = Arc::new(ClientState {
        context,
        log: log.clone(),
    });
    if let Err(e) = dh.insert_client(stream, data) {
        panic!("test compositor: insert client: {e}");
    }
}

impl GlobalDispatch<WpSecurityContextManagerV1, ()> for State {
    fn bind(
        _: &mut Self,
        _: &DisplayHandle,
        _: &Client,
        resource: New<WpSecurityContextManagerV1>,
        _: &(),
        data_init: &mut DataInit<'_, Self>,
    ) {
        data_init.init(resource, ());
    }

    /// Not for clients that already are in a security context: no nesting.
    fn can_view(client: Client, _: &()) -> bool {
        client
            .get_data::<ClientState>()
            .is_none_or(|c| c.context.is_none())
    }
}

/// A context between create_listener and commit.
#[derive(Default)]
struct Pending {
    fds: Option<(UnixListener, OwnedFd)>,
    metadata: Metadata,
    committed: bool,
}

impl Dispatch<WpSecurityContextManagerV1, ()> for State {
    fn request(
        _: &mut Self,
        _: &Client,
        manager: &WpSecurityContextManagerV1,
        request: wp_security_context_manager_v1::Request,
        _: &(),
        _: &DisplayHandle,
        data_init: &mut DataInit<'_, Self>,
    ) {
        if let wp_security_context_manager_v1::Request::CreateListener {
            id,
            listen_fd,
            close_fd,
        } = request
        {
            let listening =
                nix::sys::socket::getsockopt(&listen_fd, nix::sys::socket::sockopt::AcceptConn)
                    .unwrap_or(false);
            let mut pending = Pending::default();
            if listening {
                let listener = UnixListener::from(listen_fd);
                if listener.set_nonblocking(true).is_ok() {
                    pending.fds = Some((listener, close_fd));
                }
            }
            let failed = pending.fds.is_none();
            data_init.init(id, Mutex::new(pending));
            if failed {
                manager.post_error(
                    wp_security_context_manager_v1::Error::InvalidListenFd,
                    "listen_fd is not a listening socket",
                );
            }
        }
    }
}

impl Dispatch<WpSecurityContextV1, Mutex<Pending>> for State {
    fn request(
        state: &mut Self,
        _: &Client,
        context: &WpSecurityContextV1,
        request: wp_security_context_v1::Request,
        data: &Mutex<Pending>,
        _: &DisplayHandle,
        _: &mut DataInit<'_, Self>,
    ) {
        use wp_security_context_v1::{Error, Request};
        let mut p = data.lock().unwrap();
        if matches!(request, Request::Destroy) {
            return;
        }
        if p.committed {
            context.post_error(Error::AlreadyUsed, "the context was committed");
            return;
        }
        let (slot, value, what) = match request {
            Request::SetSandboxEngine { name } => (&mut p.metadata.engine, name, "engine"),
            Request::SetAppId { app_id } => (&mut p.metadata.app_id, app_id, "app id"),
            Request::SetInstanceId { instance_id } => {
                (&mut p.metadata.instance_id, instance_id, "instance id")
            }
            Request::Commit => {
                p.committed = true;
                if let Some((listener, close_fd)) = p.fds.take() {
                    let metadata = p.metadata.clone();
                    state.log.push(Event::Committed(metadata.clone()));
                    state.contexts.push(Context {
                        listener,
                        close_fd,
                        metadata,
                    });
                }
                return;
            }
            _ => return,
        };
        if slot.is_some() {
            context.post_error(Error::AlreadySet, format!("{what} already set"));
            return;
        }
        *slot = Some(value);
    }
}
