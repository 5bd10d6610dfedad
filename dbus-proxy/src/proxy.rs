//! The running proxy: a listener per socket path and, per client, a session
//! of four tasks (a reader and a writer on each side) sharing one
//! [`ClientFilter`].
//!
//! Readers cut the stream into messages, ask the filter, and hand what
//! passes to the other side's [`Outbox`]: written at once, straight from
//! the receive buffer, when that socket is idle, else copied into the queue
//! of its writer task, which drains it in order. A reader never waits on a
//! write of a whole message, so a client that stops reading cannot stall
//! the other direction; only a large message streamed through (see
//! `STREAM_MIN`) waits for its own pieces to be written, which keeps one
//! buffer per piece and the bus from outrunning the client.
//!
//! Sockets are registered for reading only: the peer draining what the
//! proxy wrote must not wake the event loop after every message.
//! Writability is watched only while a write waits.

use std::borrow::Cow;
use std::collections::VecDeque;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use porthole_dbus_wire::address::{self, AddressError, UnixTarget};
use porthole_dbus_wire::auth::{BusAuth, ClientAuth, RelayError};
use porthole_dbus_wire::{self as wire, Header};
use thiserror::Error;
use tokio::io::Interest;
use tokio::io::unix::AsyncFd;
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::Notify;
use tracing::{debug, info, warn};

use crate::cli::ProxySpec;
use crate::filter::{ClientFilter, FilterError, Verdict};
use crate::policy::Policy;
use crate::socket::{RecvBuf, recv_with_fds, send_with_fds};

/// A connected socket registered with the runtime for reading only.
/// `AsyncFd` rather than tokio's `UnixStream` so a short read can clear read
/// readiness itself, sparing the recvmsg that would only return EAGAIN on
/// every message; readable-only so that the peer draining what we wrote
/// (an EPOLLOUT edge after every message) does not wake the event loop.
/// Writes go straight to the fd; only a write that would block waits, on a
/// [`WriteWatch`].
type Sock = AsyncFd<std::os::unix::net::UnixStream>;

fn to_sock(s: UnixStream) -> io::Result<Sock> {
    // into_std keeps O_NONBLOCK set.
    let std = s.into_std()?;
    crate::busy_poll::watch(std.as_raw_fd());
    // SAFETY: the AsyncFd owns the std UnixStream, whose fd stays open and
    // unchanged until the AsyncFd drops it; as_raw_fd always returns it.
    unsafe { AsyncFd::register_with_interest(std, Interest::READABLE) }
        .map_err(|e| e.into_parts().1)
}

/// Writability of a socket, registered only while a write waits: a dup of
/// its fd in the event loop with EPOLLOUT interest, removed on drop.
struct WriteWatch(AsyncFd<OwnedFd>);

impl WriteWatch {
    fn new(fd: RawFd) -> io::Result<Self> {
        // SAFETY: fcntl(F_DUPFD_CLOEXEC) on an fd the caller keeps open for
        // the call; on success the new fd is ours alone.
        let dup = unsafe { libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, 0) };
        if dup < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `dup` was just created and is owned by nothing else.
        let owned = unsafe { OwnedFd::from_raw_fd(dup) };
        // SAFETY: as in `to_sock`, the AsyncFd owns the fd for its lifetime.
        unsafe { AsyncFd::register_with_interest(owned, Interest::WRITABLE) }
            .map(WriteWatch)
            .map_err(|e| e.into_parts().1)
    }

    /// Sends on `fd` (the watched socket) once writable.
    async fn send(&self, fd: RawFd, data: &[u8], fds: &[OwnedFd]) -> io::Result<usize> {
        self.0
            .async_io(Interest::WRITABLE, |_| send_with_fds(fd, data, fds))
            .await
    }
}

#[derive(Debug, Error)]
pub enum ProxyError {
    #[error("listening on {path}: {source}")]
    Listen { path: PathBuf, source: io::Error },
    #[error(transparent)]
    Address(#[from] AddressError),
    #[error("connecting to the bus at {address}: {source}")]
    Connect { address: String, source: io::Error },
    #[error("authentication: {0}")]
    Auth(#[from] RelayError),
    #[error("{0}")]
    Filter(#[from] FilterError),
    #[error("message has {want} fds, {have} received")]
    MissingFds { want: u32, have: usize },
    #[error("i/o: {0}")]
    Io(#[from] io::Error),
    #[error("peer closed during authentication")]
    AuthEof,
}

/// A message and the fds that travel with it.
#[derive(Debug)]
struct Out {
    data: Vec<u8>,
    /// Bytes already written (after a partial direct write).
    off: usize,
    fds: Vec<OwnedFd>,
}

impl Out {
    fn new(data: Vec<u8>, fds: Vec<OwnedFd>) -> Self {
        Out { data, off: 0, fds }
    }
}

/// The outgoing side of one socket: a queue drained by a writer task, and a
/// fast path that writes at once when nothing is queued or being written
/// (saving the hand-over to the writer on every round trip).
#[derive(Debug)]
struct Outbox {
    sock: Arc<Sock>,
    state: Mutex<OutState>,
    wake: Notify,
}

#[derive(Debug, Default)]
struct OutState {
    queue: VecDeque<Out>,
    /// The writer task holds messages it has not finished writing.
    busy: bool,
    /// A reader is writing pieces of a streamed message itself.
    streaming: bool,
    closed: bool,
}

impl Outbox {
    fn new(sock: Arc<Sock>) -> Arc<Self> {
        Arc::new(Outbox {
            sock,
            state: Mutex::new(OutState::default()),
            wake: Notify::new(),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, OutState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Writes `out` now if the socket is idle and takes it, else queues it.
    /// Order is kept: the direct write happens only with an empty queue and
    /// no write in progress, under the lock the writer also takes.
    /// A borrowed message is copied only if it has to be queued.
    fn send(&self, data: Cow<'_, [u8]>, fds: Vec<OwnedFd>) {
        let mut st = self.lock();
        if st.closed {
            return;
        }
        let mut off = 0;
        let mut fds = fds;
        if st.queue.is_empty() && !st.busy && !st.streaming {
            match send_with_fds(self.sock.as_raw_fd(), &data, &fds) {
                Ok(n) if n == data.len() => return,
                Ok(n) => {
                    off = n;
                    fds.clear();
                }
                // WouldBlock, or an error the writer will meet again.
                Err(_) => {}
            }
        }
        let out = match data {
            Cow::Owned(data) => Out { data, off, fds },
            Cow::Borrowed(b) => Out::new(b[off..].to_vec(), fds),
        };
        st.queue.push_back(out);
        drop(st);
        self.wake.notify_one();
    }

    /// Writes a piece of a message being streamed through, waiting for the
    /// socket instead of queueing a copy: the reader reads no further until
    /// the piece is out (backpressure, and no buffer per piece). Queues a
    /// copy instead when earlier messages are still waiting.
    async fn send_stream(&self, data: &[u8], watch: &mut Option<WriteWatch>) -> io::Result<()> {
        {
            let mut st = self.lock();
            if st.closed {
                return Ok(());
            }
            if !st.queue.is_empty() || st.busy || st.streaming {
                drop(st);
                self.send(Cow::Borrowed(data), Vec::new());
                return Ok(());
            }
            st.streaming = true;
        }
        let _claim = StreamClaim(self);
        write_all(&self.sock, data, &[], watch).await
    }

    /// No more messages: the writer finishes the queue and stops.
    fn close(&self) {
        self.lock().closed = true;
        self.wake.notify_one();
    }
}

/// Hands the socket back to the writer when a streamed piece is out (or
/// its reader was stopped mid-write).
struct StreamClaim<'a>(&'a Outbox);

impl Drop for StreamClaim<'_> {
    fn drop(&mut self) {
        let mut st = self.0.lock();
        st.streaming = false;
        let wake = !st.queue.is_empty() || st.closed;
        drop(st);
        if wake {
            self.0.wake.notify_one();
        }
    }
}

/// The bus socket of the first usable entry of a D-Bus address list.
pub fn parse_address(address: &str) -> Result<UnixTarget, ProxyError> {
    Ok(address::first_unix_target(address)?.1)
}

async fn connect_bus(addr: &UnixTarget, address: &str) -> Result<UnixStream, ProxyError> {
    let err = |source| ProxyError::Connect {
        address: address.to_owned(),
        source,
    };
    match addr {
        UnixTarget::Path(p) => UnixStream::connect(p).await.map_err(err),
        UnixTarget::Abstract(name) => {
            use std::os::linux::net::SocketAddrExt;
            let sa = std::os::unix::net::SocketAddr::from_abstract_name(name).map_err(err)?;
            let s = std::os::unix::net::UnixStream::connect_addr(&sa).map_err(err)?;
            s.set_nonblocking(true).map_err(err)?;
            UnixStream::from_std(s).map_err(err)
        }
    }
}

/// A bound, listening proxy socket.
#[derive(Debug)]
pub struct Listener {
    listener: UnixListener,
    spec: Arc<Spec>,
}

#[derive(Debug)]
struct Spec {
    address: String,
    bus: UnixTarget,
    path: PathBuf,
    filter: bool,
    log: bool,
    sloppy_names: bool,
    policy: Arc<Policy>,
}

static NEXT_CLIENT: AtomicU64 = AtomicU64::new(1);

impl Listener {
    /// Removes a stale socket at the path and listens there.
    pub fn bind(spec: &ProxySpec) -> Result<Listener, ProxyError> {
        let bus = parse_address(&spec.address)?;
        let _ = std::fs::remove_file(&spec.path);
        let listener = UnixListener::bind(&spec.path).map_err(|source| ProxyError::Listen {
            path: spec.path.clone(),
            source,
        })?;
        crate::busy_poll::watch(listener.as_raw_fd());
        Ok(Listener {
            listener,
            spec: Arc::new(Spec {
                address: spec.address.clone(),
                bus,
                path: spec.path.clone(),
                filter: spec.filter,
                log: spec.log,
                sloppy_names: spec.sloppy_names,
                policy: Arc::new(spec.policy.clone()),
            }),
        })
    }

    pub fn path(&self) -> &Path {
        &self.spec.path
    }

    /// Accepts clients forever, one session task each.
    pub async fn run(self) {
        loop {
            match self.listener.accept().await {
                Ok((client, _)) => {
                    let spec = Arc::clone(&self.spec);
                    tokio::spawn(async move {
                        let id = NEXT_CLIENT.fetch_add(1, Ordering::Relaxed);
                        match session(client, &spec, id).await {
                            Ok(()) => debug!(client = id, "client done"),
                            Err(ProxyError::AuthEof) => {
                                debug!(client = id, "client left during authentication")
                            }
                            Err(e) => warn!(client = id, "client closed: {e}"),
                        }
                    });
                }
                Err(e) => {
                    warn!(path = %self.spec.path.display(), "accept: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }
    }
}

async fn read_some(s: &Sock, buf: &mut Vec<u8>, limit: usize) -> io::Result<usize> {
    let mut fds = VecDeque::new();
    let n = s
        .async_io(Interest::READABLE, |s| {
            recv_with_fds(s.as_raw_fd(), buf, limit, &mut fds)
        })
        .await?;
    if !fds.is_empty() {
        return Err(io::Error::other("file descriptors during authentication"));
    }
    Ok(n)
}

/// Writes all of `data` (fds with its first byte), waiting for
/// writability only when a write would block.
/// `watch` is kept for the caller's next write (the writer drops it once
/// its queue is empty).
async fn write_all(
    s: &Sock,
    data: &[u8],
    fds: &[OwnedFd],
    watch: &mut Option<WriteWatch>,
) -> io::Result<()> {
    let fd = s.as_raw_fd();
    let mut off = 0;
    let mut fds = fds;
    while off < data.len() {
        let r = match watch {
            None => send_with_fds(fd, &data[off..], fds),
            Some(w) => w.send(fd, &data[off..], fds).await,
        };
        let n = match r {
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                if watch.is_none() {
                    *watch = Some(WriteWatch::new(fd)?);
                }
                continue;
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        if n == 0 {
            return Err(io::ErrorKind::WriteZero.into());
        }
        fds = &[];
        off += n;
    }
    Ok(())
}

/// Relays the SASL exchange; returns the bytes each side sent past it.
async fn authenticate(client: &Sock, bus: &Sock) -> Result<(Vec<u8>, Vec<u8>), ProxyError> {
    let mut ca = ClientAuth::default();
    let mut ba = BusAuth::default();
    let mut buf = Vec::with_capacity(4096);
    loop {
        buf.clear();
        if read_some(client, &mut buf, 4096).await? == 0 {
            return Err(ProxyError::AuthEof);
        }
        let relay = ca.feed(&buf)?;
        if !relay.to_bus.is_empty() {
            write_all(bus, &relay.to_bus, &[], &mut None).await?;
        }
        let mut pending = relay.replies;
        while pending > 0 {
            let (lines, n) = ba.feed(&[], pending)?;
            if n == 0 {
                buf.clear();
                if read_some(bus, &mut buf, 4096).await? == 0 {
                    return Err(ProxyError::AuthEof);
                }
                let (lines, n) = ba.feed(&buf, pending)?;
                write_all(client, &lines, &[], &mut None).await?;
                pending -= n;
            } else {
                write_all(client, &lines, &[], &mut None).await?;
                pending -= n;
            }
        }
        if relay.begin {
            return Ok((relay.rest, ba.into_rest()));
        }
    }
}

/// One client: connect to the bus, relay authentication, then proxy.
async fn session(client: UnixStream, spec: &Spec, id: u64) -> Result<(), ProxyError> {
    let bus = to_sock(connect_bus(&spec.bus, &spec.address).await?)?;
    let client = to_sock(client)?;
    // Room for a 1 MiB message in flight, so passing one on does not stall
    // on the reader's pace (the default is about 200 KiB); best effort.
    for s in [&client, &bus] {
        let _ =
            nix::sys::socket::setsockopt(s.get_ref(), nix::sys::socket::sockopt::SndBuf, &SNDBUF);
    }
    let (client_rest, bus_rest) = authenticate(&client, &bus).await?;
    info!(client = id, "authenticated");

    let client = Arc::new(client);
    let bus = Arc::new(bus);
    let filter = Arc::new(Mutex::new(
        ClientFilter::new(Arc::clone(&spec.policy), spec.filter, spec.log, id)
            .with_sloppy_names(spec.sloppy_names),
    ));
    let resume = Arc::new(Notify::new());
    let to_bus = Outbox::new(Arc::clone(&bus));
    let to_client = Outbox::new(Arc::clone(&client));

    let mut client_reader = tokio::spawn(pump(
        Arc::clone(&client),
        client_rest,
        Route {
            side: Side::Client,
            filter: Arc::clone(&filter),
            forward: Arc::clone(&to_bus),
            back: Arc::clone(&to_client),
            resume: Arc::clone(&resume),
            client: id,
        },
    ));
    let mut bus_reader = tokio::spawn(pump(
        Arc::clone(&bus),
        bus_rest,
        Route {
            side: Side::Bus,
            filter,
            forward: Arc::clone(&to_client),
            back: Arc::clone(&to_bus),
            resume,
            client: id,
        },
    ));
    let mut client_writer = tokio::spawn(writer(Arc::clone(&to_client)));
    let mut bus_writer = tokio::spawn(writer(Arc::clone(&to_bus)));

    // The first task to end decides: a reader ending (EOF or a malformed
    // message) ends both readers, after which the writers flush what is
    // queued and stop.
    let first: Result<(), ProxyError> = tokio::select! {
        r = &mut client_reader => r.unwrap_or(Ok(())),
        r = &mut bus_reader => r.unwrap_or(Ok(())),
        r = &mut client_writer => r.map_err(io::Error::other).and_then(|x| x).map_err(Into::into),
        r = &mut bus_writer => r.map_err(io::Error::other).and_then(|x| x).map_err(Into::into),
    };
    client_reader.abort();
    bus_reader.abort();
    to_client.close();
    to_bus.close();
    let flush = async {
        let _ = (&mut client_writer).await;
        let _ = (&mut bus_writer).await;
    };
    if tokio::time::timeout(Duration::from_secs(5), flush)
        .await
        .is_err()
    {
        client_writer.abort();
        bus_writer.abort();
    }
    first
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Side {
    Client,
    Bus,
}

/// Messages larger than this whose fate the header decides are passed on
/// as they arrive (cut-through) instead of being buffered whole, so the
/// proxy forwards a 1 MiB reply while the bus is still sending it.
const STREAM_MIN: usize = crate::socket::CHUNK;

/// SO_SNDBUF asked for on both sockets of a session (the kernel doubles
/// it, and caps it at net.core.wmem_max).
const SNDBUF: usize = 1024 * 1024;

/// Largest read while streaming a message through (more than a unix
/// socket's default send buffer holds).
const STREAM_CHUNK: usize = 256 * 1024;

/// Where one reader's messages go.
struct Route {
    side: Side,
    filter: Arc<Mutex<ClientFilter>>,
    /// The other socket.
    forward: Arc<Outbox>,
    /// The socket read from (for the proxy's own calls to the bus).
    back: Arc<Outbox>,
    resume: Arc<Notify>,
    /// The session's client number.
    client: u64,
}

/// What [`dispatch`] did with a message.
struct Dispatched {
    forwarded: bool,
    pause: bool,
}

/// Asks the filter about `msg` (complete, or only its header for a large
/// message being streamed) and queues the results.
fn dispatch(
    route: &Route,
    msg: Cow<'_, [u8]>,
    prefix_only: bool,
    fds: &mut VecDeque<OwnedFd>,
) -> Result<Dispatched, ProxyError> {
    let Route {
        side,
        filter,
        forward,
        back,
        resume,
        client,
    } = route;
    crate::busy_poll::note_client(*client);
    let h = if prefix_only {
        Header::parse_prefix(&msg)
    } else {
        Header::parse(&msg)
    }
    .map_err(FilterError::from)?;
    let fds = take_fds(fds, h.unix_fds)?;
    let mut f = filter.lock().unwrap_or_else(|p| p.into_inner());
    let mut done = Dispatched {
        forwarded: false,
        pause: false,
    };
    match side {
        Side::Client => {
            let d = f.from_client_parsed(&msg, &h)?;
            drop(f);
            if d.forward {
                forward.send(msg, fds);
                done.forwarded = true;
            }
            for m in d.to_bus {
                forward.send(Cow::Owned(m), Vec::new());
            }
            done.pause = d.pause_client;
        }
        Side::Bus => {
            let d = f.from_bus_parsed(&msg, &h)?;
            drop(f);
            match d.verdict {
                Verdict::Forward => {
                    forward.send(msg, fds);
                    done.forwarded = true;
                }
                Verdict::Replace(m) => forward.send(Cow::Owned(m), fds),
                Verdict::Drop => {}
            }
            for m in d.to_bus {
                back.send(Cow::Owned(m), Vec::new());
            }
            if d.resume_client {
                resume.notify_one();
            }
        }
    }
    Ok(done)
}

fn take_fds(fds: &mut VecDeque<OwnedFd>, want: u32) -> Result<Vec<OwnedFd>, ProxyError> {
    if want as usize > fds.len() {
        return Err(ProxyError::MissingFds {
            want,
            have: fds.len(),
        });
    }
    Ok(fds.drain(..want as usize).collect())
}

/// One recvmsg into `buf`'s spare capacity (at most `limit` bytes).
async fn recv(
    src: &Sock,
    buf: &mut Vec<u8>,
    limit: usize,
    fds: &mut VecDeque<OwnedFd>,
) -> io::Result<usize> {
    loop {
        let mut guard = src.readable().await?;
        let fds_before = fds.len();
        match guard.try_io(|s| recv_with_fds(s.as_raw_fd(), buf, limit, fds)) {
            Ok(Ok(n)) => {
                // A short read drained the socket: wait for the next edge
                // instead of reading again into EAGAIN. (The runtime keeps
                // readiness that arrived meanwhile.) Not so when fds came
                // along: a unix stream read stops after the first message
                // carrying fds (unix_stream_read_generic), however much
                // more is queued, and no new edge would come for that.
                if n > 0 && n < limit && fds.len() == fds_before {
                    guard.clear_ready();
                }
                return Ok(n);
            }
            Ok(Err(e)) => return Err(e),
            Err(_would_block) => continue,
        }
    }
}

/// Reads messages from `src`, filters them, and queues the results.
///
/// Cut-through invariant: while a large message streams to `forward` in
/// pieces, nothing else may queue there. That holds because each outbox has
/// one producer at a time: the bus reader alone writes to the client, and
/// the bus reader writes to the bus only when answering the proxy's own
/// ListNames, while the client reader is paused.
async fn pump(src: Arc<Sock>, initial: Vec<u8>, route: Route) -> Result<(), ProxyError> {
    let mut rb = RecvBuf::new(initial);
    let mut fds: VecDeque<OwnedFd> = VecDeque::new();
    loop {
        while let Some(msg) = rb.next_message_cow().map_err(FilterError::from)? {
            let done = dispatch(&route, msg, false, &mut fds)?;
            if done.pause {
                // Upstream stops reading the client until the names that
                // match wildcard rules are known.
                if tokio::time::timeout(Duration::from_secs(30), route.resume.notified())
                    .await
                    .is_err()
                {
                    warn!("no ListNames reply from the bus; resuming");
                }
            }
        }

        // A large message whose header is here and decides its fate goes
        // on now, and its body as it arrives.
        let front = rb.front();
        if front.len() >= 16 {
            let total = wire::message_len(&front[..16]).map_err(FilterError::from)?;
            let body_at = wire::body_offset(&front[..16]).map_err(FilterError::from)?;
            if total > STREAM_MIN && front.len() >= body_at && front.len() < total {
                let h = Header::parse_prefix(front).map_err(FilterError::from)?;
                let needs_body = route
                    .filter
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .needs_body(&h, route.side == Side::Bus);
                if !needs_body {
                    let head = rb.take_front();
                    let mut remaining = total - head.len();
                    let done = dispatch(&route, Cow::Owned(head), true, &mut fds)?;
                    // One buffer for the whole message: a chunk is copied
                    // only when the other socket cannot take it at once.
                    let mut chunk = Vec::with_capacity(remaining.min(STREAM_CHUNK));
                    let mut watch = None;
                    while remaining > 0 {
                        chunk.clear();
                        let limit = chunk.capacity().min(remaining);
                        let n = recv(&src, &mut chunk, limit, &mut fds).await?;
                        if n == 0 {
                            return Ok(());
                        }
                        remaining -= n;
                        if done.forwarded {
                            route.forward.send_stream(&chunk, &mut watch).await?;
                        }
                    }
                    continue;
                }
            }
        }

        let limit = rb.prepare().map_err(FilterError::from)?;
        let n = recv(&src, rb.vec_mut(), limit, &mut fds).await?;
        if n == 0 {
            return Ok(());
        }
    }
}

/// Writes queued messages in order; small ones are coalesced into one
/// write. Shuts the socket's write side down once closed and drained.
async fn writer(outbox: Arc<Outbox>) -> io::Result<()> {
    const COALESCE: usize = 64 * 1024;
    let dst = &outbox.sock;
    let mut batch: Vec<u8> = Vec::with_capacity(COALESCE);
    let mut watch: Option<WriteWatch> = None;
    loop {
        let items: Vec<Out> = {
            let mut st = outbox.lock();
            if st.queue.is_empty() || st.streaming {
                if st.queue.is_empty() && st.closed {
                    break;
                }
                None
            } else {
                st.busy = true;
                Some(st.queue.drain(..).collect())
            }
        }
        .unwrap_or_default();
        if items.is_empty() {
            // Idle: stop watching writability.
            watch = None;
            outbox.wake.notified().await;
            continue;
        }
        for out in items {
            let rest = &out.data[out.off..];
            if !out.fds.is_empty() || rest.len() >= COALESCE {
                if !batch.is_empty() {
                    write_all(dst, &batch, &[], &mut watch).await?;
                    batch.clear();
                }
                write_all(dst, rest, &out.fds, &mut watch).await?;
            } else {
                batch.extend_from_slice(rest);
                if batch.len() >= COALESCE {
                    write_all(dst, &batch, &[], &mut watch).await?;
                    batch.clear();
                }
            }
        }
        if !batch.is_empty() {
            write_all(dst, &batch, &[], &mut watch).await?;
            batch.clear();
        }
        outbox.lock().busy = false;
    }
    let _ =
        nix::sys::socket::shutdown(dst.get_ref().as_raw_fd(), nix::sys::socket::Shutdown::Write);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses() {
        assert_eq!(
            parse_address("unix:path=/run/user/0/bus").unwrap(),
            UnixTarget::Path("/run/user/0/bus".into())
        );
        assert_eq!(
            parse_address("tcp:host=x;unix:abstract=/tmp/dbus-a%2cb,guid=1").unwrap(),
            UnixTarget::Abstract(b"/tmp/dbus-a,b".to_vec())
        );
        assert!(parse_address("tcp:host=x").is_err());
        // A broken escape is an error, not a path with a '%' in it.
        assert!(matches!(
            parse_address("unix:path=/run/%zz"),
            Err(ProxyError::Address(AddressError::BadEscape { .. }))
        ));
    }
}
