//! Busy polling before the event loop sleeps, bounded and adaptive; off
//! unless asked for with `--busy-poll[=USECS]` ([`enable`]).
//!
//! Off by default because it trades CPU time (battery, on a laptop) for
//! microseconds: while one client calls back to back, a spinning proxy
//! uses most of a CPU (measured here: 1.36x xdg-dbus-proxy's CPU time for
//! the same calls, against 0.5-0.9x without, by load). It helps only a
//! client that makes calls back to back on an otherwise idle machine with
//! a spare core (a benchmark, a bulk import over D-Bus); with the client,
//! bus and service sharing the CPUs with other work it buys nothing and
//! turns itself off (see below).
//!
//! Why it can help: most of what a proxy adds to a round trip is not its
//! own work but the wake-ups of a process that had gone to sleep: the
//! reply from the bus
//! arrives some 50-100 us after the call went out, by which time the
//! proxy's CPU has idled, and in a virtual machine an idle vCPU halts, so
//! waking it costs an IPI, an exit to the host and a re-entry (measured
//! here: a round trip with everything on one CPU takes 51 us, spread over
//! two CPUs 100-120 us). Polling the sockets for a few tens of
//! microseconds before sleeping catches the reply (and the client's next
//! call) without that wake-up. Same idea as the kernel's `SO_BUSY_POLL`
//! and the `haltpoll` cpuidle governor, whose window rule this follows.
//!
//! How: the runtime calls [`before_park`] when it is about to block in
//! epoll_wait. The relay sockets (and listeners) are also in a second,
//! level-triggered epoll set of our own; [`before_park`] polls that set
//! without blocking until something is readable or the window ends, then
//! lets the runtime block (its epoll returns at once if something came).
//!
//! Cost bound: the window adapts as in `haltpoll`: it grows when the next
//! event came shortly after the window closed and shrinks when the sleep
//! that followed was long, so an idle proxy spins at most one window after
//! its last message and then not at all, and traffic slower than
//! [`MAX_WINDOW`] between messages shrinks the window to zero. Each poll
//! yields the CPU, so a runnable task on the same CPU (the client the
//! proxy just answered, say) is not kept waiting by the spin, and on a
//! busy CPU the yield hands it to the other work for a time slice, which
//! outlasts the window and so ends the spin.
//!
//! No spin at all while more tasks are runnable than there are CPUs
//! ([`contended`]) or while several clients' messages interleave
//! ([`note_client`]): a spinning task that yields goes to the back of the
//! queue, so there the proxy would answer later than had it slept, and it
//! would take CPU time others want (8 clients at once on 2 CPUs, spinning
//! regardless: 0.65-0.68x of direct calls/s instead of 0.78x; with both
//! checks, the same as without spinning). Ending the spin at a yield that
//! lost the CPU instead does not tell load from our own client, bus and
//! service taking their turn, and lost the whole gain.

use std::cell::Cell;
use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::fs::FileExt;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use tracing::debug;

/// The longest spin by default (`--busy-poll` without a value); events
/// further apart than this are not waited for. It covers a call's trip
/// through the bus and back (50-120 us here); 50 us windows caught too
/// few replies to pay for themselves.
pub const MAX_WINDOW: Duration = Duration::from_micros(200);
/// The longest window `--busy-poll=USECS` accepts.
pub const MAX_WINDOW_LIMIT: Duration = Duration::from_millis(10);
/// The window's first size when it grows from nothing.
const GROW_START: Duration = Duration::from_micros(25);

/// The longest window, set once by [`enable`]; unset: busy polling is off.
static ENABLED: OnceLock<Duration> = OnceLock::new();

/// The level-triggered epoll set polled while spinning (`None`: busy
/// polling is off, or epoll_create1 failed).
static SET: OnceLock<Option<OwnedFd>> = OnceLock::new();

/// Turns busy polling on with windows of at most `max_window` (a zero
/// window leaves it off). Call before the runtime starts; a later call
/// changes nothing.
pub fn enable(max_window: Duration) {
    if !max_window.is_zero() {
        let _ = ENABLED.set(max_window.min(MAX_WINDOW_LIMIT));
    }
}

/// Whether [`enable`] turned busy polling on.
pub fn enabled() -> bool {
    ENABLED.get().is_some()
}

fn max_window() -> Duration {
    ENABLED.get().copied().unwrap_or(Duration::ZERO)
}

fn set() -> Option<&'static OwnedFd> {
    SET.get_or_init(|| {
        if !enabled() {
            return None;
        }
        match epoll_create() {
            Ok(fd) => Some(fd),
            Err(e) => {
                debug!("busy polling off: epoll_create1: {e}");
                None
            }
        }
    })
    .as_ref()
}

fn epoll_create() -> io::Result<OwnedFd> {
    // SAFETY: epoll_create1 takes no pointers; on success the fd is new and
    // owned by nothing else.
    let fd = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` was just created and is owned by nothing else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Adds `fd` to the set polled while spinning. Best effort: a socket left
/// out is still served, only without the spin. No removal is needed: the
/// kernel drops an fd from every epoll set when its file is closed
/// (epoll(7), "Will closing a file descriptor cause it to be removed").
pub fn watch(fd: RawFd) {
    let Some(set) = set() else { return };
    let mut ev = libc::epoll_event {
        events: libc::EPOLLIN as u32,
        u64: fd as u64,
    };
    // SAFETY: epoll_ctl on our epoll fd and an fd the caller keeps open for
    // the call; `ev` lives across the call.
    let r = unsafe { libc::epoll_ctl(set.as_raw_fd(), libc::EPOLL_CTL_ADD, fd, &mut ev) };
    if r < 0 {
        debug!(
            fd,
            "busy polling: epoll_ctl: {}",
            io::Error::last_os_error()
        );
    }
}

/// True when an fd of the set is readable now (epoll_wait, timeout 0).
fn ready(set: &OwnedFd) -> bool {
    let mut ev = libc::epoll_event { events: 0, u64: 0 };
    // SAFETY: room for one event in `ev`, which outlives the call.
    unsafe { libc::epoll_wait(set.as_raw_fd(), &mut ev, 1, 0) > 0 }
}

fn yield_cpu() {
    // SAFETY: sched_yield takes no arguments and cannot fail on Linux.
    unsafe { libc::sched_yield() };
}

/// Messages of different clients closer than this count as concurrent
/// traffic, which turns spinning off for as long again.
const INTERLEAVED: Duration = Duration::from_millis(2);

/// How long a [`contended`] answer is used.
const CONTENTION_CHECK: Duration = Duration::from_millis(1);

/// `/proc/loadavg` kept open, and the CPUs we may run on.
static LOADAVG: OnceLock<Option<(File, usize)>> = OnceLock::new();

/// More tasks runnable right now than CPUs to run them (the count
/// includes the proxy itself). Unknown counts as contended.
fn contended() -> bool {
    let Some((file, cpus)) = LOADAVG
        .get_or_init(|| {
            let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
            File::open("/proc/loadavg").ok().map(|f| (f, cpus))
        })
        .as_ref()
    else {
        return true;
    };
    // "0.52 0.58 0.59 2/84 12345": the fourth field counts runnable tasks
    // (proc_loadavg(5)); a read at offset 0 makes procfs write it anew.
    let mut buf = [0u8; 128];
    let Ok(n) = file.read_at(&mut buf, 0) else {
        return true;
    };
    running_tasks(&buf[..n]).is_none_or(|r| r > *cpus)
}

/// The runnable-task count in `/proc/loadavg`'s text.
fn running_tasks(loadavg: &[u8]) -> Option<usize> {
    let field = loadavg.split(|&b| b == b' ').nth(3)?;
    let running = field.split(|&b| b == b'/').next()?;
    std::str::from_utf8(running).ok()?.parse().ok()
}

/// The next window after a park that lasted `waited` with `window`, at
/// most `max` (haltpoll's rule, `drivers/cpuidle/governors/haltpoll.c`).
fn next_window(window: Duration, waited: Duration, max: Duration) -> Duration {
    if waited <= window {
        // Caught while spinning.
        window
    } else if waited <= max {
        // Came a little after the window closed: widen it.
        (window * 2).max(GROW_START).min(max)
    } else {
        // A long sleep followed: the spin was wasted; narrow it.
        let half = window / 2;
        if half < GROW_START {
            Duration::ZERO
        } else {
            half
        }
    }
}

/// The window rule's state; the runtime runs both hooks on its one thread.
struct Window {
    window: Cell<Duration>,
    /// When the last park began.
    parked_at: Cell<Option<Instant>>,
    /// The last [`contended`] answer and when it was asked.
    contended: Cell<Option<(Instant, bool)>>,
    /// The client whose message was relayed last, and when.
    last_client: Cell<Option<(u64, Instant)>>,
    /// Messages of several clients came close together until then.
    interleaved_until: Cell<Option<Instant>>,
}

thread_local! {
    static WINDOW: Window = const {
        Window {
            window: Cell::new(Duration::ZERO),
            parked_at: Cell::new(None),
            contended: Cell::new(None),
            last_client: Cell::new(None),
            interleaved_until: Cell::new(None),
        }
    };
}

/// The runtime is about to sleep: poll for up to the window first.
pub fn before_park() {
    let Some(set) = set() else { return };
    WINDOW.with(|w| {
        let start = Instant::now();
        w.parked_at.set(Some(start));
        let mut window = w.window.get();
        if w.interleaved_until.get().is_some_and(|t| start < t) {
            window = Duration::ZERO;
        }
        if !window.is_zero() {
            // Reading /proc/loadavg costs about a microsecond: asked at
            // most once per CONTENTION_CHECK, not on every park.
            let busy = match w.contended.get() {
                Some((at, busy)) if start - at < CONTENTION_CHECK => busy,
                _ => {
                    let busy = contended();
                    w.contended.set(Some((start, busy)));
                    busy
                }
            };
            if busy {
                window = Duration::ZERO;
            }
        }
        // Hand-written spin (the point of this module): one epoll_wait
        // with timeout 0 and one sched_yield per turn, about a microsecond
        // each, until the set is readable or the window is over.
        while !window.is_zero() && start.elapsed() < window {
            if ready(set) {
                return;
            }
            yield_cpu();
        }
    });
}

/// A message of `client` (the session's number) is being relayed. Spinning
/// pays for one conversation waiting on its replies; when several clients'
/// messages come within [`INTERLEAVED`] of each other there is work enough
/// to keep the loop awake, and a spin only sets the proxy back in the run
/// queue (8 clients at once lost some 10% of their calls/s to it).
pub fn note_client(client: u64) {
    if !enabled() {
        return;
    }
    WINDOW.with(|w| {
        let now = Instant::now();
        if let Some((last, at)) = w.last_client.replace(Some((client, now)))
            && last != client
            && now - at < INTERLEAVED
        {
            w.interleaved_until.set(Some(now + INTERLEAVED));
        }
    });
}

/// The runtime woke up: adapt the window to how long it waited.
pub fn after_unpark() {
    if set().is_none() {
        return;
    }
    WINDOW.with(|w| {
        if let Some(parked_at) = w.parked_at.take() {
            w.window.set(next_window(
                w.window.get(),
                parked_at.elapsed(),
                max_window(),
            ));
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    const US: Duration = Duration::from_micros(1);

    fn next(window: Duration, waited: Duration) -> Duration {
        next_window(window, waited, MAX_WINDOW)
    }

    #[test]
    fn a_window_below_the_first_step_is_the_limit() {
        // --busy-poll=10: never more than 10 us, whatever the traffic.
        let max = 10 * US;
        assert_eq!(next_window(Duration::ZERO, 8 * US, max), max);
        assert_eq!(next_window(max, 9 * US, max), max);
        assert_eq!(next_window(max, 50 * US, max), Duration::ZERO);
    }

    #[test]
    fn two_clients_at_once_turn_spinning_off() {
        enable(MAX_WINDOW);
        let off = || WINDOW.with(|w| w.interleaved_until.get().is_some());
        note_client(1);
        note_client(1);
        assert!(!off(), "one client's messages");
        note_client(2);
        assert!(off(), "another client's message right after");
    }

    #[test]
    fn runnable_tasks_from_loadavg() {
        assert_eq!(running_tasks(b"0.52 0.58 0.59 2/84 12345\n"), Some(2));
        assert_eq!(running_tasks(b"12.00 8.00 4.00 17/1203 99\n"), Some(17));
        assert_eq!(running_tasks(b"garbage"), None);
    }

    #[test]
    fn window_grows_under_traffic_and_closes_when_idle() {
        // Back-to-back calls, a reply every 80 us: the window opens until
        // it covers the gap (25, 50, 100 us) and stays there while the
        // spins catch the replies.
        let mut w = Duration::ZERO;
        for _ in 0..5 {
            w = next(w, 80 * US);
        }
        assert_eq!(w, 100 * US);
        assert_eq!(next(w, 80 * US), 100 * US);
        // A slower reply widens it to the maximum, no further.
        w = next(w, 150 * US);
        assert_eq!(w, MAX_WINDOW);
        assert_eq!(next(w, 190 * US), MAX_WINDOW);
        // Idle: each long sleep halves it, down to nothing.
        let mut sleeps = 0;
        while !w.is_zero() {
            w = next(w, Duration::from_secs(1));
            sleeps += 1;
        }
        assert!(sleeps <= 4, "{sleeps}");
        // Traffic slower than the maximum never opens it.
        assert_eq!(next(Duration::ZERO, 300 * US), Duration::ZERO);
    }
}
