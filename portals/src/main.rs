//! `porthole-portals`: the portal frontend.

use anyhow::Context;
use clap::Parser;
use porthole_portals::BUS_NAME;
use porthole_portals::config::{PortalConfig, SearchDirs};
use porthole_portals::desktop::{self, Frontend};
use porthole_portals::{network_monitor, settings};
use porthole_service::{CommonArgs, Daemon};

/// The portal frontend: owns org.freedesktop.portal.Desktop and serves the
/// portals sandboxed apps call (FileChooser, Settings, NetworkMonitor), asking the backends named by
/// the .portal files and portals.conf (XDG_DESKTOP_PORTAL_DIR first, as
/// xdg-desktop-portal). Exits on SIGTERM, SIGHUP or SIGINT.
#[derive(Parser, Debug)]
#[command(version)]
struct Args {
    #[command(flatten)]
    common: CommonArgs,
}

fn main() -> std::process::ExitCode {
    let args = Args::parse();
    porthole_service::logging::init(args.common.verbose);
    porthole_service::block_on(run(args))
}

async fn run(args: Args) -> anyhow::Result<()> {
    let daemon = Daemon::start(BUS_NAME, &args.common)?;
    let config = PortalConfig::load(&SearchDirs::from_env());
    let bus = daemon.connect().await?;
    let frontend = Frontend::from_env().context("XDG_DESKTOP_PORTAL_TEST_APP_ID")?;
    let departures = desktop::subscribe_departures(bus.connection())
        .await
        .context("watching callers leave the bus")?;
    let exported = desktop::export(bus.connection(), &frontend, &config)
        .await
        .context("exporting the portals")?;
    tracing::info!(served = ?exported.served, "portals");
    let requests = frontend.requests.clone();
    bus.serve(move |conn| {
        tokio::spawn(desktop::end_requests_of_departed(
            conn.clone(),
            requests,
            departures,
        ));
        for changes in exported.setting_changes {
            tokio::spawn(settings::forward_changes(conn.clone(), changes));
        }
        if let Some((state, socket)) = exported.routes {
            tokio::spawn(network_monitor::watch(conn.clone(), state, socket));
        }
    })
    .await?;
    Ok(())
}
