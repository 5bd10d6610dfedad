//! The sandbox's SOCKS5 endpoint (DESIGN.md, "Network grants").
//!
//! A sandbox without `--share=network` has its own network namespace with
//! only `lo`. Pid 1 creates a TCP listener on `127.0.0.1:1080` there
//! ([`listen`]) and hands it to the monitor over a socket pair
//! ([`send_listener`], [`receive_listener`]); a listening socket keeps the
//! namespace it was made in, so the monitor, outside, accepts the app's
//! connections without any process of ours inside. The app finds it
//! through `ALL_PROXY`/`all_proxy` (`socks5h://127.0.0.1:1080`).
//!
//! For each CONNECT (RFC 1928; no authentication; names, IPv4 and IPv6
//! literals; names resolved outside, as socks5h wants) the monitor calls
//! `org.porthole.NetworkAccess1.Connect` THROUGH the instance's D-Bus proxy
//! ([`PortalConn`]), so the portal identifies the call as the app's and
//! asks the user as it would for the app itself. The connected socket it
//! returns is joined to the app's with `splice(2)` through a pipe in each
//! direction: the bytes never pass through user space.
//!
//! Other commands get reply 0x07, other address types 0x08; a refusal
//! 0x02, an unreachable or unresolvable host 0x04, a refused connection
//! 0x05, anything else 0x01. Without a proxy or a portal the endpoint
//! still exists and answers 0x02 (with a log line); the launch never fails
//! for it.

use std::collections::VecDeque;
use std::io::{self, Read, Write};
use std::net::{Ipv4Addr, Ipv6Addr, TcpListener, TcpStream};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use porthole_dbus_wire::auth;
use porthole_dbus_wire::{Builder, Encoder, Header, METHOD_CALL, METHOD_RETURN};

/// The endpoint's port on the sandbox's `lo` (the customary SOCKS port;
/// every sandbox has a namespace of its own, so no two collide).
pub const PORT: u16 = 1080;

/// What `ALL_PROXY` and `all_proxy` hold inside.
pub fn proxy_url() -> String {
    format!("socks5h://127.0.0.1:{PORT}")
}

/// The portal's names.
pub const PORTAL_NAME: &str = "org.freedesktop.portal.Desktop";
pub const PORTAL_PATH: &str = "/org/freedesktop/portal/desktop";
pub const INTERFACE: &str = "org.porthole.NetworkAccess1";

/// SOCKS5 reply codes (RFC 1928, section 6).
pub mod reply {
    pub const SUCCEEDED: u8 = 0x00;
    pub const GENERAL_FAILURE: u8 = 0x01;
    pub const NOT_ALLOWED: u8 = 0x02;
    pub const HOST_UNREACHABLE: u8 = 0x04;
    pub const CONNECTION_REFUSED: u8 = 0x05;
    pub const COMMAND_NOT_SUPPORTED: u8 = 0x07;
    pub const ADDRESS_TYPE_NOT_SUPPORTED: u8 = 0x08;
}

/// How long a client may take over its greeting and request.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(30);
/// How long the proxy may take over authentication and Hello.
const BUS_SETUP_TIMEOUT: Duration = Duration::from_secs(10);
/// Bytes moved per splice call (and the pipe's size when the kernel agrees).
const CHUNK: usize = 1024 * 1024;
/// The largest message we accept from the bus (replies here are small).
const MAX_MESSAGE: usize = 1 << 20;

/// Sandbox side: the listener on `127.0.0.1:PORT` in the current (the
/// sandbox's) network namespace.
pub fn listen() -> io::Result<OwnedFd> {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, PORT))?;
    Ok(OwnedFd::from(listener))
}

/// The pair the listener travels over: (monitor's end, sandbox's end).
pub fn handover_pair() -> io::Result<(OwnedFd, OwnedFd)> {
    let (a, b) = nix::sys::socket::socketpair(
        nix::sys::socket::AddressFamily::Unix,
        nix::sys::socket::SockType::Datagram,
        None,
        nix::sys::socket::SockFlag::SOCK_CLOEXEC,
    )?;
    Ok((a, b))
}

/// Sandbox side: sends `listener` to the monitor.
pub fn send_listener(pair: BorrowedFd<'_>, listener: BorrowedFd<'_>) -> io::Result<()> {
    let fds = [listener.as_raw_fd()];
    let cmsg = [nix::sys::socket::ControlMessage::ScmRights(&fds)];
    let iov = [io::IoSlice::new(b"L")];
    nix::sys::socket::sendmsg::<()>(
        pair.as_raw_fd(),
        &iov,
        &cmsg,
        nix::sys::socket::MsgFlags::empty(),
        None,
    )?;
    Ok(())
}

/// Monitor side: the listener, if the sandbox sent one (never blocks: the
/// sandbox sends it before it reports its root ready).
pub fn receive_listener(pair: BorrowedFd<'_>) -> Option<OwnedFd> {
    let mut fds = VecDeque::new();
    let mut byte = [0u8; 1];
    match recv_with_fds(pair, &mut byte, &mut fds, true) {
        Ok(1) => fds.pop_front(),
        _ => None,
    }
}

/// `recvmsg(2)` taking the descriptors that come along (close-on-exec).
fn recv_with_fds(
    sock: BorrowedFd<'_>,
    buf: &mut [u8],
    fds: &mut VecDeque<OwnedFd>,
    dontwait: bool,
) -> io::Result<usize> {
    use nix::sys::socket::{ControlMessageOwned, MsgFlags, recvmsg};
    let mut iov = [io::IoSliceMut::new(buf)];
    let mut space = nix::cmsg_space!([RawFd; 16]);
    let mut flags = MsgFlags::MSG_CMSG_CLOEXEC;
    if dontwait {
        flags |= MsgFlags::MSG_DONTWAIT;
    }
    let msg = loop {
        match recvmsg::<()>(sock.as_raw_fd(), &mut iov, Some(&mut space), flags) {
            Err(nix::Error::EINTR) => continue,
            other => break other?,
        }
    };
    for c in msg.cmsgs()? {
        if let ControlMessageOwned::ScmRights(raw) = c {
            for fd in raw {
                // SAFETY: the kernel has just installed `fd` in our table
                // for this message; nothing else owns it.
                fds.push_back(unsafe { OwnedFd::from_raw_fd(fd) });
            }
        }
    }
    Ok(msg.bytes)
}

/// A CONNECT request as the client wrote it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    /// A name, or an IPv4/IPv6 literal in its text form.
    pub host: String,
    pub port: u16,
}

/// Why a handshake ended without a request: the reply to send (if the
/// protocol has one for it) and a reason for the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub reply: Option<Refused>,
    pub reason: String,
}

/// What to send for a refused handshake.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// `05 FF`: no acceptable authentication method.
    NoMethod,
    /// A request reply with this code.
    Reply(u8),
}

fn refusal(reply: Option<Refused>, reason: impl Into<String>) -> Refusal {
    Refusal {
        reply,
        reason: reason.into(),
    }
}

fn read_exact(r: &mut impl Read, buf: &mut [u8]) -> Result<(), Refusal> {
    r.read_exact(buf)
        .map_err(|e| refusal(None, format!("reading the handshake: {e}")))
}

/// The greeting and the request (RFC 1928, sections 3 and 4), answering
/// the greeting on `w`. Reads exactly what the protocol says, never more.
pub fn handshake(r: &mut impl Read, w: &mut impl Write) -> Result<Request, Refusal> {
    let mut head = [0u8; 2];
    read_exact(r, &mut head)?;
    if head[0] != 5 {
        return Err(refusal(None, format!("not SOCKS5 (version {})", head[0])));
    }
    let mut methods = vec![0u8; usize::from(head[1])];
    read_exact(r, &mut methods)?;
    if !methods.contains(&0) {
        return Err(refusal(
            Some(Refused::NoMethod),
            "the client offers no method without authentication",
        ));
    }
    w.write_all(&[5, 0])
        .map_err(|e| refusal(None, format!("answering the greeting: {e}")))?;
    let mut req = [0u8; 4];
    read_exact(r, &mut req)?;
    if req[0] != 5 {
        return Err(refusal(
            Some(Refused::Reply(reply::GENERAL_FAILURE)),
            format!("request of version {}", req[0]),
        ));
    }
    if req[1] != 1 {
        return Err(refusal(
            Some(Refused::Reply(reply::COMMAND_NOT_SUPPORTED)),
            format!("command {} (only CONNECT is served)", req[1]),
        ));
    }
    let host = match req[3] {
        1 => {
            let mut a = [0u8; 4];
            read_exact(r, &mut a)?;
            Ipv4Addr::from(a).to_string()
        }
        3 => {
            let mut len = [0u8; 1];
            read_exact(r, &mut len)?;
            let mut name = vec![0u8; usize::from(len[0])];
            read_exact(r, &mut name)?;
            String::from_utf8(name).map_err(|_| {
                refusal(
                    Some(Refused::Reply(reply::GENERAL_FAILURE)),
                    "a host name that is not UTF-8",
                )
            })?
        }
        4 => {
            let mut a = [0u8; 16];
            read_exact(r, &mut a)?;
            Ipv6Addr::from(a).to_string()
        }
        other => {
            return Err(refusal(
                Some(Refused::Reply(reply::ADDRESS_TYPE_NOT_SUPPORTED)),
                format!("address type {other}"),
            ));
        }
    };
    let mut port = [0u8; 2];
    read_exact(r, &mut port)?;
    Ok(Request {
        host,
        port: u16::from_be_bytes(port),
    })
}

/// A reply with `code` and an all-zero bound address (the host side's
/// address is none of the app's business).
pub fn reply_bytes(code: u8) -> [u8; 10] {
    [5, code, 0, 1, 0, 0, 0, 0, 0, 0]
}

/// An error of a call to the portal.
#[derive(Debug, thiserror::Error)]
pub enum CallError {
    #[error("{op}: {source}")]
    Io {
        op: &'static str,
        #[source]
        source: io::Error,
    },
    #[error("authenticating to the bus: {0}")]
    Auth(#[from] auth::AuthError),
    #[error("the bus does not pass file descriptors")]
    NoFdPassing,
    #[error("malformed reply from the bus")]
    Malformed,
    #[error("{name}: {message}")]
    Remote { name: String, message: String },
}

impl CallError {
    /// The SOCKS5 reply for this failure.
    pub fn reply_code(&self) -> u8 {
        match self {
            CallError::Remote { name, message } => match name.as_str() {
                "org.freedesktop.portal.Error.NotAllowed" => reply::NOT_ALLOWED,
                "org.freedesktop.portal.Error.Failed" => {
                    if message.starts_with("refused:") {
                        reply::CONNECTION_REFUSED
                    } else if ["resolve:", "unreachable:", "timeout:"]
                        .iter()
                        .any(|p| message.starts_with(p))
                    {
                        reply::HOST_UNREACHABLE
                    } else {
                        reply::GENERAL_FAILURE
                    }
                }
                // No portal on the bus (or the proxy's filter hides it):
                // nobody can approve, so nothing is allowed.
                "org.freedesktop.DBus.Error.ServiceUnknown"
                | "org.freedesktop.DBus.Error.NameHasNoOwner"
                | "org.freedesktop.DBus.Error.UnknownMethod"
                | "org.freedesktop.DBus.Error.UnknownInterface"
                | "org.freedesktop.DBus.Error.UnknownObject"
                | "org.freedesktop.DBus.Error.AccessDenied" => reply::NOT_ALLOWED,
                _ => reply::GENERAL_FAILURE,
            },
            _ => reply::NOT_ALLOWED,
        }
    }
}

fn io_err(op: &'static str) -> impl FnOnce(io::Error) -> CallError {
    move |source| CallError::Io { op, source }
}

/// One connection to the bus (through the instance's proxy) with fd
/// passing, synchronous: the launcher has no async runtime.
pub struct PortalConn {
    sock: UnixStream,
    buf: Vec<u8>,
    fds: VecDeque<OwnedFd>,
    serial: u32,
}

impl PortalConn {
    /// Connects, authenticates as `uid` (EXTERNAL, with fd passing) and
    /// says Hello.
    pub fn open(socket: &std::path::Path, uid: u32) -> Result<Self, CallError> {
        let sock = UnixStream::connect(socket).map_err(io_err("connect to the bus"))?;
        sock.set_read_timeout(Some(BUS_SETUP_TIMEOUT))
            .map_err(io_err("SO_RCVTIMEO"))?;
        let authenticated = auth::external(&mut &sock, &mut &sock, uid, true)?;
        if !authenticated.unix_fd {
            return Err(CallError::NoFdPassing);
        }
        let hello = Builder {
            msg_type: METHOD_CALL,
            serial: 1,
            path: Some("/org/freedesktop/DBus"),
            interface: Some("org.freedesktop.DBus"),
            member: Some("Hello"),
            destination: Some("org.freedesktop.DBus"),
            ..Default::default()
        }
        .build();
        let mut first = auth::BEGIN.to_vec();
        first.extend_from_slice(&hello);
        (&sock)
            .write_all(&first)
            .map_err(io_err("write to the bus"))?;
        let mut conn = PortalConn {
            sock,
            buf: Vec::new(),
            fds: VecDeque::new(),
            serial: 1,
        };
        let (msg, _) = conn.reply_to(1)?;
        let h = Header::parse(&msg).map_err(|_| CallError::Malformed)?;
        if h.msg_type != METHOD_RETURN {
            return Err(CallError::Remote {
                name: h.error_name.unwrap_or_default().to_owned(),
                message: h.arg0_str(&msg).unwrap_or_default().to_owned(),
            });
        }
        // A dialog may take as long as the user takes.
        conn.sock
            .set_read_timeout(None)
            .map_err(io_err("SO_RCVTIMEO"))?;
        Ok(conn)
    }

    /// `NetworkAccess1.Connect(host, port, {})`: the connected socket.
    pub fn connect(&mut self, host: &str, port: u16) -> Result<OwnedFd, CallError> {
        self.serial = self.serial.wrapping_add(1).max(2);
        let serial = self.serial;
        (&self.sock)
            .write_all(&connect_call(serial, host, port))
            .map_err(io_err("write to the bus"))?;
        let (msg, fds) = self.reply_to(serial)?;
        connect_reply(&msg, fds)
    }

    /// The method return or error answering `serial`, with its fds;
    /// other messages (signals such as NameAcquired) are dropped.
    fn reply_to(&mut self, serial: u32) -> Result<(Vec<u8>, Vec<OwnedFd>), CallError> {
        loop {
            let (msg, fds) = self.next_message()?;
            if reply_serial(&msg) == Some(serial) {
                return Ok((msg, fds));
            }
        }
    }

    /// The next whole message and the descriptors that came with it.
    fn next_message(&mut self) -> Result<(Vec<u8>, Vec<OwnedFd>), CallError> {
        loop {
            if self.buf.len() >= 16 {
                let total =
                    porthole_dbus_wire::message_len(&self.buf).map_err(|_| CallError::Malformed)?;
                if total > MAX_MESSAGE {
                    return Err(CallError::Malformed);
                }
                if self.buf.len() >= total {
                    let msg: Vec<u8> = self.buf.drain(..total).collect();
                    let h = Header::parse(&msg).map_err(|_| CallError::Malformed)?;
                    let n = (h.unix_fds as usize).min(self.fds.len());
                    let fds: Vec<OwnedFd> = self.fds.drain(..n).collect();
                    return Ok((msg, fds));
                }
            }
            let mut chunk = [0u8; 4096];
            let n = recv_with_fds(self.sock.as_fd(), &mut chunk, &mut self.fds, false).map_err(
                |e| CallError::Io {
                    op: "read from the bus",
                    source: if e.kind() == io::ErrorKind::WouldBlock {
                        io::ErrorKind::TimedOut.into()
                    } else {
                        e
                    },
                },
            )?;
            if n == 0 {
                return Err(CallError::Io {
                    op: "read from the bus",
                    source: io::ErrorKind::UnexpectedEof.into(),
                });
            }
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }
}

/// `NetworkAccess1.RequestNetwork({})` through the instance's proxy, once
/// the proxy is ready (`sync`: its ready pipe, polled without taking the
/// byte the sandbox waits for).
pub fn request_network(
    sync: BorrowedFd<'_>,
    socket: &std::path::Path,
    uid: u32,
) -> Result<bool, CallError> {
    let mut fds = [nix::poll::PollFd::new(sync, nix::poll::PollFlags::POLLIN)];
    let timeout = nix::poll::PollTimeout::try_from(BUS_SETUP_TIMEOUT.as_millis() as i32)
        .unwrap_or(nix::poll::PollTimeout::NONE);
    match nix::poll::poll(&mut fds, timeout) {
        Ok(1)
            if fds[0]
                .revents()
                .is_some_and(|r| r.contains(nix::poll::PollFlags::POLLIN)) => {}
        _ => {
            return Err(CallError::Io {
                op: "wait for the D-Bus proxy",
                source: io::ErrorKind::TimedOut.into(),
            });
        }
    }
    let mut conn = PortalConn::open(socket, uid)?;
    conn.serial += 1;
    let serial = conn.serial;
    let mut body = Encoder::new();
    body.array(8, |_| {});
    let call = Builder {
        msg_type: METHOD_CALL,
        serial,
        path: Some(PORTAL_PATH),
        interface: Some(INTERFACE),
        member: Some("RequestNetwork"),
        destination: Some(PORTAL_NAME),
        ..Default::default()
    }
    .build_with_body("a{sv}", body.bytes());
    (&conn.sock)
        .write_all(&call)
        .map_err(io_err("write to the bus"))?;
    let (msg, _) = conn.reply_to(serial)?;
    let h = Header::parse(&msg).map_err(|_| CallError::Malformed)?;
    if h.msg_type != METHOD_RETURN {
        return Err(CallError::Remote {
            name: h.error_name.unwrap_or_default().to_owned(),
            message: h.arg0_str(&msg).unwrap_or_default().to_owned(),
        });
    }
    if h.signature != "b" {
        return Err(CallError::Malformed);
    }
    h.body_reader(&msg).bool().map_err(|_| CallError::Malformed)
}

/// The serial a method return or error answers (None for other messages).
fn reply_serial(msg: &[u8]) -> Option<u32> {
    let h = Header::parse(msg).ok()?;
    matches!(h.msg_type, METHOD_RETURN | porthole_dbus_wire::ERROR)
        .then_some(h.reply_serial)
        .flatten()
}

/// The `Connect(s host, q port, a{sv} {})` call with `serial`.
fn connect_call(serial: u32, host: &str, port: u16) -> Vec<u8> {
    let mut body = Encoder::new();
    body.string(host);
    body.u16(port);
    body.array(8, |_| {});
    Builder {
        msg_type: METHOD_CALL,
        serial,
        path: Some(PORTAL_PATH),
        interface: Some(INTERFACE),
        member: Some("Connect"),
        destination: Some(PORTAL_NAME),
        ..Default::default()
    }
    .build_with_body("sqa{sv}", body.bytes())
}

/// The socket in Connect's reply, or the error it carries.
fn connect_reply(msg: &[u8], mut fds: Vec<OwnedFd>) -> Result<OwnedFd, CallError> {
    let h = Header::parse(msg).map_err(|_| CallError::Malformed)?;
    if h.msg_type != METHOD_RETURN {
        return Err(CallError::Remote {
            name: h.error_name.unwrap_or_default().to_owned(),
            message: h.arg0_str(msg).unwrap_or_default().to_owned(),
        });
    }
    if h.signature != "h" {
        return Err(CallError::Malformed);
    }
    let index = h.body_reader(msg).u32().map_err(|_| CallError::Malformed)? as usize;
    if index >= fds.len() {
        return Err(CallError::Malformed);
    }
    Ok(fds.swap_remove(index))
}

type Answer = Result<(Vec<u8>, Vec<OwnedFd>), CallError>;

/// One bus connection shared by every request of the instance: calls go
/// out under a lock, a reader thread hands each reply to its caller. One
/// connection means one identification of the caller by the portal, however
/// many requests run at once, and no dialog blocks another request.
struct SharedBus {
    writer: Mutex<(UnixStream, u32)>,
    /// Callers waiting, by serial; None once the connection has failed.
    waiting: Mutex<Option<std::collections::HashMap<u32, std::sync::mpsc::SyncSender<Answer>>>>,
}

impl SharedBus {
    fn open(link: &PortalLink) -> Result<Arc<SharedBus>, CallError> {
        let mut conn = PortalConn::open(&link.socket, link.uid)?;
        let writer = conn
            .sock
            .try_clone()
            .map_err(io_err("dup the bus socket"))?;
        let bus = Arc::new(SharedBus {
            writer: Mutex::new((writer, conn.serial)),
            waiting: Mutex::new(Some(Default::default())),
        });
        let reader = bus.clone();
        std::thread::Builder::new()
            .name("socks5-bus".into())
            .stack_size(128 * 1024)
            .spawn(move || {
                loop {
                    match conn.next_message() {
                        Ok((msg, fds)) => {
                            let Some(serial) = reply_serial(&msg) else {
                                continue;
                            };
                            let tx = reader
                                .waiting
                                .lock()
                                .ok()
                                .and_then(|mut w| w.as_mut().and_then(|w| w.remove(&serial)));
                            if let Some(tx) = tx {
                                let _ = tx.send(Ok((msg, fds)));
                            }
                        }
                        Err(e) => {
                            tracing::debug!("SOCKS5: the bus connection ended: {e}");
                            let waiting = reader.waiting.lock().ok().and_then(|mut w| w.take());
                            for (_, tx) in waiting.unwrap_or_default() {
                                let _ = tx.send(Err(CallError::Io {
                                    op: "read from the bus",
                                    source: io::ErrorKind::ConnectionAborted.into(),
                                }));
                            }
                            return;
                        }
                    }
                }
            })
            .map_err(io_err("spawn the bus reader"))?;
        Ok(bus)
    }

    fn alive(&self) -> bool {
        self.waiting.lock().map(|w| w.is_some()).unwrap_or(false)
    }

    fn connect(&self, host: &str, port: u16) -> Result<OwnedFd, CallError> {
        let dead = || CallError::Io {
            op: "call over the bus",
            source: io::ErrorKind::ConnectionAborted.into(),
        };
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        {
            let mut writer = self.writer.lock().map_err(|_| dead())?;
            writer.1 = writer.1.wrapping_add(1).max(2);
            let serial = writer.1;
            self.waiting
                .lock()
                .map_err(|_| dead())?
                .as_mut()
                .ok_or_else(dead)?
                .insert(serial, tx);
            if let Err(e) = (&writer.0).write_all(&connect_call(serial, host, port)) {
                if let Ok(mut w) = self.waiting.lock()
                    && let Some(w) = w.as_mut()
                {
                    w.remove(&serial);
                }
                return Err(CallError::Io {
                    op: "write to the bus",
                    source: e,
                });
            }
        }
        let (msg, fds) = rx.recv().map_err(|_| dead())??;
        connect_reply(&msg, fds)
    }
}

/// Where the endpoint asks: the instance's proxy socket, as the app's uid.
#[derive(Debug, Clone)]
pub struct PortalLink {
    pub socket: PathBuf,
    pub uid: u32,
}

/// The serving side, shared by the connections' threads.
struct Endpoint {
    link: Option<PortalLink>,
    bus: Mutex<Option<Arc<SharedBus>>>,
}

impl Endpoint {
    fn connect(&self, req: &Request) -> Result<OwnedFd, CallError> {
        let Some(link) = &self.link else {
            return Err(CallError::Remote {
                name: "org.freedesktop.DBus.Error.ServiceUnknown".into(),
                message: "the instance has no D-Bus proxy".into(),
            });
        };
        let bus = {
            let mut held = self.bus.lock().map_err(|_| CallError::Malformed)?;
            match held.as_ref().filter(|b| b.alive()) {
                Some(b) => b.clone(),
                None => {
                    let b = SharedBus::open(link)?;
                    *held = Some(b.clone());
                    b
                }
            }
        };
        bus.connect(&req.host, req.port)
    }
}

/// Monitor side: serves `listener` on a thread of its own until the
/// process ends. Each client gets a thread for its handshake and the call
/// to the portal, then one more for the second direction of the splice.
pub fn serve(listener: OwnedFd, link: Option<PortalLink>) -> io::Result<()> {
    if link.is_none() {
        tracing::info!("the app has no D-Bus proxy: its SOCKS5 endpoint refuses every destination");
    }
    let listener = TcpListener::from(listener);
    let endpoint = Arc::new(Endpoint {
        link,
        bus: Mutex::new(None),
    });
    std::thread::Builder::new()
        .name("socks5".into())
        .stack_size(128 * 1024)
        .spawn(move || accept_loop(listener, endpoint))?;
    Ok(())
}

/// Connections served at once (two threads each). Beyond it the accept
/// loop waits for one to end, and new clients wait in the listen backlog:
/// an app that opens connections without end slows itself down, and cannot
/// make the monitor (outside the sandbox) run out of threads or memory.
pub const MAX_SESSIONS: usize = 256;

/// Counts the sessions running; [`Slots::take`] blocks at the limit.
struct Slots {
    used: Mutex<usize>,
    freed: std::sync::Condvar,
    max: usize,
}

/// One session's slot, given back when its thread ends (or never starts).
struct Slot(Arc<Slots>);

impl Slots {
    fn take(self: &Arc<Self>) -> Slot {
        let mut used = self.used.lock().unwrap_or_else(|p| p.into_inner());
        let mut warned = false;
        while *used >= self.max {
            if !warned {
                tracing::warn!(
                    "SOCKS5: {} connections at once; new ones wait for one to end",
                    self.max
                );
                warned = true;
            }
            used = self.freed.wait(used).unwrap_or_else(|p| p.into_inner());
        }
        *used += 1;
        Slot(self.clone())
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        *self.0.used.lock().unwrap_or_else(|p| p.into_inner()) -= 1;
        self.0.freed.notify_one();
    }
}

fn accept_loop(listener: TcpListener, endpoint: Arc<Endpoint>) {
    let slots = Arc::new(Slots {
        used: Mutex::new(0),
        freed: std::sync::Condvar::new(),
        max: MAX_SESSIONS,
    });
    loop {
        let slot = slots.take();
        match listener.accept() {
            Ok((client, _)) => {
                let endpoint = endpoint.clone();
                let spawned = std::thread::Builder::new()
                    .name("socks5-client".into())
                    .stack_size(256 * 1024)
                    .spawn(move || {
                        let _slot = slot;
                        client_session(client, &endpoint)
                    });
                if let Err(e) = spawned {
                    tracing::warn!("SOCKS5: no thread for a client: {e}");
                }
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => {
                // EMFILE and friends: wait a moment rather than spin.
                tracing::warn!("SOCKS5: accept: {e}");
                std::thread::sleep(Duration::from_millis(100));
            }
        }
    }
}

fn client_session(mut client: TcpStream, endpoint: &Endpoint) {
    let _ = client.set_read_timeout(Some(HANDSHAKE_TIMEOUT));
    let _ = client.set_nodelay(true);
    let req = match handshake(&mut &client, &mut &client) {
        Ok(req) => req,
        Err(refused) => {
            tracing::debug!(reason = %refused.reason, "SOCKS5: handshake refused");
            let bytes: &[u8] = match refused.reply {
                Some(Refused::NoMethod) => &[5, 0xff],
                Some(Refused::Reply(code)) => &reply_bytes(code),
                None => &[],
            };
            let _ = client.write_all(bytes);
            return;
        }
    };
    // The second direction's thread starts while the portal is asked, so
    // that its creation is off the path of the first bytes.
    let (to_relay, relay_rx) = std::sync::mpsc::sync_channel::<(Arc<OwnedFd>, Arc<OwnedFd>)>(1);
    let back = std::thread::Builder::new()
        .name("socks5-relay".into())
        .stack_size(64 * 1024)
        .spawn(move || {
            // Nothing arrives when the request fails: the thread just ends.
            if let Ok((remote, client)) = relay_rx.recv() {
                pump(remote.as_fd(), client.as_fd());
            }
        });
    let back = match back {
        Ok(b) => b,
        Err(e) => {
            tracing::warn!("SOCKS5: no thread for a relay: {e}");
            let _ = client.write_all(&reply_bytes(reply::GENERAL_FAILURE));
            return;
        }
    };
    let remote = match endpoint.connect(&req) {
        Ok(fd) => fd,
        Err(e) => {
            let code = e.reply_code();
            match &e {
                CallError::Remote { name, .. }
                    if code == reply::NOT_ALLOWED
                        && name != "org.freedesktop.portal.Error.NotAllowed" =>
                {
                    tracing::warn!(
                        host = %req.host, port = req.port,
                        "SOCKS5: no portal approves network access ({e}); refused"
                    );
                }
                _ => tracing::debug!(host = %req.host, port = req.port, "SOCKS5: {e}"),
            }
            let _ = client.write_all(&reply_bytes(code));
            return;
        }
    };
    if client.write_all(&reply_bytes(reply::SUCCEEDED)).is_err() {
        return;
    }
    let _ = client.set_read_timeout(None);
    // Joined until both directions have ended: this thread takes the app's
    // bytes to the destination, the other the answers back.
    let client = Arc::new(OwnedFd::from(client));
    let remote = Arc::new(remote);
    if to_relay.send((remote.clone(), client.clone())).is_ok() {
        pump(client.as_fd(), remote.as_fd());
    }
    let _ = back.join();
}

/// `splice(2)` wrapped: moves up to `len` bytes from `from` to `to`, one of
/// which is a pipe.
fn splice(from: BorrowedFd<'_>, to: BorrowedFd<'_>, len: usize) -> io::Result<usize> {
    loop {
        // SAFETY: both descriptors are open for the call's duration (the
        // borrows); null offsets mean "the file's own position", which is
        // what sockets and pipes require.
        let n = unsafe {
            libc::splice(
                from.as_raw_fd(),
                std::ptr::null_mut(),
                to.as_raw_fd(),
                std::ptr::null_mut(),
                len,
                libc::SPLICE_F_MOVE,
            )
        };
        if n >= 0 {
            return Ok(n as usize);
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}

fn shutdown(fd: BorrowedFd<'_>, how: nix::sys::socket::Shutdown) {
    let _ = nix::sys::socket::shutdown(fd.as_raw_fd(), how);
}

/// One direction: `from` to `to` through a pipe, until end of file (then
/// the write side of `to` is shut, so the peer sees it) or an error (then
/// both sockets are shut, which ends the other direction too).
fn pump(from: BorrowedFd<'_>, to: BorrowedFd<'_>) {
    use nix::sys::socket::Shutdown;
    let (rd, wr) = match nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC) {
        Ok(p) => p,
        Err(e) => {
            tracing::warn!("SOCKS5: pipe2: {e}");
            shutdown(from, Shutdown::Both);
            shutdown(to, Shutdown::Both);
            return;
        }
    };
    // A bigger pipe, fewer calls; the default (64 KiB) when refused.
    let _ = nix::fcntl::fcntl(&wr, nix::fcntl::FcntlArg::F_SETPIPE_SZ(CHUNK as i32));
    loop {
        let n = match splice(from, wr.as_fd(), CHUNK) {
            Ok(0) => {
                shutdown(to, Shutdown::Write);
                return;
            }
            Ok(n) => n,
            Err(_) => break,
        };
        let mut left = n;
        while left > 0 {
            match splice(rd.as_fd(), to, left) {
                Ok(0) | Err(_) => {
                    shutdown(from, Shutdown::Both);
                    shutdown(to, Shutdown::Both);
                    return;
                }
                Ok(m) => left -= m,
            }
        }
    }
    shutdown(from, Shutdown::Both);
    shutdown(to, Shutdown::Both);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(bytes: &[u8]) -> (Result<Request, Refusal>, Vec<u8>) {
        let mut out = Vec::new();
        let r = handshake(&mut &bytes[..], &mut out);
        (r, out)
    }

    #[test]
    fn sessions_beyond_the_limit_wait_for_one_to_end() {
        let slots = Arc::new(Slots {
            used: Mutex::new(0),
            freed: std::sync::Condvar::new(),
            max: 2,
        });
        let a = slots.take();
        let _b = slots.take();
        let (tx, rx) = std::sync::mpsc::channel();
        let waiting = {
            let slots = slots.clone();
            std::thread::spawn(move || {
                let c = slots.take();
                tx.send(()).unwrap();
                drop(c);
            })
        };
        // The third waits while two are held...
        assert!(rx.recv_timeout(Duration::from_millis(200)).is_err());
        // ...and goes on once one ends.
        drop(a);
        rx.recv_timeout(Duration::from_secs(5))
            .expect("the waiting session got the freed slot");
        waiting.join().unwrap();
        assert_eq!(*slots.used.lock().unwrap(), 1);
    }

    #[test]
    fn connect_requests_of_each_address_type_parse() {
        let (r, out) = parse(&[
            5, 1, 0, 5, 1, 0, 3, 11, b'e', b'x', b'a', b'm', b'p', b'l', b'e', b'.', b'o', b'r',
            b'g', 1, 187,
        ]);
        assert_eq!(out, [5, 0]);
        assert_eq!(
            r.unwrap(),
            Request {
                host: "example.org".into(),
                port: 443
            }
        );
        let (r, _) = parse(&[5, 2, 2, 0, 5, 1, 0, 1, 127, 0, 0, 1, 0, 80]);
        assert_eq!(r.unwrap().host, "127.0.0.1");
        let mut v6 = vec![5, 1, 0, 5, 1, 0, 4];
        v6.extend_from_slice(&Ipv6Addr::LOCALHOST.octets());
        v6.extend_from_slice(&[0x1f, 0x90]);
        let r = parse(&v6).0.unwrap();
        assert_eq!((r.host.as_str(), r.port), ("::1", 8080));
    }

    #[test]
    fn malformed_greetings_and_requests_are_refused_with_the_protocols_codes() {
        // Not SOCKS5: closed without a word.
        assert_eq!(parse(&[4, 1, 0, 80]).0.unwrap_err().reply, None);
        // Only username/password offered.
        assert_eq!(
            parse(&[5, 1, 2]).0.unwrap_err().reply,
            Some(Refused::NoMethod)
        );
        assert_eq!(parse(&[5, 0]).0.unwrap_err().reply, Some(Refused::NoMethod));
        // Truncated anywhere: closed.
        for cut in 0..14 {
            let full = [5, 1, 0, 5, 1, 0, 1, 127, 0, 0, 1, 0, 80];
            if cut < full.len() {
                assert_eq!(parse(&full[..cut]).0.unwrap_err().reply, None, "{cut}");
            }
        }
        // BIND and UDP ASSOCIATE: 0x07.
        for cmd in [2, 3, 9] {
            assert_eq!(
                parse(&[5, 1, 0, 5, cmd, 0, 1, 1, 2, 3, 4, 0, 80])
                    .0
                    .unwrap_err()
                    .reply,
                Some(Refused::Reply(reply::COMMAND_NOT_SUPPORTED))
            );
        }
        // Unknown address type: 0x08.
        assert_eq!(
            parse(&[5, 1, 0, 5, 1, 0, 7, 0, 0]).0.unwrap_err().reply,
            Some(Refused::Reply(reply::ADDRESS_TYPE_NOT_SUPPORTED))
        );
        // Request of another version: 0x01.
        assert_eq!(
            parse(&[5, 1, 0, 4, 1, 0, 1, 1, 2, 3, 4, 0, 80])
                .0
                .unwrap_err()
                .reply,
            Some(Refused::Reply(reply::GENERAL_FAILURE))
        );
        // A name that is not UTF-8: 0x01.
        assert_eq!(
            parse(&[5, 1, 0, 5, 1, 0, 3, 2, 0xff, 0xfe, 0, 80])
                .0
                .unwrap_err()
                .reply,
            Some(Refused::Reply(reply::GENERAL_FAILURE))
        );
    }

    #[test]
    fn portal_errors_map_to_socks_replies() {
        let remote = |name: &str, message: &str| CallError::Remote {
            name: name.into(),
            message: message.into(),
        };
        let p = "org.freedesktop.portal.Error.";
        assert_eq!(remote(&format!("{p}NotAllowed"), "").reply_code(), 2);
        assert_eq!(
            remote(&format!("{p}Failed"), "refused: a:1: x").reply_code(),
            5
        );
        assert_eq!(
            remote(&format!("{p}Failed"), "resolve: a: x").reply_code(),
            4
        );
        assert_eq!(
            remote(&format!("{p}Failed"), "timeout: a:1").reply_code(),
            4
        );
        assert_eq!(remote(&format!("{p}InvalidArgument"), "").reply_code(), 1);
        assert_eq!(
            remote("org.freedesktop.DBus.Error.ServiceUnknown", "").reply_code(),
            2
        );
    }
}
