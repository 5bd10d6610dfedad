//! The app's Wayland socket through `wp_security_context_v1` when the
//! compositor offers it: a listening socket of our own, registered with the
//! compositor together with the sandbox engine, app id and instance id, so the
//! compositor knows every client on it is that sandboxed app and can refuse it
//! privileged protocols. Without the global (weston 10, Debian 12), the
//! caller falls back to binding the host socket.
//!
//! The protocol is small enough to speak directly (wayland.freedesktop.org,
//! "Wire Format"): 32-bit words in host byte order, a header of object id and
//! (size << 16 | opcode), strings as length (with NUL) plus padded bytes, fds
//! out of band as SCM_RIGHTS.

use std::io::{IoSlice, Read, Write};
use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;
use std::time::Duration;

/// Sandbox engine name given to the compositor.
pub const ENGINE: &str = "org.porthole";
const MANAGER: &str = "wp_security_context_manager_v1";

/// Errors talking to the compositor.
#[derive(Debug, thiserror::Error)]
pub enum WaylandError {
    #[error("wayland {op}: {source}")]
    Io {
        op: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("wayland compositor error on object {object}, code {code}: {message}")]
    Protocol {
        object: u32,
        code: u32,
        message: String,
    },
    #[error("malformed wayland message from the compositor")]
    Malformed,
}

fn io(op: &'static str) -> impl FnOnce(std::io::Error) -> WaylandError {
    move |source| WaylandError::Io { op, source }
}

/// A request being encoded.
struct Msg {
    words: Vec<u32>,
}

impl Msg {
    fn new(object: u32, opcode: u16) -> Self {
        Msg {
            words: vec![object, opcode as u32],
        }
    }
    fn uint(mut self, v: u32) -> Self {
        self.words.push(v);
        self
    }
    fn string(mut self, s: &str) -> Self {
        let bytes = s.as_bytes();
        self.words.push(bytes.len() as u32 + 1);
        let mut padded = bytes.to_vec();
        padded.push(0);
        while padded.len() & 3 != 0 {
            padded.push(0);
        }
        for chunk in padded.chunks(4) {
            self.words
                .push(u32::from_ne_bytes([chunk[0], chunk[1], chunk[2], chunk[3]]));
        }
        self
    }
    fn bytes(mut self) -> Vec<u8> {
        let size = (self.words.len() * 4) as u32;
        self.words[1] |= size << 16;
        self.words.iter().flat_map(|w| w.to_ne_bytes()).collect()
    }
}

/// An event read from the compositor.
#[derive(Debug)]
struct Event {
    object: u32,
    opcode: u16,
    args: Vec<u8>,
}

fn word(args: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_ne_bytes(args.get(at..at + 4)?.try_into().ok()?))
}

/// A string argument at `at`; returns it and the offset after it.
fn string(args: &[u8], at: usize) -> Option<(String, usize)> {
    let len = word(args, at)? as usize;
    let bytes = args.get(at + 4..at + 4 + len)?;
    let s = String::from_utf8_lossy(bytes.strip_suffix(&[0]).unwrap_or(bytes)).into_owned();
    Some((s, at + 4 + len.div_ceil(4) * 4))
}

struct Conn {
    stream: UnixStream,
}

impl Conn {
    fn send(&mut self, msg: Msg) -> Result<(), WaylandError> {
        self.stream.write_all(&msg.bytes()).map_err(io("write"))
    }

    fn send_with_fds(&mut self, msg: Msg, fds: &[RawFd]) -> Result<(), WaylandError> {
        let bytes = msg.bytes();
        let cmsg = [nix::sys::socket::ControlMessage::ScmRights(fds)];
        nix::sys::socket::sendmsg::<()>(
            self.stream.as_raw_fd(),
            &[IoSlice::new(&bytes)],
            &cmsg,
            nix::sys::socket::MsgFlags::MSG_NOSIGNAL,
            None,
        )
        .map_err(|e| WaylandError::Io {
            op: "sendmsg",
            source: e.into(),
        })?;
        Ok(())
    }

    fn read_event(&mut self) -> Result<Event, WaylandError> {
        let mut header = [0u8; 8];
        self.stream.read_exact(&mut header).map_err(io("read"))?;
        let object = word(&header, 0).ok_or(WaylandError::Malformed)?;
        let second = word(&header, 4).ok_or(WaylandError::Malformed)?;
        let size = (second >> 16) as usize;
        if size < 8 || size & 3 != 0 {
            return Err(WaylandError::Malformed);
        }
        let mut args = vec![0u8; size - 8];
        self.stream.read_exact(&mut args).map_err(io("read"))?;
        let ev = Event {
            object,
            opcode: (second & 0xffff) as u16,
            args,
        };
        if ev.object == 1 && ev.opcode == 0 {
            // wl_display.error(object, code, message)
            let object = word(&ev.args, 0).ok_or(WaylandError::Malformed)?;
            let code = word(&ev.args, 4).ok_or(WaylandError::Malformed)?;
            let (message, _) = string(&ev.args, 8).ok_or(WaylandError::Malformed)?;
            return Err(WaylandError::Protocol {
                object,
                code,
                message,
            });
        }
        Ok(ev)
    }

    /// wl_display.sync, then read events until its callback is done,
    /// handing every other event to `f`.
    fn roundtrip(&mut self, callback: u32, mut f: impl FnMut(&Event)) -> Result<(), WaylandError> {
        self.send(Msg::new(1, 0).uint(callback))?;
        loop {
            let ev = self.read_event()?;
            if ev.object == callback && ev.opcode == 0 {
                return Ok(());
            }
            f(&ev);
        }
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
    let mut c = connect(display)?;
    Ok(globals(&mut c)?.iter().any(|(_, i, _)| i == MANAGER))
}

fn connect(display: &Path) -> Result<Conn, WaylandError> {
    let stream = UnixStream::connect(display).map_err(io("connect"))?;
    stream
        .set_read_timeout(Some(Duration::from_secs(2)))
        .map_err(io("timeout"))?;
    Ok(Conn { stream })
}

fn globals(c: &mut Conn) -> Result<Vec<(u32, String, u32)>, WaylandError> {
    // wl_display.get_registry(new_id 2), then a roundtrip on callback 3.
    c.send(Msg::new(1, 1).uint(2))?;
    let mut globals = Vec::new();
    let mut bad = false;
    c.roundtrip(3, |ev| {
        if ev.object == 2 && ev.opcode == 0 {
            match (word(&ev.args, 0), string(&ev.args, 4)) {
                (Some(name), Some((iface, next))) => {
                    globals.push((name, iface, word(&ev.args, next).unwrap_or(1)));
                }
                _ => bad = true,
            }
        }
    })?;
    if bad {
        return Err(WaylandError::Malformed);
    }
    Ok(globals)
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
    let mut c = connect(display)?;
    let Some((name, _, _)) = globals(&mut c)?.into_iter().find(|(_, i, _)| i == MANAGER) else {
        return Ok(None);
    };
    // wl_registry.bind(name, interface, version 1, new_id 4)
    c.send(Msg::new(2, 0).uint(name).string(MANAGER).uint(1).uint(4))?;
    let (close_rd, close_wr) =
        nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(|e| WaylandError::Io {
            op: "pipe2",
            source: e.into(),
        })?;
    // manager.create_listener(new_id 5, listen_fd, close_fd)
    c.send_with_fds(
        Msg::new(4, 1).uint(5),
        &[listener.as_fd().as_raw_fd(), close_rd.as_raw_fd()],
    )?;
    drop(close_rd);
    c.send(Msg::new(5, 1).string(ENGINE))?; // set_sandbox_engine
    c.send(Msg::new(5, 2).string(app_id))?; // set_app_id
    c.send(Msg::new(5, 3).string(instance_id))?; // set_instance_id
    c.send(Msg::new(5, 4))?; // commit
    c.send(Msg::new(5, 0))?; // destroy: the listener outlives the object
    c.roundtrip(6, |_| {})?;
    Ok(Some(SecurityContext { close_fd: close_wr }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::IoSliceMut;

    /// Requests as the fake compositor saw them: object, opcode, arguments,
    /// number of fds that came along.
    type Seen = Vec<(u32, u16, Vec<u8>, usize)>;

    /// A fake compositor: answers the registry with `offer` globals and
    /// records every request.
    fn fake_compositor(listener: UnixListener, offer: bool) -> std::thread::JoinHandle<Seen> {
        std::thread::spawn(move || {
            let (mut s, _) = listener.accept().unwrap();
            let mut seen = Vec::new();
            loop {
                let mut header = [0u8; 8];
                let mut cbuf = nix::cmsg_space!([RawFd; 4]);
                let (n, nfds) = {
                    let mut iov = [IoSliceMut::new(&mut header)];
                    let msg = match nix::sys::socket::recvmsg::<()>(
                        s.as_raw_fd(),
                        &mut iov,
                        Some(&mut cbuf),
                        nix::sys::socket::MsgFlags::MSG_WAITALL,
                    ) {
                        Ok(m) => m,
                        Err(_) => break,
                    };
                    let mut nfds = 0;
                    for c in msg.cmsgs().unwrap() {
                        if let nix::sys::socket::ControlMessageOwned::ScmRights(fds) = c {
                            nfds += fds.len();
                        }
                    }
                    (msg.bytes, nfds)
                };
                if n == 0 {
                    break;
                }
                let object = word(&header, 0).unwrap();
                let second = word(&header, 4).unwrap();
                let mut args = vec![0u8; (second >> 16) as usize - 8];
                s.read_exact(&mut args).unwrap();
                let opcode = (second & 0xffff) as u16;
                seen.push((object, opcode, args.clone(), nfds));
                if object == 1 && opcode == 1 {
                    let mut out = Msg::new(2, 0)
                        .uint(1)
                        .string("wl_compositor")
                        .uint(4)
                        .bytes();
                    if offer {
                        out.extend(Msg::new(2, 0).uint(7).string(MANAGER).uint(1).bytes());
                    }
                    s.write_all(&out).unwrap();
                } else if object == 1 && opcode == 0 {
                    let cb = word(&args, 0).unwrap();
                    s.write_all(&Msg::new(cb, 0).uint(0).bytes()).unwrap();
                }
            }
            seen
        })
    }

    #[test]
    fn registers_listener_with_app_identity() {
        let dir = tempfile::tempdir().unwrap();
        let display = dir.path().join("wayland-fake");
        let server = fake_compositor(UnixListener::bind(&display).unwrap(), true);
        let ours = UnixListener::bind(dir.path().join("app.sock")).unwrap();
        let ctx = create_security_context(&display, &ours, "org.example.App", "42").unwrap();
        assert!(ctx.is_some());
        let seen = server.join().unwrap();
        let find = |o: u32, op: u16| {
            seen.iter()
                .find(|(ob, opc, _, _)| *ob == o && *opc == op)
                .unwrap_or_else(|| panic!("no request {o}.{op}: {seen:?}"))
        };
        let bind = find(2, 0);
        assert_eq!(word(&bind.2, 0), Some(7));
        assert_eq!(string(&bind.2, 4).unwrap().0, MANAGER);
        assert_eq!(
            find(4, 1).3,
            2,
            "listen_fd and close_fd travel as SCM_RIGHTS"
        );
        assert_eq!(string(&find(5, 1).2, 0).unwrap().0, ENGINE);
        assert_eq!(string(&find(5, 2).2, 0).unwrap().0, "org.example.App");
        assert_eq!(string(&find(5, 3).2, 0).unwrap().0, "42");
        find(5, 4); // commit
    }

    #[test]
    fn reports_absence_for_fallback() {
        let dir = tempfile::tempdir().unwrap();
        let display = dir.path().join("wayland-old");
        let server = fake_compositor(UnixListener::bind(&display).unwrap(), false);
        let ours = UnixListener::bind(dir.path().join("app.sock")).unwrap();
        assert!(
            create_security_context(&display, &ours, "org.example.App", "1")
                .unwrap()
                .is_none()
        );
        let seen = server.join().unwrap();
        assert!(
            !seen.iter().any(|(o, _, _, _)| *o == 4),
            "nothing sent to a manager that does not exist"
        );
    }

    #[test]
    fn strings_are_padded_words() {
        let m = Msg::new(5, 2).string("abc").bytes();
        assert_eq!(m.len(), 8 + 4 + 4);
        assert_eq!(word(&m, 4).unwrap() >> 16, 16);
        assert_eq!(string(&m[8..], 0).unwrap(), ("abc".to_string(), 8));
        let m = Msg::new(5, 2).string("abcd").bytes();
        assert_eq!(m.len(), 8 + 4 + 8);
    }
}
