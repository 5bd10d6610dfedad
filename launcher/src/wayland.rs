//! The app's Wayland socket through `wp_security_context_v1` when the
//! compositor offers it: a listening socket of our own, registered with the
//! compositor together with the sandbox engine, app id and instance id, so the
//! compositor knows every client on it is that sandboxed app and can refuse it
//! privileged protocols. Without the global (weston 10, Debian 12), the
//! caller falls back to binding the host socket.
//!
//! The protocol is spoken through wayland-client's pure-Rust backend (no
//! libwayland, so the static build stays static) and the generated
//! `wp_security_context_v1` bindings of wayland-protocols. Its blocking
//! helpers (`roundtrip`, `blocking_dispatch`) wait on the compositor without
//! a bound, so the waits here are our own, against one deadline.

use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;
use std::time::{Duration, Instant};

use wayland_client::backend::WaylandError as Backend;
use wayland_client::protocol::{wl_callback, wl_registry};
use wayland_client::{Connection, Dispatch, DispatchError, EventQueue, QueueHandle};
use wayland_protocols::wp::security_context::v1::client::{
    wp_security_context_manager_v1::WpSecurityContextManagerV1,
    wp_security_context_v1::WpSecurityContextV1,
};

/// Sandbox engine name given to the compositor.
pub const ENGINE: &str = "org.porthole";
const MANAGER: &str = "wp_security_context_manager_v1";
/// How long the whole exchange with the compositor may take. A compositor
/// that does not answer must not hold up the app's start: past this, the
/// caller falls back to binding the host socket.
const DEADLINE: Duration = Duration::from_secs(2);

/// Errors talking to the compositor.
#[derive(Debug, thiserror::Error)]
pub enum WaylandError {
    #[error("wayland {op}: {source}")]
    Io {
        op: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("wayland compositor error on object {object} ({interface}), code {code}: {message}")]
    Protocol {
        object: u32,
        interface: String,
        code: u32,
        message: String,
    },
    #[error("malformed wayland message from the compositor")]
    Malformed,
    #[error("the wayland compositor did not answer within {0:?}")]
    Timeout(Duration),
}

fn io(op: &'static str) -> impl FnOnce(std::io::Error) -> WaylandError {
    move |source| WaylandError::Io { op, source }
}

fn backend(op: &'static str) -> impl FnOnce(Backend) -> WaylandError {
    move |e| match e {
        Backend::Io(source) => WaylandError::Io { op, source },
        Backend::Protocol(p) => WaylandError::Protocol {
            object: p.object_id,
            interface: p.object_interface,
            code: p.code,
            message: p.message,
        },
    }
}

fn dispatch(e: DispatchError) -> WaylandError {
    match e {
        DispatchError::BadMessage { .. } => WaylandError::Malformed,
        DispatchError::Backend(e) => backend("read")(e),
    }
}

/// What the compositor has told us so far.
#[derive(Default)]
struct Handshake {
    /// The registry's globals: name, interface, version.
    globals: Vec<(u32, String, u32)>,
    /// The last `wl_display.sync` was answered.
    synced: bool,
}

impl Dispatch<wl_registry::WlRegistry, ()> for Handshake {
    fn event(
        state: &mut Self,
        _: &wl_registry::WlRegistry,
        event: wl_registry::Event,
        _: &(),
        _: &Connection,
        _: &QueueHandle<Self>,
    ) {
        if let wl_registry::Event::Global {
            name,
            interface,
            version,
        } = event
        {
            state.globals.push((name, interface, version));
        }
    }
}

impl Dispatch<wl_callback::WlCallback, ()> for Handshake {
    fn event(
        state: &mut Self,
        _: &wl_callback::WlCallback,
        event: wl_callback::Event,
        _: &(),
        _: &Connection,
        _: &QueueHandle<Self>,
    ) {
        if let wl_callback::Event::Done { .. } = event {
            state.synced = true;
        }
    }
}

// Neither interface has events.
wayland_client::delegate_noop!(Handshake: ignore WpSecurityContextManagerV1);
wayland_client::delegate_noop!(Handshake: ignore WpSecurityContextV1);

/// A connection to the compositor with its one event queue.
struct Conn {
    conn: Connection,
    queue: EventQueue<Handshake>,
    state: Handshake,
    deadline: Instant,
}

impl Conn {
    fn connect(display: &Path) -> Result<Self, WaylandError> {
        let stream = UnixStream::connect(display).map_err(io("connect"))?;
        let conn = Connection::from_socket(stream).map_err(|e| WaylandError::Io {
            op: "connect",
            source: std::io::Error::other(e),
        })?;
        let queue = conn.new_event_queue();
        Ok(Conn {
            conn,
            queue,
            state: Handshake::default(),
            deadline: Instant::now() + DEADLINE,
        })
    }

    fn handle(&self) -> QueueHandle<Handshake> {
        self.queue.handle()
    }

    /// Waits until `fd` is ready for `events` or the deadline passes.
    fn wait(&self, fd: impl AsFd, events: nix::poll::PollFlags) -> Result<(), WaylandError> {
        use nix::poll::{PollFd, PollTimeout, poll};
        loop {
            let left = self.deadline.saturating_duration_since(Instant::now());
            let timeout = PollTimeout::try_from(left).unwrap_or(PollTimeout::MAX);
            let mut fds = [PollFd::new(fd.as_fd(), events)];
            match poll(&mut fds, timeout) {
                Ok(0) => return Err(WaylandError::Timeout(DEADLINE)),
                Ok(_) => return Ok(()),
                Err(nix::errno::Errno::EINTR) => continue,
                Err(e) => return Err(io("poll")(e.into())),
            }
        }
    }

    /// Sends what is queued; a full socket buffer waits, within the deadline.
    fn flush(&self) -> Result<(), WaylandError> {
        loop {
            match self.conn.flush() {
                Err(Backend::Io(e)) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    let backend = self.conn.backend();
                    self.wait(backend.poll_fd(), nix::poll::PollFlags::POLLOUT)?;
                }
                r => return r.map_err(backend("write")),
            }
        }
    }

    /// `wl_display.sync`, then reads and dispatches events until its
    /// callback is done: the compositor has handled every request before it,
    /// and any error it raised on them has arrived.
    fn roundtrip(&mut self) -> Result<(), WaylandError> {
        self.state.synced = false;
        self.conn.display().sync(&self.handle(), ());
        loop {
            self.queue
                .dispatch_pending(&mut self.state)
                .map_err(dispatch)?;
            if self.state.synced {
                return Ok(());
            }
            self.flush()?;
            let Some(guard) = self.queue.prepare_read() else {
                continue; // events arrived meanwhile: dispatch them first
            };
            self.wait(guard.connection_fd(), nix::poll::PollFlags::POLLIN)?;
            match guard.read() {
                Ok(_) => {}
                Err(Backend::Io(e)) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                Err(e) => return Err(backend("read")(e)),
            }
        }
    }

    /// The registry, after one roundtrip has brought all its globals.
    fn registry(&mut self) -> Result<wl_registry::WlRegistry, WaylandError> {
        let registry = self.conn.display().get_registry(&self.handle(), ());
        self.roundtrip()?;
        Ok(registry)
    }

    fn manager(&self) -> Option<u32> {
        self.state
            .globals
            .iter()
            .find(|(_, interface, _)| interface == MANAGER)
            .map(|(name, _, _)| *name)
    }
}

/// A registered security context: the socket to bind into the sandbox, and
/// the fd whose closing tells the compositor to stop listening.
#[derive(Debug)]
pub struct SecurityContext {
    pub close_fd: OwnedFd,
}

/// Whether the compositor at `display` offers the security-context global.
pub fn offers_security_context(display: &Path) -> Result<bool, WaylandError> {
    let mut c = Conn::connect(display)?;
    c.registry()?;
    Ok(c.manager().is_some())
}

/// Registers `listener` with the compositor at `display` as a security
/// context for this app instance. `Ok(None)`: the compositor lacks the
/// protocol (the caller binds the host socket instead).
pub fn create_security_context(
    display: &Path,
    listener: &UnixListener,
    app_id: &str,
    instance_id: &str,
) -> Result<Option<SecurityContext>, WaylandError> {
    let close_fd = register(display, listener.as_fd(), app_id, instance_id)?;
    Ok(close_fd.map(|close_fd| SecurityContext { close_fd }))
}

/// The exchange behind [`create_security_context`], for any fd as the
/// listener; returns our end of close_fd.
fn register(
    display: &Path,
    listen_fd: BorrowedFd<'_>,
    app_id: &str,
    instance_id: &str,
) -> Result<Option<OwnedFd>, WaylandError> {
    let mut c = Conn::connect(display)?;
    let registry = c.registry()?;
    let Some(name) = c.manager() else {
        return Ok(None);
    };
    let qh = c.handle();
    let manager: WpSecurityContextManagerV1 = registry.bind(name, 1, &qh, ());
    let (close_rd, close_wr) =
        nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(|e| WaylandError::Io {
            op: "pipe2",
            source: e.into(),
        })?;
    // The request keeps its own duplicates of both fds until they are sent.
    let context = manager.create_listener(listen_fd, close_rd.as_fd(), &qh, ());
    drop(close_rd);
    context.set_sandbox_engine(ENGINE.to_owned());
    context.set_app_id(app_id.to_owned());
    context.set_instance_id(instance_id.to_owned());
    context.commit();
    // Destroying the objects does not end the context: the listener lives
    // until close_fd's other end closes.
    context.destroy();
    manager.destroy();
    c.roundtrip()?;
    Ok(Some(close_wr))
}

#[cfg(test)]
mod tests {
    use super::*;
    use porthole_test_compositor::{Compositor, Event};

    fn compositor(dir: &Path, offer: bool) -> (Compositor, std::path::PathBuf) {
        let display = dir.join("wayland-test");
        let c = Compositor::start(&display, offer).expect("start the test compositor");
        (c, display)
    }

    #[test]
    fn registers_listener_with_app_identity() {
        let dir = tempfile::tempdir().unwrap();
        let (compositor, display) = compositor(dir.path(), true);
        assert!(offers_security_context(&display).unwrap());
        let ours = UnixListener::bind(dir.path().join("app.sock")).unwrap();
        let ctx = create_security_context(&display, &ours, "org.example.App", "42")
            .unwrap()
            .expect("a security context");
        let committed = compositor
            .wait_for(
                Duration::from_secs(5),
                |e| matches!(e, Event::Committed(m) if m.instance_id.as_deref() == Some("42")),
            )
            .expect("the compositor saw the commit");
        let Event::Committed(m) = committed else {
            unreachable!()
        };
        assert_eq!(m.engine.as_deref(), Some(ENGINE));
        assert_eq!(m.app_id.as_deref(), Some("org.example.App"));
        // A client through our listener is that app.
        let _client = UnixStream::connect(dir.path().join("app.sock")).unwrap();
        let seen = compositor
            .wait_for(Duration::from_secs(5), |e| matches!(e, Event::Connected(_)))
            .expect("the compositor accepted a client on our listener");
        assert_eq!(seen, Event::Connected(m.clone()));
        // Closing close_fd ends the context.
        drop(ctx);
        assert!(
            compositor
                .wait_for(Duration::from_secs(5), |e| matches!(e, Event::Closed(_)))
                .is_some(),
            "the compositor noticed close_fd closing"
        );
    }

    #[test]
    fn reports_absence_for_fallback() {
        let dir = tempfile::tempdir().unwrap();
        let (compositor, display) = compositor(dir.path(), false);
        assert!(!offers_security_context(&display).unwrap());
        let ours = UnixListener::bind(dir.path().join("app.sock")).unwrap();
        assert!(
            create_security_context(&display, &ours, "org.example.App", "1")
                .unwrap()
                .is_none()
        );
        assert!(
            compositor.events().is_empty(),
            "nothing registered with a compositor that lacks the global"
        );
    }

    /// A compositor that accepts and never answers costs the launch the
    /// deadline, not a hang.
    #[test]
    fn silent_compositor_times_out() {
        let dir = tempfile::tempdir().unwrap();
        let display = dir.path().join("wayland-silent");
        let server = UnixListener::bind(&display).unwrap();
        let ours = UnixListener::bind(dir.path().join("app.sock")).unwrap();
        let start = Instant::now();
        let r = create_security_context(&display, &ours, "org.example.App", "1");
        assert!(matches!(r, Err(WaylandError::Timeout(_))), "{r:?}");
        let took = start.elapsed();
        assert!(took >= DEADLINE && took < DEADLINE * 3, "{took:?}");
        drop(server);
    }

    /// A compositor error reaches the caller with its object and message.
    #[test]
    fn compositor_error_is_reported() {
        let dir = tempfile::tempdir().unwrap();
        let (_compositor, display) = compositor(dir.path(), true);
        // A socket that is not listening: the protocol's invalid_listen_fd.
        let path = dir.path().join("not-listening.sock");
        let bound = std::os::unix::net::UnixDatagram::bind(&path).unwrap();
        let r = register(&display, bound.as_fd(), "org.example.App", "1");
        match r {
            Err(WaylandError::Protocol {
                interface, code, ..
            }) => {
                assert_eq!(interface, MANAGER);
                assert_eq!(code, 1, "invalid_listen_fd");
            }
            other => panic!("{other:?}"),
        }
    }
}
