//! `porthole-dbus-proxy ADDRESS PATH [OPTION...] ...`: see [`porthole_dbus_proxy::cli`].

use std::os::fd::RawFd;
use std::path::PathBuf;

use anyhow::Context;
use porthole_dbus_proxy::{Listener, busy_poll, cli};

fn main() -> std::process::ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        // Colour codes only for a terminal, not for a log file or the journal.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    match run() {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("porthole-dbus-proxy: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn run() -> anyhow::Result<()> {
    let args = cli::parse(std::env::args().skip(1))?;
    if args.help {
        print!("{}", cli::USAGE);
        return Ok(());
    }
    if args.version {
        println!("porthole-dbus-proxy {}", env!("CARGO_PKG_VERSION"));
        return Ok(());
    }
    // One thread: the proxy is I/O bound and a single event loop gives the
    // lowest latency on a loaded machine, as upstream's GLib main loop.
    let mut rt = tokio::runtime::Builder::new_current_thread();
    rt.enable_all();
    // Spinning only when asked for: it costs a CPU while a client waits.
    if let Some(window) = args.busy_poll {
        busy_poll::enable(window);
        rt.on_thread_park(busy_poll::before_park)
            .on_thread_unpark(busy_poll::after_unpark);
    }
    let rt = rt.build().context("starting the runtime")?;
    rt.block_on(async move {
        let mut paths: Vec<PathBuf> = Vec::new();
        let mut listeners = Vec::new();
        for spec in &args.proxies {
            let l = Listener::bind(spec)?;
            paths.push(l.path().to_owned());
            listeners.push(l);
        }
        for l in listeners {
            tokio::spawn(l.run());
        }
        if let Some(fd) = args.sync_fd {
            sync_fd_ready(fd, paths);
        }
        std::future::pending::<()>().await;
        Ok(())
    })
}

/// `--fd`: write one byte once listening, then exit when the other end
/// closes (as xdg-dbus-proxy: a watch for HUP/ERR on the fd).
fn sync_fd_ready(fd: RawFd, paths: Vec<PathBuf>) {
    // SAFETY: write(2) on an fd the caller gave us; a 1-byte buffer that
    // lives across the call.
    let n = unsafe { libc::write(fd, b"x".as_ptr().cast(), 1) };
    if n != 1 {
        tracing::warn!("can't write to sync fd {fd}");
    }
    std::thread::spawn(move || {
        loop {
            let mut p = libc::pollfd {
                fd,
                events: 0,
                revents: 0,
            };
            // SAFETY: poll(2) on one pollfd we own for the call's duration.
            let r = unsafe { libc::poll(&mut p, 1, -1) };
            if r < 0 && std::io::Error::last_os_error().kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            if r < 0 || p.revents & (libc::POLLHUP | libc::POLLERR | libc::POLLNVAL) != 0 {
                break;
            }
        }
        for p in &paths {
            let _ = std::fs::remove_file(p);
        }
        std::process::exit(0);
    });
}
