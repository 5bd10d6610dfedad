//! A transient systemd scope per instance, where a systemd user manager runs.
//!
//! On a desktop the user's processes live in cgroups that their systemd
//! user manager owns; a directory we created inside one of them would break
//! systemd's rule of one writer per cgroup. Flatpak therefore asks the
//! manager for a transient scope (`app-flatpak-APPID-PID.scope`) holding
//! the sandbox, and so do we (`app-porthole-APPID-INSTANCE.scope`), with
//! `MemoryMax=`/`TasksMax=` when limits were asked for and the unified
//! hierarchy offers those controllers.
//!
//! We speak to the manager on its private socket,
//! `$XDG_RUNTIME_DIR/systemd/private`: peer-to-peer D-Bus that needs no
//! bus daemon, no `Hello`, and that systemd keeps for exactly this kind of
//! client (systemctl uses it too). One method call and its reply do not
//! justify an async D-Bus stack in the launcher: the message is built and
//! read with the workspace's small framing crate, porthole-dbus-wire.

use std::io::{BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use porthole_dbus_wire::auth::{self, AuthError};
use porthole_dbus_wire::{Builder, Encoder, Header, METHOD_CALL, METHOD_RETURN, SIGNAL};

use crate::io_error::PathIoError;

/// How long the manager may take to answer and to run the job: past this
/// the launch goes on without a scope (the manager is wedged).
const TIMEOUT: Duration = Duration::from_secs(5);

/// Errors while asking systemd for a scope.
#[derive(Debug, thiserror::Error)]
pub enum SystemdError {
    #[error(transparent)]
    Io(#[from] PathIoError),
    #[error("the systemd user manager refused authentication: {0}")]
    Auth(String),
    #[error("the systemd user manager answered with a malformed message")]
    Malformed,
    #[error("systemd refused the scope {unit}: {name}: {message}")]
    Refused {
        unit: String,
        name: String,
        message: String,
    },
    #[error("the job starting {unit} ended with result {result:?}")]
    JobFailed { unit: String, result: String },
    #[error("no answer from the systemd user manager within {0:?}")]
    Timeout(Duration),
}

/// The manager's private socket under the caller's runtime directory.
pub fn private_socket(runtime_dir: &Path) -> PathBuf {
    runtime_dir.join("systemd/private")
}

/// True when a user manager listens for us: its private socket exists.
pub fn available(runtime_dir: &Path) -> bool {
    use std::os::unix::fs::FileTypeExt;
    std::fs::metadata(private_socket(runtime_dir)).is_ok_and(|m| m.file_type().is_socket())
}

/// The scope's unit name: systemd allows `[A-Za-z0-9:_.\-]`, which covers
/// every valid app id and our instance ids.
pub fn unit_name(app_id: &str, instance_id: &str) -> String {
    format!("app-porthole-{app_id}-{instance_id}.scope")
}

/// What to put in the scope.
#[derive(Debug, Clone)]
pub struct ScopeRequest<'a> {
    pub unit: &'a str,
    pub description: &'a str,
    pub pid: u32,
    pub memory_max: Option<u64>,
    pub tasks_max: Option<u64>,
}

/// Asks the user manager at `runtime_dir` for the transient scope and waits
/// until its start job has finished, so that `req.pid` is in the scope (and
/// under its limits) before the app runs.
pub fn start_scope(runtime_dir: &Path, req: &ScopeRequest<'_>) -> Result<(), SystemdError> {
    request_scope(runtime_dir, req)?.wait()
}

/// A scope asked for, whose start job may still run: the launcher asks
/// right after the sandbox is cloned and collects the answer just before
/// the app may start, so the manager's few milliseconds overlap with the
/// sandbox assembling its root.
pub struct PendingScope {
    reader: BufReader<DeadlineStream>,
    unit: String,
    path: PathBuf,
}

/// The manager's socket, whose reads all end by one deadline: a peer that
/// trickles bytes cannot hold the launch past [`TIMEOUT`].
struct DeadlineStream {
    stream: UnixStream,
    deadline: Instant,
}

impl Read for DeadlineStream {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let left = self.deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(std::io::ErrorKind::TimedOut.into());
        }
        self.stream.set_read_timeout(Some(left))?;
        self.stream.read(buf)
    }
}

/// Connects without blocking: a listener whose backlog is full (a wedged
/// manager) is an error at once, not a hang.
fn connect(path: &Path) -> std::io::Result<UnixStream> {
    use nix::sys::socket::{AddressFamily, SockFlag, SockType, UnixAddr, connect, socket};
    use std::os::fd::AsRawFd;
    let fd = socket(
        AddressFamily::Unix,
        SockType::Stream,
        SockFlag::SOCK_CLOEXEC | SockFlag::SOCK_NONBLOCK,
        None,
    )?;
    connect(fd.as_raw_fd(), &UnixAddr::new(path)?)?;
    let stream = UnixStream::from(fd);
    stream.set_nonblocking(false)?;
    Ok(stream)
}

/// Sends the request for the scope; [`PendingScope::wait`] collects the
/// outcome.
pub fn request_scope(
    runtime_dir: &Path,
    req: &ScopeRequest<'_>,
) -> Result<PendingScope, SystemdError> {
    let path = private_socket(runtime_dir);
    let deadline = Instant::now() + TIMEOUT;
    let stream = connect(&path).map_err(PathIoError::with("connect", &path))?;
    // SAFETY: geteuid has no preconditions.
    let uid = unsafe { libc::geteuid() };
    // Only our own manager: whoever else could create a socket there must
    // not be able to claim a scope it never made.
    let peer = nix::sys::socket::getsockopt(&stream, nix::sys::socket::sockopt::PeerCredentials)
        .map_err(PathIoError::with("SO_PEERCRED of", &path))?;
    if peer.uid() != uid {
        return Err(SystemdError::Auth(format!(
            "the socket belongs to uid {}, not to us ({uid})",
            peer.uid()
        )));
    }
    stream
        .set_write_timeout(Some(TIMEOUT))
        .map_err(PathIoError::with("set a timeout on", &path))?;
    let mut writer = stream
        .try_clone()
        .map_err(PathIoError::with("dup", &path))?;
    let mut reader = BufReader::new(DeadlineStream { stream, deadline });

    // SASL EXTERNAL: the server checks our uid from the socket's
    // credentials. BEGIN then goes out together with the call.
    match auth::external(&mut reader, &mut writer, uid, false) {
        Ok(_) => {}
        Err(AuthError::Io(e)) => {
            return Err(timeout(PathIoError::with("authenticate on", &path))(e));
        }
        Err(e) => return Err(SystemdError::Auth(e.to_string())),
    }
    let mut out = auth::BEGIN.to_vec();
    out.extend_from_slice(&start_transient_unit(req));
    writer
        .write_all(&out)
        .map_err(PathIoError::with("write to", &path))?;
    Ok(PendingScope {
        reader,
        unit: req.unit.to_owned(),
        path,
    })
}

impl PendingScope {
    /// Waits until the scope's start job has finished.
    pub fn wait(self) -> Result<(), SystemdError> {
        let PendingScope {
            mut reader,
            unit,
            path,
        } = self;
        wait_for_job(&mut reader, &unit, &path)
    }
}

fn wait_for_job(
    reader: &mut BufReader<DeadlineStream>,
    unit: &str,
    path: &Path,
) -> Result<(), SystemdError> {
    // The reply names the job; the manager then sends JobRemoved to every
    // direct connection when the job is done. Signals of other jobs, sent
    // to us as well, are skipped. Every read ends by the deadline set at
    // connect.
    let mut job: Option<String> = None;
    loop {
        let bytes = read_message(reader).map_err(timeout(PathIoError::with("read from", path)))?;
        let h = Header::parse(&bytes).map_err(|_| SystemdError::Malformed)?;
        match (h.msg_type, job.as_deref()) {
            // A method return to our call (serial 1): the job's path.
            (METHOD_RETURN, None) if h.reply_serial == Some(1) => {
                if h.signature != "o" {
                    return Err(SystemdError::Malformed);
                }
                let path = h
                    .body_reader(&bytes)
                    .string()
                    .map_err(|_| SystemdError::Malformed)?;
                job = Some(path.to_owned());
            }
            // An error for our call.
            (porthole_dbus_wire::ERROR, None) if h.reply_serial == Some(1) => {
                return Err(SystemdError::Refused {
                    unit: unit.to_owned(),
                    name: h.error_name.unwrap_or_default().to_owned(),
                    message: h.arg0_str(&bytes).unwrap_or_default().to_owned(),
                });
            }
            (SIGNAL, Some(ours)) if h.member == Some("JobRemoved") => {
                // JobRemoved(u id, o job, s unit, s result). Another
                // sender's malformed signal is skipped, not fatal.
                if h.signature != "uoss" {
                    continue;
                }
                let mut r = h.body_reader(&bytes);
                let Ok((_, path, _, result)) = (|| {
                    Ok::<_, porthole_dbus_wire::WireError>((
                        r.u32()?,
                        r.string()?,
                        r.string()?,
                        r.string()?,
                    ))
                })() else {
                    continue;
                };
                if path != ours {
                    continue;
                }
                return match result {
                    "done" => Ok(()),
                    _ => Err(SystemdError::JobFailed {
                        unit: unit.to_owned(),
                        result: result.to_owned(),
                    }),
                };
            }
            _ => continue,
        }
    }
}

/// Read timeouts surface as EAGAIN/EWOULDBLOCK: say "timeout" instead.
fn timeout(
    f: impl FnOnce(std::io::Error) -> PathIoError,
) -> impl FnOnce(std::io::Error) -> SystemdError {
    move |e| match e.kind() {
        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut => {
            SystemdError::Timeout(TIMEOUT)
        }
        _ => f(e).into(),
    }
}

/// `org.freedesktop.systemd1.Manager.StartTransientUnit(ssa(sv)a(sa(sv)))`
/// as one little-endian message with serial 1.
fn start_transient_unit(req: &ScopeRequest<'_>) -> Vec<u8> {
    /// One `(sv)` property.
    fn prop(e: &mut Encoder, name: &str, sig: &str, value: impl FnOnce(&mut Encoder)) {
        e.struct_start();
        e.string(name);
        e.variant(sig);
        value(e);
    }
    let mut body = Encoder::new();
    body.string(req.unit);
    body.string("fail");
    body.array(8, |e| {
        prop(e, "Description", "s", |e| e.string(req.description));
        prop(e, "PIDs", "au", |e| e.array(4, |e| e.u32(req.pid)));
        // A failed scope is removed too, not kept around until reset.
        prop(e, "CollectMode", "s", |e| e.string("inactive-or-failed"));
        if let Some(m) = req.memory_max {
            prop(e, "MemoryMax", "t", |e| e.u64(m));
            prop(e, "MemorySwapMax", "t", |e| e.u64(0));
        }
        if let Some(t) = req.tasks_max {
            prop(e, "TasksMax", "t", |e| e.u64(t));
        }
    });
    // No auxiliary units.
    body.array(8, |_| {});
    Builder {
        msg_type: METHOD_CALL,
        serial: 1,
        path: Some("/org/freedesktop/systemd1"),
        interface: Some("org.freedesktop.systemd1.Manager"),
        member: Some("StartTransientUnit"),
        destination: Some("org.freedesktop.systemd1"),
        ..Default::default()
    }
    .build_with_body("ssa(sv)a(sa(sv))", body.bytes())
}

/// The largest message we accept from the manager (its replies and signals
/// are small; this only bounds what a broken peer can make us allocate).
const MAX_MESSAGE: usize = 1 << 20;

/// Reads one whole message whose header is well-formed.
fn read_message(r: &mut impl Read) -> std::io::Result<Vec<u8>> {
    let malformed = || std::io::Error::new(std::io::ErrorKind::InvalidData, "malformed message");
    let mut fixed = [0u8; 16];
    r.read_exact(&mut fixed)?;
    let total = porthole_dbus_wire::message_len(&fixed).map_err(|_| malformed())?;
    if total > MAX_MESSAGE {
        return Err(malformed());
    }
    let mut bytes = vec![0u8; total];
    bytes[..16].copy_from_slice(&fixed);
    r.read_exact(&mut bytes[16..])?;
    Header::parse(&bytes).map_err(|_| malformed())?;
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_call_parses_back_as_a_d_bus_message() {
        let req = ScopeRequest {
            unit: &unit_name("org.example.App", "abc123"),
            description: "org.example.App",
            pid: 4242,
            memory_max: Some(1 << 20),
            tasks_max: None,
        };
        let bytes = start_transient_unit(&req);
        let bytes = read_message(&mut &bytes[..]).unwrap();
        let h = Header::parse(&bytes).unwrap();
        assert_eq!(h.msg_type, METHOD_CALL);
        assert_eq!(h.member, Some("StartTransientUnit"));
        assert_eq!(h.signature, "ssa(sv)a(sa(sv))");
        let mut r = h.body_reader(&bytes);
        assert_eq!(
            r.string().unwrap(),
            "app-porthole-org.example.App-abc123.scope"
        );
        assert_eq!(r.string().unwrap(), "fail");
        let stop = r.array(8).unwrap();
        let mut names = Vec::new();
        while r.pos() < stop {
            r.align(8).unwrap();
            let name = r.string().unwrap();
            let sig = r.signature().unwrap();
            match (name, sig) {
                ("PIDs", "au") => {
                    let end = r.array(4).unwrap();
                    assert_eq!(r.u32().unwrap(), 4242);
                    assert_eq!(r.pos(), end);
                }
                ("MemoryMax", "t") => assert_eq!(r.u64().unwrap(), 1 << 20),
                ("MemorySwapMax", "t") => assert_eq!(r.u64().unwrap(), 0),
                ("Description", "s") => assert_eq!(r.string().unwrap(), "org.example.App"),
                ("CollectMode", "s") => assert_eq!(r.string().unwrap(), "inactive-or-failed"),
                other => panic!("unexpected property {other:?}"),
            }
            names.push(name);
        }
        assert_eq!(
            names,
            [
                "Description",
                "PIDs",
                "CollectMode",
                "MemoryMax",
                "MemorySwapMax"
            ]
        );
        // The auxiliary units: an empty array, and nothing after it.
        let aux_end = r.array(8).unwrap();
        assert_eq!(r.pos(), aux_end);
        assert!(r.at_end());
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        for bytes in [
            &b"xxxxxxxxxxxxxxxx"[..],
            &[b'l', 1, 0, 1, 255, 255, 255, 255, 1, 0, 0, 0, 0, 0, 0, 0],
        ] {
            assert!(read_message(&mut &bytes[..]).is_err());
        }
    }
}
