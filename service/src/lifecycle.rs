//! A daemon's life on the session bus, in the order upstream's daemons
//! keep and clients rely on:
//!
//! 1. signal handlers first ([`Daemon::start`]): whoever sees the name may
//!    signal us at once, and the default action would end us uncleanly;
//! 2. connect ([`Daemon::connect`]), then the service exports its objects,
//!    so no call can reach a missing object;
//! 3. `RequestName` with `AllowReplacement | DoNotQueue` (plus
//!    `ReplaceExisting` with `--replace`), as xdg-permission-store and
//!    xdg-desktop-portal do ([`Connected::serve`]);
//! 4. run until SIGTERM, SIGHUP (how upstream's test suite stops daemons) or
//!    SIGINT, until `NameLost` (a `--replace` took over) or until the bus
//!    goes away; then return, and [`block_on`] exits 0 without waiting for
//!    blocking threads stuck in a caller's file.

use std::future::Future;
use std::process::ExitCode;
use std::time::Duration;

use futures_util::StreamExt;
use tokio::signal::unix::{Signal, SignalKind, signal};
use zbus::fdo::{DBusProxy, RequestNameFlags, RequestNameReply};
use zbus::names::WellKnownName;

/// The options every daemon takes (flatten into the binary's clap struct).
#[derive(clap::Args, Debug, Clone, Default)]
pub struct CommonArgs {
    /// Replace a running instance that owns the bus name.
    #[arg(short, long)]
    pub replace: bool,
    /// Log debug messages (RUST_LOG overrides).
    #[arg(short, long)]
    pub verbose: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum LifecycleError {
    #[error("installing the {signal} handler: {source}")]
    Signal {
        signal: &'static str,
        source: std::io::Error,
    },
    #[error("{0:?} is not a well-known bus name: {1}")]
    BadName(String, Box<zbus::names::Error>),
    #[error("no session bus address: {0}")]
    NoSessionBus(Box<zbus::Error>),
    #[error("connecting to the session bus: {0}")]
    Connect(Box<zbus::Error>),
    #[error("watching for NameLost: {0}")]
    Watch(Box<zbus::Error>),
    #[error("requesting {name}: {source}")]
    RequestName {
        name: String,
        source: Box<zbus::fdo::Error>,
    },
    #[error("{name} is already owned ({reply}); use --replace to take it over")]
    NameTaken { name: String, reply: String },
}

/// Why [`Connected::serve`] returned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ended {
    Signal(&'static str),
    /// Another instance took the name over (`--replace`).
    NameLost,
    BusClosed,
}

/// SIGTERM, SIGHUP and SIGINT, each caught from the moment of install.
struct Signals {
    term: Signal,
    hup: Signal,
    int: Signal,
}

impl Signals {
    fn install() -> Result<Self, LifecycleError> {
        let one = |kind, name| {
            signal(kind).map_err(|source| LifecycleError::Signal {
                signal: name,
                source,
            })
        };
        Ok(Self {
            term: one(SignalKind::terminate(), "SIGTERM")?,
            hup: one(SignalKind::hangup(), "SIGHUP")?,
            int: one(SignalKind::interrupt(), "SIGINT")?,
        })
    }

    async fn recv(&mut self) -> &'static str {
        tokio::select! {
            _ = self.term.recv() => "SIGTERM",
            _ = self.hup.recv() => "SIGHUP",
            _ = self.int.recv() => "SIGINT",
        }
    }
}

/// A daemon that will own `bus_name`, from before it connects.
pub struct Daemon {
    name: WellKnownName<'static>,
    replace: bool,
    signals: Signals,
}

impl Daemon {
    /// Installs the signal handlers. Call it first, inside the runtime.
    pub fn start(bus_name: &str, args: &CommonArgs) -> Result<Self, LifecycleError> {
        let signals = Signals::install()?;
        let name = WellKnownName::try_from(bus_name.to_owned())
            .map_err(|e| LifecycleError::BadName(bus_name.to_owned(), Box::new(e)))?;
        Ok(Self {
            name,
            replace: args.replace,
            signals,
        })
    }

    /// Connects to the session bus (`DBUS_SESSION_BUS_ADDRESS`). Export the
    /// service's objects on the returned connection before
    /// [`Connected::serve`].
    pub async fn connect(self) -> Result<Connected, LifecycleError> {
        let conn = zbus::connection::Builder::session()
            .map_err(|e| LifecycleError::NoSessionBus(Box::new(e)))?
            .build()
            .await
            .map_err(|e| LifecycleError::Connect(Box::new(e)))?;
        Ok(Connected { daemon: self, conn })
    }
}

/// Connected, not yet owning the name.
pub struct Connected {
    daemon: Daemon,
    conn: zbus::Connection,
}

impl Connected {
    pub fn connection(&self) -> &zbus::Connection {
        &self.conn
    }

    /// Claims the name, calls `serving` (to start work that may emit
    /// signals under the name), then waits for a reason to exit.
    pub async fn serve(
        self,
        serving: impl FnOnce(&zbus::Connection),
    ) -> Result<Ended, LifecycleError> {
        let Connected { mut daemon, conn } = self;
        let name = daemon.name.clone();
        let dbus = DBusProxy::new(&conn)
            .await
            .map_err(|e| LifecycleError::Watch(Box::new(e)))?;
        // Subscribed before the request, so a takeover right after it is seen.
        let mut lost = dbus
            .receive_name_lost()
            .await
            .map_err(|e| LifecycleError::Watch(Box::new(e)))?;
        let mut flags = RequestNameFlags::AllowReplacement | RequestNameFlags::DoNotQueue;
        if daemon.replace {
            flags |= RequestNameFlags::ReplaceExisting;
        }
        let reply = dbus
            .request_name(name.as_ref(), flags)
            .await
            .map_err(|source| LifecycleError::RequestName {
                name: name.to_string(),
                source: Box::new(source),
            })?;
        match reply {
            RequestNameReply::PrimaryOwner | RequestNameReply::AlreadyOwner => {}
            other => {
                return Err(LifecycleError::NameTaken {
                    name: name.to_string(),
                    reply: format!("{other:?}"),
                });
            }
        }
        tracing::info!("serving {name}");
        serving(&conn);
        let ended = loop {
            tokio::select! {
                sig = daemon.signals.recv() => break Ended::Signal(sig),
                lost = lost.next() => match lost {
                    Some(sig) if sig.args().is_ok_and(|a| a.name == name) => break Ended::NameLost,
                    Some(_) => {}
                    None => break Ended::BusClosed,
                },
            }
        };
        match ended {
            Ended::Signal(sig) => tracing::info!("{sig}: exiting"),
            Ended::NameLost => tracing::info!("lost {name} to another instance: exiting"),
            Ended::BusClosed => tracing::info!("the bus connection closed: exiting"),
        }
        Ok(ended)
    }
}

/// How long the runtime waits at exit for blocking threads. A caller's
/// `.flatpak-info` read that never returns (a FUSE file) keeps its thread;
/// the exit must not wait for it.
const SHUTDOWN_TIMEOUT: Duration = Duration::from_millis(100);

/// Runs a daemon's async main on one thread and turns its result into the
/// exit status, logging the error.
///
/// One scheduler thread: a service's work per call is small, and a single
/// thread saves cross-thread wake-ups per call; blocking work (SQLite,
/// caller files) runs on the runtime's blocking threads.
pub fn block_on<E: std::fmt::Display>(main: impl Future<Output = Result<(), E>>) -> ExitCode {
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            tracing::error!("cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = rt.block_on(main);
    rt.shutdown_timeout(SHUTDOWN_TIMEOUT);
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e:#}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    #[derive(Parser)]
    struct Args {
        #[command(flatten)]
        common: super::CommonArgs,
    }

    #[test]
    fn common_args_take_upstreams_short_and_long_forms() {
        let a = Args::try_parse_from(["d", "-r", "-v"]).unwrap();
        assert!(a.common.replace && a.common.verbose);
        let a = Args::try_parse_from(["d", "--replace"]).unwrap();
        assert!(a.common.replace && !a.common.verbose);
        assert!(Args::try_parse_from(["d", "--bogus"]).is_err());
    }
}
