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
//! justify an async D-Bus stack in the launcher; the message is built with
//! zvariant and framed here.

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use zvariant::serialized::{Context, Data};
use zvariant::{LE, OwnedObjectPath, OwnedValue, Value};

use crate::io_error::PathIoError;

/// How long the manager may take to answer and to run the job: past this
/// the launch goes on without a scope (the manager is wedged).
const TIMEOUT: Duration = Duration::from_secs(5);

/// Errors while asking systemd for a scope.
#[derive(Debug, thiserror::Error)]
pub enum SystemdError {
    #[error(transparent)]
    Io(#[from] PathIoError),
    #[error("the systemd user manager refused authentication: {0:?}")]
    Auth(String),
    #[error("cannot encode or decode a D-Bus message: {0}")]
    Message(#[from] zvariant::Error),
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
    // credentials; the uid is sent as hex of its decimal digits.
    let hex: String = uid
        .to_string()
        .bytes()
        .map(|b| format!("{b:02x}"))
        .collect();
    writer
        .write_all(format!("\0AUTH EXTERNAL {hex}\r\n").as_bytes())
        .map_err(PathIoError::with("write to", &path))?;
    // One line, of bounded length.
    let mut line = String::new();
    reader
        .by_ref()
        .take(512)
        .read_line(&mut line)
        .map_err(timeout(PathIoError::with("read from", &path)))?;
    if !line.starts_with("OK ") || !line.ends_with('\n') {
        return Err(SystemdError::Auth(line.trim_end().to_owned()));
    }
    let call = start_transient_unit(req)?;
    let mut out = b"BEGIN\r\n".to_vec();
    out.extend_from_slice(&call);
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
        let msg = read_message(reader).map_err(timeout(PathIoError::with("read from", path)))?;
        match (msg.kind, job.as_deref()) {
            // A method return to our call (serial 1).
            (2, None) if msg.reply_serial == Some(1) => {
                let (path, _): (OwnedObjectPath, _) = msg.body().deserialize()?;
                job = Some(path.as_str().to_owned());
            }
            // An error for our call.
            (3, None) if msg.reply_serial == Some(1) => {
                let message = msg
                    .body()
                    .deserialize::<String>()
                    .map(|(m, _)| m)
                    .unwrap_or_default();
                return Err(SystemdError::Refused {
                    unit: unit.to_owned(),
                    name: msg.error_name.unwrap_or_default(),
                    message,
                });
            }
            (4, Some(ours)) if msg.member.as_deref() == Some("JobRemoved") => {
                // Another sender's malformed signal is skipped, not fatal.
                let Ok(((_, path, _, result), _)) =
                    msg.body()
                        .deserialize::<(u32, OwnedObjectPath, String, String)>()
                else {
                    continue;
                };
                if path.as_str() != ours {
                    continue;
                }
                return match result.as_str() {
                    "done" => Ok(()),
                    _ => Err(SystemdError::JobFailed {
                        unit: unit.to_owned(),
                        result,
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

/// Appends the little-endian header of a method call with serial 1.
/// Written by hand: a header is five string fields, and zvariant would
/// put parentheses around the body signature (zbus works around the same).
fn call_header(out: &mut Vec<u8>, body_len: u32, fields: &[(u8, u8, &str)]) {
    fn pad(out: &mut Vec<u8>, to: usize) {
        out.resize(out.len().next_multiple_of(to), 0);
    }
    out.extend_from_slice(&[b'l', 1, 0, 1]);
    out.extend_from_slice(&body_len.to_le_bytes());
    out.extend_from_slice(&1u32.to_le_bytes());
    let len_at = out.len();
    out.extend_from_slice(&[0; 4]);
    let start = out.len().next_multiple_of(8);
    for &(code, kind, value) in fields {
        pad(out, 8);
        out.extend_from_slice(&[code, 1, kind, 0]);
        if kind == b'g' {
            out.push(value.len() as u8);
        } else {
            pad(out, 4);
            out.extend_from_slice(&(value.len() as u32).to_le_bytes());
        }
        out.extend_from_slice(value.as_bytes());
        out.push(0);
    }
    let fields_len = (out.len() - start) as u32;
    out[len_at..len_at + 4].copy_from_slice(&fields_len.to_le_bytes());
    pad(out, 8);
}

/// `org.freedesktop.systemd1.Manager.StartTransientUnit(ssa(sv)a(sa(sv)))`
/// as one little-endian message with serial 1.
fn start_transient_unit(req: &ScopeRequest<'_>) -> Result<Vec<u8>, SystemdError> {
    let mut props: Vec<(&str, Value<'_>)> = vec![
        ("Description", Value::from(req.description)),
        ("PIDs", Value::from(vec![req.pid])),
        // A failed scope is removed too, not kept around until reset.
        ("CollectMode", Value::from("inactive-or-failed")),
    ];
    if let Some(m) = req.memory_max {
        props.push(("MemoryMax", Value::from(m)));
        props.push(("MemorySwapMax", Value::from(0u64)));
    }
    if let Some(t) = req.tasks_max {
        props.push(("TasksMax", Value::from(t)));
    }
    let aux: Vec<(&str, Vec<(&str, Value<'_>)>)> = Vec::new();
    let ctxt = Context::new_dbus(LE, 0);
    let body = zvariant::to_bytes(ctxt, &(req.unit, "fail", props, aux))?;
    let len = u32::try_from(body.len()).map_err(|_| SystemdError::Malformed)?;
    let mut msg = Vec::with_capacity(256 + body.len());
    call_header(
        &mut msg,
        len,
        &[
            (1, b'o', "/org/freedesktop/systemd1"),
            (2, b's', "org.freedesktop.systemd1.Manager"),
            (3, b's', "StartTransientUnit"),
            (6, b's', "org.freedesktop.systemd1"),
            (8, b'g', "ssa(sv)a(sa(sv))"),
        ],
    );
    msg.extend_from_slice(&body);
    Ok(msg)
}

/// The parts of a received message we look at.
struct Message {
    kind: u8,
    reply_serial: Option<u32>,
    error_name: Option<String>,
    member: Option<String>,
    body: Vec<u8>,
    little_endian: bool,
}

impl Message {
    fn body(&self) -> Data<'_, 'static> {
        let endian = if self.little_endian {
            zvariant::Endian::Little
        } else {
            zvariant::Endian::Big
        };
        Data::new(&self.body[..], Context::new_dbus(endian, 0))
    }
}

/// The largest message we accept from the manager (its replies and signals
/// are small; this only bounds what a broken peer can make us allocate).
const MAX_MESSAGE: usize = 1 << 20;

/// A header as received: endianness, type, flags, version, body length,
/// serial, header fields.
type ReceivedHeader = (u8, u8, u8, u8, u32, u32, Vec<(u8, OwnedValue)>);

fn read_message(r: &mut impl Read) -> std::io::Result<Message> {
    let malformed = || std::io::Error::new(std::io::ErrorKind::InvalidData, "malformed message");
    let mut fixed = [0u8; 16];
    r.read_exact(&mut fixed)?;
    let little_endian = match fixed[0] {
        b'l' => true,
        b'B' => false,
        _ => return Err(malformed()),
    };
    let u32_at = |b: &[u8], i: usize| {
        let v = [b[i], b[i + 1], b[i + 2], b[i + 3]];
        if little_endian {
            u32::from_le_bytes(v)
        } else {
            u32::from_be_bytes(v)
        }
    };
    let body_len = u32_at(&fixed, 4) as usize;
    let fields_len = u32_at(&fixed, 12) as usize;
    if body_len > MAX_MESSAGE || fields_len > MAX_MESSAGE {
        return Err(malformed());
    }
    let header_len = (16 + fields_len).next_multiple_of(8);
    if header_len + body_len > MAX_MESSAGE {
        return Err(malformed());
    }
    let mut bytes = vec![0u8; header_len + body_len];
    bytes[..16].copy_from_slice(&fixed);
    r.read_exact(&mut bytes[16..])?;
    let endian = if little_endian {
        zvariant::Endian::Little
    } else {
        zvariant::Endian::Big
    };
    let data = Data::new(&bytes[..header_len], Context::new_dbus(endian, 0));
    let ((_, kind, _, _, _, _, fields), _): (ReceivedHeader, _) =
        data.deserialize().map_err(|_| malformed())?;
    let mut m = Message {
        kind,
        reply_serial: None,
        error_name: None,
        member: None,
        body: bytes[header_len..].to_vec(),
        little_endian,
    };
    for (code, value) in fields {
        match code {
            3 => m.member = String::try_from(value).ok(),
            4 => m.error_name = String::try_from(value).ok(),
            5 => m.reply_serial = u32::try_from(value).ok(),
            _ => {}
        }
    }
    Ok(m)
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
        let bytes = start_transient_unit(&req).unwrap();
        let m = read_message(&mut &bytes[..]).unwrap();
        assert_eq!(m.kind, 1);
        assert_eq!(m.member.as_deref(), Some("StartTransientUnit"));
        type Props = Vec<(String, OwnedValue)>;
        type Body = (String, String, Props, Vec<(String, Props)>);
        let ((unit, mode, props, aux), _): (Body, _) = m.body().deserialize().unwrap();
        assert_eq!(unit, "app-porthole-org.example.App-abc123.scope");
        assert_eq!(mode, "fail");
        assert!(aux.is_empty());
        let names: Vec<&str> = props.iter().map(|(n, _)| n.as_str()).collect();
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
        let pids = Vec::<u32>::try_from(props[1].1.try_clone().unwrap()).unwrap();
        assert_eq!(pids, [4242]);
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
