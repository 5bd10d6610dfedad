//! The frontend's object: every portal with a backend, exported before the
//! name is claimed, and the watch that ends a caller's requests when it
//! leaves the bus.

use std::sync::Arc;

use futures_util::StreamExt;
use porthole_identity::AppId;
use porthole_service::{Callers, Strict};

use crate::config::PortalConfig;
use crate::file_chooser::{self, FileChooser};
use crate::network_access::{self, NetworkAccess};
use crate::network_monitor::{self, NetworkMonitor};
use crate::open_uri::{self, OpenUri};
use crate::request::Requests;
use crate::settings::{self, Settings};

pub const BUS_NAME: &str = "org.freedesktop.portal.Desktop";
pub const OBJECT_PATH: &str = "/org/freedesktop/portal/desktop";

/// What the portals share.
pub struct Frontend {
    pub callers: Arc<Callers>,
    pub requests: Arc<Requests>,
    /// Upstream's test hook (1.17+): `XDG_DESKTOP_PORTAL_TEST_APP_ID` in the
    /// daemon's own environment makes every caller a host app with that
    /// id (upstream's test app info has no engine, so it is a host app),
    /// so that upstream's test suite can check app ids. Never set in a
    /// session: only whoever starts the daemon can set it.
    pub test_app: Option<AppId>,
}

impl Default for Frontend {
    fn default() -> Self {
        Self {
            callers: Arc::default(),
            requests: Requests::new(),
            test_app: None,
        }
    }
}

impl Frontend {
    /// With the test hook read from the environment (an invalid app id
    /// there is an error, not silently the host).
    pub fn from_env() -> Result<Self, porthole_identity::AppIdError> {
        let test_app = match std::env::var("XDG_DESKTOP_PORTAL_TEST_APP_ID") {
            Ok(id) => {
                let id = AppId::parse(&id)?;
                tracing::warn!(app_id = %id.as_str(), "test hook: every caller is this app");
                Some(id)
            }
            Err(_) => None,
        };
        Ok(Self {
            test_app,
            ..Self::default()
        })
    }
}

/// What [`export`] set up: the portals served, and the work to start
/// once the name is ours.
pub struct Exported {
    pub served: Vec<&'static str>,
    /// Each Settings backend's changes, to send on.
    pub setting_changes: Vec<zbus::proxy::SignalStream<'static>>,
    /// The network state and the kernel's route notifications.
    pub routes: Option<(
        Arc<std::sync::Mutex<network_monitor::State>>,
        tokio::io::unix::AsyncFd<std::os::fd::OwnedFd>,
    )>,
}

/// Exports each portal whose backend interface has a backend (upstream
/// leaves a portal out when nothing implements it).
pub async fn export(
    conn: &zbus::Connection,
    frontend: &Frontend,
    config: &PortalConfig,
) -> zbus::Result<Exported> {
    let server = conn.object_server();
    let mut served = Vec::new();
    let mut setting_changes = Vec::new();
    // NetworkMonitor needs no backend: upstream always serves it.
    let monitor = NetworkMonitor::new(frontend.callers.clone());
    let routes = match network_monitor::route_socket() {
        Ok(socket) => Some((monitor.state.clone(), socket)),
        Err(e) => {
            tracing::warn!("no route notifications (NetworkMonitor will not see changes): {e}");
            None
        }
    };
    server.at(OBJECT_PATH, Strict::new(monitor)).await?;
    served.push(network_monitor::INTERFACE);
    // NetworkAccess1 is always served: without an Access backend nobody can
    // approve, so every destination without a stored grant is refused.
    let access = config
        .find(network_access::ACCESS_INTERFACE)
        .map(|b| b.dbus_name.clone());
    if access.is_none() {
        tracing::warn!(
            "no backend implements {}: only stored network grants hold",
            network_access::ACCESS_INTERFACE
        );
    }
    server
        .at(
            OBJECT_PATH,
            Strict::new(NetworkAccess::new(frontend.callers.clone(), access)),
        )
        .await?;
    served.push(network_access::INTERFACE);
    let backends: Vec<String> = config
        .find_all(settings::IMPL_INTERFACE)
        .iter()
        .map(|b| b.dbus_name.clone())
        .collect();
    if backends.is_empty() {
        tracing::warn!("no backend implements {}", settings::IMPL_INTERFACE);
    } else {
        tracing::info!(?backends, "Settings");
        for backend in &backends {
            setting_changes.push(settings::subscribe_changes(conn, backend).await?);
        }
        server
            .at(OBJECT_PATH, Strict::new(Settings { backends }))
            .await?;
        served.push(settings::INTERFACE);
    }
    match config.find(file_chooser::IMPL_INTERFACE) {
        Some(backend) => {
            tracing::info!(
                "FileChooser: backend {} ({}.portal)",
                backend.dbus_name,
                backend.source
            );
            let portal = FileChooser {
                callers: frontend.callers.clone(),
                requests: frontend.requests.clone(),
                backend: backend.dbus_name.clone(),
                test_app: frontend.test_app.clone(),
                lockdown: config
                    .find(file_chooser::LOCKDOWN_INTERFACE)
                    .map(|b| b.dbus_name.clone()),
            };
            server.at(OBJECT_PATH, Strict::new(portal)).await?;
            served.push(file_chooser::INTERFACE);
        }
        None => tracing::warn!("no backend implements {}", file_chooser::IMPL_INTERFACE),
    }
    match config.find(open_uri::IMPL_INTERFACE) {
        Some(backend) => {
            tracing::info!(
                "OpenURI: backend {} ({}.portal)",
                backend.dbus_name,
                backend.source
            );
            let portal = OpenUri {
                callers: frontend.callers.clone(),
                requests: frontend.requests.clone(),
                backend: backend.dbus_name.clone(),
                test_app: frontend.test_app.clone(),
                lockdown: config
                    .find(open_uri::LOCKDOWN_INTERFACE)
                    .map(|b| b.dbus_name.clone()),
                dirs: crate::config::SearchDirs::from_env(),
            };
            server.at(OBJECT_PATH, Strict::new(portal)).await?;
            served.push(open_uri::INTERFACE);
        }
        None => tracing::warn!("no backend implements {}", open_uri::IMPL_INTERFACE),
    }
    Ok(Exported {
        served,
        setting_changes,
        routes,
    })
}

/// Closes the requests of callers that leave the bus, for as long as the
/// connection lives. Subscribe before the name is claimed
/// ([`subscribe_departures`]) so that no departure is missed.
pub async fn end_requests_of_departed(
    conn: zbus::Connection,
    requests: Arc<Requests>,
    mut departures: zbus::fdo::NameOwnerChangedStream,
) {
    while let Some(signal) = departures.next().await {
        let Ok(args) = signal.args() else { continue };
        let name = args.name().as_str();
        if name.starts_with(':') && args.new_owner().is_none() {
            requests.close_all_of(&conn, name).await;
        }
    }
}

/// The stream of `NameOwnerChanged` for [`end_requests_of_departed`].
pub async fn subscribe_departures(
    conn: &zbus::Connection,
) -> zbus::Result<zbus::fdo::NameOwnerChangedStream> {
    let dbus = zbus::fdo::DBusProxy::new(conn).await?;
    dbus.receive_name_owner_changed().await
}
