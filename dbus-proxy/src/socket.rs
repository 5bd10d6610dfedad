//! Unix-socket I/O with file descriptors (SCM_RIGHTS), as small safe
//! wrappers over recvmsg(2)/sendmsg(2), and the receive buffer that cuts
//! the byte stream into messages.

use std::borrow::Cow;
use std::collections::VecDeque;
use std::io;
use std::mem::{MaybeUninit, size_of};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

use porthole_dbus_wire::{self as wire, WireError};

/// Room for the most fds one recvmsg(2) can carry from the bus (the kernel
/// caps SCM_RIGHTS at 253 per message).
const CMSG_SPACE_BYTES: usize = 1024;

/// Reads into `buf`'s spare capacity; received fds are appended to `fds`.
/// Returns the number of bytes read (0 at end of stream).
pub fn recv_with_fds(
    fd: RawFd,
    buf: &mut Vec<u8>,
    limit: usize,
    fds: &mut VecDeque<OwnedFd>,
) -> io::Result<usize> {
    let spare = buf.spare_capacity_mut();
    let len = spare.len().min(limit);
    let mut iov = libc::iovec {
        iov_base: spare.as_mut_ptr().cast(),
        iov_len: len,
    };
    let mut cmsg = [MaybeUninit::<u64>::uninit(); CMSG_SPACE_BYTES / 8];
    // SAFETY: an all-zero msghdr is a valid "empty" value; we fill in the
    // fields we use below.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = cmsg.as_mut_ptr().cast();
    msg.msg_controllen = CMSG_SPACE_BYTES as _;
    // SAFETY: iov points at `len` writable bytes of `buf`'s spare capacity
    // and msg_control at CMSG_SPACE_BYTES writable bytes; both outlive the
    // call. MSG_CMSG_CLOEXEC keeps received fds from leaking into children.
    let n = unsafe { libc::recvmsg(fd, &mut msg, libc::MSG_CMSG_CLOEXEC) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    let n = n as usize;
    // SAFETY: the kernel wrote `n <= len` bytes at the start of the spare
    // capacity.
    unsafe { buf.set_len(buf.len() + n) };
    // SAFETY: msg was filled by a successful recvmsg; CMSG_FIRSTHDR and
    // CMSG_NXTHDR only walk inside msg_control/msg_controllen, and each
    // SCM_RIGHTS payload holds (cmsg_len - CMSG_LEN(0)) / 4 fds that are now
    // ours (the kernel installed them in our table).
    unsafe {
        let mut c = libc::CMSG_FIRSTHDR(&msg);
        while !c.is_null() {
            if (*c).cmsg_level == libc::SOL_SOCKET && (*c).cmsg_type == libc::SCM_RIGHTS {
                let data = libc::CMSG_DATA(c).cast::<RawFd>();
                let count =
                    ((*c).cmsg_len as usize - libc::CMSG_LEN(0) as usize) / size_of::<RawFd>();
                for i in 0..count {
                    let raw = std::ptr::read_unaligned(data.add(i));
                    fds.push_back(OwnedFd::from_raw_fd(raw));
                }
            }
            c = libc::CMSG_NXTHDR(&msg, c);
        }
    }
    if msg.msg_flags & libc::MSG_CTRUNC != 0 {
        return Err(io::Error::other("file descriptors truncated in recvmsg"));
    }
    Ok(n)
}

/// Sends `data` with `fds` attached to its first byte. Returns the number
/// of bytes sent; the fds went with them when that is > 0.
pub fn send_with_fds(fd: RawFd, data: &[u8], fds: &[OwnedFd]) -> io::Result<usize> {
    let mut iov = libc::iovec {
        iov_base: data.as_ptr() as *mut libc::c_void,
        iov_len: data.len(),
    };
    // SAFETY: as above, an all-zero msghdr is valid.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    let raw: Vec<RawFd> = fds.iter().map(AsRawFd::as_raw_fd).collect();
    // SAFETY: CMSG_SPACE is a pure size computation.
    let space = unsafe { libc::CMSG_SPACE((raw.len() * size_of::<RawFd>()) as u32) } as usize;
    let mut cmsg = vec![0u64; space.div_ceil(8)];
    if !raw.is_empty() {
        msg.msg_control = cmsg.as_mut_ptr().cast();
        msg.msg_controllen = space as _;
        // SAFETY: msg_control points at `space` zeroed, 8-aligned bytes,
        // enough for one cmsghdr carrying raw.len() fds; the fds stay open
        // (borrowed from `fds`) for the duration of the call.
        unsafe {
            let c = libc::CMSG_FIRSTHDR(&msg);
            (*c).cmsg_level = libc::SOL_SOCKET;
            (*c).cmsg_type = libc::SCM_RIGHTS;
            (*c).cmsg_len = libc::CMSG_LEN((raw.len() * size_of::<RawFd>()) as u32) as _;
            std::ptr::copy_nonoverlapping(
                raw.as_ptr(),
                libc::CMSG_DATA(c).cast::<RawFd>(),
                raw.len(),
            );
        }
    }
    // SAFETY: iov points at data.len() readable bytes; the control buffer
    // is set up above. MSG_NOSIGNAL: a closed peer gives EPIPE, not SIGPIPE.
    let n = unsafe { libc::sendmsg(fd, &msg, libc::MSG_NOSIGNAL) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(n as usize)
}

/// Size of an ordinary read; larger messages get a buffer of their own.
pub const CHUNK: usize = 64 * 1024;

/// Accumulates bytes from a socket and yields whole messages.
///
/// Small messages are copied out; a message larger than [`CHUNK`] is read
/// into a buffer of exactly its size, which is then handed over without a
/// copy.
#[derive(Debug, Default)]
pub struct RecvBuf {
    buf: Vec<u8>,
    start: usize,
}

impl RecvBuf {
    pub fn new(initial: Vec<u8>) -> Self {
        let mut buf = initial;
        buf.reserve(CHUNK);
        RecvBuf { buf, start: 0 }
    }

    /// The next complete message, if buffered.
    pub fn next_message(&mut self) -> Result<Option<Vec<u8>>, WireError> {
        Ok(self.next_message_cow()?.map(Cow::into_owned))
    }

    /// [`Self::next_message`] without the copy: small messages are borrowed
    /// from the buffer (valid until the next call on it), a large one read
    /// into a buffer of its own is handed over.
    pub fn next_message_cow(&mut self) -> Result<Option<Cow<'_, [u8]>>, WireError> {
        self.reset_if_drained();
        let avail = self.buf.len() - self.start;
        if avail < 16 {
            return Ok(None);
        }
        let need = wire::message_len(&self.buf[self.start..self.start + 16])?;
        if avail < need {
            return Ok(None);
        }
        if self.start == 0 && need == self.buf.len() && need > CHUNK {
            return Ok(Some(Cow::Owned(std::mem::replace(
                &mut self.buf,
                Vec::with_capacity(CHUNK),
            ))));
        }
        let at = self.start;
        self.start += need;
        Ok(Some(Cow::Borrowed(&self.buf[at..at + need])))
    }

    /// Every buffered message taken: start over at the front.
    fn reset_if_drained(&mut self) {
        if self.start == self.buf.len() {
            self.buf.clear();
            self.start = 0;
        }
    }

    /// Makes room for the next read; returns how many bytes to read at most
    /// (never past the end of a large message).
    pub fn prepare(&mut self) -> Result<usize, WireError> {
        self.reset_if_drained();
        let avail = self.buf.len() - self.start;
        let need = if avail >= 16 {
            Some(wire::message_len(&self.buf[self.start..self.start + 16])?)
        } else {
            None
        };
        let cap_left = self.buf.capacity() - self.buf.len();
        if self.start > 0
            && (cap_left < 4096 || need.is_some_and(|n| self.start + n > self.buf.capacity()))
        {
            self.buf.drain(..self.start);
            self.start = 0;
        }
        match need {
            Some(n) if n > CHUNK => {
                let end = self.start + n;
                self.buf.reserve_exact(end - self.buf.len());
                Ok(end - self.buf.len())
            }
            _ => {
                if self.buf.capacity() - self.buf.len() < 4096 {
                    self.buf.reserve(CHUNK);
                }
                Ok(self.buf.capacity() - self.buf.len())
            }
        }
    }

    /// The buffered bytes from the front message on (it may be incomplete).
    pub fn front(&self) -> &[u8] {
        &self.buf[self.start..]
    }

    /// Takes every buffered byte; used when the front message is incomplete
    /// and is passed on as it arrives.
    pub fn take_front(&mut self) -> Vec<u8> {
        if self.start == 0 {
            // Hand the buffer over rather than copy it.
            return std::mem::replace(&mut self.buf, Vec::with_capacity(CHUNK));
        }
        let v = self.buf[self.start..].to_vec();
        self.buf.clear();
        self.start = 0;
        v
    }

    pub fn vec_mut(&mut self) -> &mut Vec<u8> {
        &mut self.buf
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use porthole_dbus_wire::{Arg, Builder, METHOD_CALL};

    fn msg(serial: u32, payload: &str) -> Vec<u8> {
        Builder {
            msg_type: METHOD_CALL,
            serial,
            path: Some("/"),
            member: Some("M"),
            args: &[Arg::Str(payload)],
            ..Default::default()
        }
        .build()
    }

    #[test]
    fn split_and_packed_messages() {
        let big = "x".repeat(200_000);
        let stream: Vec<u8> = [msg(1, "a"), msg(2, &big), msg(3, "b"), msg(4, "c")].concat();
        // Feed in awkward pieces.
        for piece in [1usize, 7, 16, 17, 4096, 70_000] {
            let mut rb = RecvBuf::new(Vec::new());
            let mut out = Vec::new();
            let mut pos = 0;
            while pos < stream.len() {
                let limit = rb.prepare().unwrap();
                let n = limit.min(piece).min(stream.len() - pos);
                rb.vec_mut().extend_from_slice(&stream[pos..pos + n]);
                pos += n;
                while let Some(m) = rb.next_message().unwrap() {
                    out.push(m);
                }
            }
            assert_eq!(out.len(), 4, "piece {piece}");
            assert_eq!(out.concat(), stream);
        }
    }
}
