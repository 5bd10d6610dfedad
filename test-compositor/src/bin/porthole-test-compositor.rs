//! `porthole-test-compositor SOCKET [--no-security-context]`: serves the
//! test compositor on the socket path SOCKET until killed, printing one line
//! per event (`committed`, `connected`, `closed`, `disconnected`, each with
//! engine=, app_id= and instance_id=) for benchmarks and manual runs; tests
//! use the library in-process.

use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;

use porthole_test_compositor::{Compositor, Event};

fn main() {
    let mut args = std::env::args_os().skip(1);
    let Some(socket) = args.next().map(PathBuf::from) else {
        eprintln!("usage: porthole-test-compositor SOCKET [--no-security-context]");
        std::process::exit(2);
    };
    let offer = args.next().is_none_or(|a| a != "--no-security-context");
    let compositor = match Compositor::start(&socket, offer) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("porthole-test-compositor: {}: {e}", socket.display());
            std::process::exit(1);
        }
    };
    let mut printed = 0;
    loop {
        let events = compositor.events_after(printed, Duration::from_secs(3600));
        let mut out = std::io::stdout().lock();
        for e in &events {
            let (what, m) = match e {
                Event::Committed(m) => ("committed", m),
                Event::Connected(m) => ("connected", m),
                Event::Closed(m) => ("closed", m),
                Event::Disconnected(m) => ("disconnected", m),
            };
            let _ = writeln!(
                out,
                "{what} engine={} app_id={} instance_id={}",
                m.engine.as_deref().unwrap_or(""),
                m.app_id.as_deref().unwrap_or(""),
                m.instance_id.as_deref().unwrap_or("")
            );
        }
        let _ = out.flush();
        printed += events.len();
    }
}
