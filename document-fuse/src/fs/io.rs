//! Reads and writes of real files off the FUSE thread: a few worker
//! threads take them, so a real file that is slow to answer (a network
//! file system, or a FUSE file system that never replies) holds one worker,
//! not the whole mount, and large reads of different files proceed in
//! parallel. Each job answers its request exactly once (a reply dropped
//! unanswered is answered EIO by fuser).

use std::os::unix::fs::FileExt;
use std::sync::mpsc::{Sender, channel};
use std::sync::{Arc, Mutex};

use super::Target;

use fuser::{ReplyData, ReplyWrite};

/// Workers: enough for a few stuck files and parallel reads, few enough
/// to cost nothing when idle (they sleep on the channel).
const WORKERS: usize = 4;

type Job = Box<dyn FnOnce() + Send>;

pub struct Pool {
    tx: Sender<Job>,
}

impl Pool {
    pub fn new() -> Pool {
        let (tx, rx) = channel::<Job>();
        let rx = Arc::new(Mutex::new(rx));
        for n in 0..WORKERS {
            let rx = rx.clone();
            let spawned = std::thread::Builder::new()
                .name(format!("doc-io-{n}"))
                .spawn(move || {
                    loop {
                        let job = {
                            let rx = rx.lock().unwrap_or_else(|p| p.into_inner());
                            rx.recv()
                        };
                        match job {
                            Ok(job) => job(),
                            Err(_) => return,
                        }
                    }
                });
            if let Err(e) = spawned {
                tracing::warn!("starting an I/O worker: {e}");
            }
        }
        Pool { tx }
    }

    /// Runs `job` on a worker, or here if no worker is left.
    fn run(&self, job: Job) {
        if let Err(std::sync::mpsc::SendError(job)) = self.tx.send(job) {
            job();
        }
    }

    pub fn read(&self, target: Target, offset: u64, size: u32, reply: ReplyData) {
        self.run(Box::new(move || {
            let file = match target.open() {
                Ok(f) => f,
                Err(e) => return reply.error(e.raw_os_error()),
            };
            let mut buf = vec![0u8; size as usize];
            let mut filled = 0;
            while filled < buf.len() {
                match file.read_at(&mut buf[filled..], offset + filled as u64) {
                    Ok(0) => break,
                    Ok(n) => filled += n,
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                    Err(e) => return reply.error(e.raw_os_error().unwrap_or(libc::EIO)),
                }
            }
            reply.data(&buf[..filled]);
        }));
    }

    pub fn write(&self, target: Target, offset: u64, data: Vec<u8>, reply: ReplyWrite) {
        self.run(Box::new(move || {
            let file = match target.open() {
                Ok(f) => f,
                Err(e) => return reply.error(e.raw_os_error()),
            };
            match file.write_all_at(&data, offset) {
                Ok(()) => reply.written(data.len() as u32),
                Err(e) => reply.error(e.raw_os_error().unwrap_or(libc::EIO)),
            }
        }));
    }
}
