//! `org.porthole.NetworkAccess1`: network connections the user approves,
//! per app and per destination (DESIGN.md, "Network grants").
//!
//! - `Connect(s host, q port, a{sv} options) -> h`: a TCP connection to
//!   `host:port`, made here (outside the sandbox) once the destination is
//!   approved, handed to the app as a connected socket. The launcher's SOCKS5
//!   endpoint calls it through the instance's D-Bus proxy, so it counts as
//!   the app's own call.
//! - `RequestNetwork(a{sv} options) -> b`: the app-wide question of
//!   `network=ask` metadata (id `*`), asked by the launcher at start.
//!
//! Approval: the permission store's table `network`, id `HOST:PORT`, holds
//! `["yes"]` or `["no"]` for an app (expired grants are not returned by the
//! store). Without an answer there, the Access backend asks the user
//! (`AccessDialog` with one choice, `remember`: `once` or `always`); only
//! `always` is stored. A denial `once` is remembered by the instance for
//! [`DENIAL_MEMORY`], so a retry loop cannot raise a dialog storm, and
//! concurrent requests for one destination of one app share one dialog.
//!
//! DNS rebinding: a grant on a name that looks public (`example.org:443`)
//! was given for wherever that name led then. When it leads to this
//! computer or the local network now, the grant does not cover it: the
//! user is asked again, with the dialog saying the destination is local.
//! An answer given with that warning is stored as `["yes", "local"]` and
//! covers local addresses from then on. IP literals and names that are
//! local by definition (`localhost`, `.local`, `.home.arpa`, single-label
//! names, ...) are exempt: the user saw what they are. Each connection goes
//! to the addresses that were checked, never to a second resolution.
//!
//! The caller comes from the message header (through
//! [`porthole_service::Callers`]), never from an argument: only a sandboxed
//! app can use this interface, and only with its own grants.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::os::fd::OwnedFd;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use porthole_permission_store_client::PermissionStoreProxy;
use porthole_service::{Caller, Callers, PortalError};
use tokio::sync::watch;
use zbus::message::Header;
use zvariant::{OwnedObjectPath, OwnedValue, Value};

pub const INTERFACE: &str = "org.porthole.NetworkAccess1";
pub const ACCESS_INTERFACE: &str = "org.freedesktop.impl.portal.Access";
/// Where backends serve their interfaces.
pub const BACKEND_PATH: &str = "/org/freedesktop/portal/desktop";
/// The permission store's table of network grants.
pub const TABLE: &str = "network";
/// The id of the app-wide answer (`network=ask`).
pub const APP_WIDE: &str = "*";
/// How long a denial "only this time" stands for the instance that gave it.
pub const DENIAL_MEMORY: Duration = Duration::from_secs(60);
/// How long one connection attempt may take before the next address (or
/// the failure).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest host name (RFC 1035: 255 octets on the wire, 253 as text).
pub const MAX_HOST_LEN: usize = 253;

/// Why a destination is refused before anything else happens.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DestinationError {
    #[error("port 0 is not a destination")]
    PortZero,
    #[error("the host name is empty")]
    Empty,
    #[error("the host name is {0} bytes long; at most {MAX_HOST_LEN} are allowed")]
    TooLong(usize),
    #[error("{0:?} is neither an IP address nor a valid host name")]
    BadName(String),
}

/// A destination as the app named it: a host name (ASCII lower case, the
/// way DNS compares names) or an IP literal, and a port.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Destination {
    host: String,
    literal: Option<IpAddr>,
    port: u16,
}

impl Destination {
    /// Checks `host` and `port`. IPv6 literals may come with or without
    /// brackets.
    pub fn parse(host: &str, port: u16) -> Result<Self, DestinationError> {
        if port == 0 {
            return Err(DestinationError::PortZero);
        }
        if host.is_empty() {
            return Err(DestinationError::Empty);
        }
        if host.len() > MAX_HOST_LEN {
            return Err(DestinationError::TooLong(host.len()));
        }
        let bare = host
            .strip_prefix('[')
            .and_then(|h| h.strip_suffix(']'))
            .unwrap_or(host);
        if let Ok(ip) = bare.parse::<IpAddr>() {
            return Ok(Self {
                host: ip.to_string(),
                literal: Some(ip),
                port,
            });
        }
        if !valid_host_name(host) {
            return Err(DestinationError::BadName(host.to_owned()));
        }
        Ok(Self {
            host: host.to_ascii_lowercase(),
            literal: None,
            port,
        })
    }

    /// The permission store id and what the dialog shows: `HOST:PORT`
    /// (`[V6]:PORT` for an IPv6 literal).
    pub fn id(&self) -> String {
        match self.literal {
            Some(IpAddr::V6(_)) => format!("[{}]:{}", self.host, self.port),
            _ => format!("{}:{}", self.host, self.port),
        }
    }

    pub fn host(&self) -> &str {
        &self.host
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The addresses to try: the literal, or what the name resolves to.
    async fn resolve(&self) -> Result<Vec<SocketAddr>, PortalError> {
        if let Some(ip) = self.literal {
            return Ok(vec![SocketAddr::new(ip, self.port)]);
        }
        let found = tokio::net::lookup_host((self.host.as_str(), self.port))
            .await
            .map_err(|e| PortalError::Failed(format!("resolve: {}: {e}", self.host)))?;
        let addrs: Vec<SocketAddr> = found.collect();
        if addrs.is_empty() {
            return Err(PortalError::Failed(format!(
                "resolve: {}: no addresses",
                self.host
            )));
        }
        Ok(addrs)
    }
}

/// The second permission stored with `yes` when the user approved the
/// destination while the dialog said it was local.
pub const LOCAL_PERMISSION: &str = "local";

/// Names that lead to this computer or the local network by definition
/// (RFC 6761 `localhost`, mDNS `.local`, RFC 8375 `.home.arpa`, the common
/// private suffixes, and single-label names, which resolve through the
/// local search domains): approving one, the user knew it was local.
pub fn is_local_name(host: &str) -> bool {
    let name = host.strip_suffix('.').unwrap_or(host);
    !name.contains('.')
        || [
            ".localhost",
            ".local",
            ".home.arpa",
            ".internal",
            ".lan",
            ".intranet",
        ]
        .iter()
        .any(|suffix| name.ends_with(suffix))
}

/// A DNS name in the letters-digits-hyphen form (plus `_`, which real
/// names carry): labels of 1 to 63 bytes, not starting or ending with `-`,
/// an optional final dot.
pub fn valid_host_name(host: &str) -> bool {
    let name = host.strip_suffix('.').unwrap_or(host);
    !name.is_empty()
        && name.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        })
}

/// Loopback, private, link-local, shared (CGNAT) and unspecified
/// addresses: the user's own computer or local network.
pub fn is_local(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            let o = v4.octets();
            v4.is_loopback()
                || v4.is_private()
                || v4.is_link_local()
                || v4.is_unspecified()
                || v4.is_broadcast()
                || (o[0] == 100 && (o[1] & 0xc0) == 64)
        }
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return is_local(IpAddr::V4(v4));
            }
            let first = v6.segments()[0];
            v6.is_loopback()
                || v6.is_unspecified()
                || (first & 0xfe00) == 0xfc00
                || (first & 0xffc0) == 0xfe80
        }
    }
}

/// What the user (or the store) said about one destination.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Decision {
    Allow,
    Deny,
}

/// A stored answer: the decision, and whether an approval covers local
/// addresses (given while the dialog said the destination was local).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Stored {
    decision: Decision,
    local: bool,
}

impl Destination {
    /// Whether an approval of this destination covers `addrs` without
    /// asking again: always for IP literals and local names; for a public
    /// name only while it leads to public addresses, unless the approval
    /// was given for a local destination.
    fn covers(&self, approved_local: bool, addrs: &[SocketAddr]) -> bool {
        approved_local
            || self.literal.is_some()
            || is_local_name(&self.host)
            || !addrs.iter().any(|a| is_local(a.ip()))
    }
}

/// A (app, id) pair: one dialog's key.
type Key = (String, String);

/// What every call shares: the dialogs in flight and the recent denials.
#[derive(Default)]
struct Shared {
    /// Dialogs in flight; later requests for the same key wait on these.
    pending: Mutex<HashMap<Key, watch::Receiver<Option<Decision>>>>,
    /// Denials "only this time", by (instance, id), until when.
    denied: Mutex<HashMap<Key, Instant>>,
    /// Handles of our dialogs: `.../request/network/N`.
    next_handle: AtomicU64,
}

impl Shared {
    fn recently_denied(&self, key: &Key) -> bool {
        let now = Instant::now();
        let mut denied = self.denied.lock().expect("denied lock");
        denied.retain(|_, until| *until > now);
        denied.contains_key(key)
    }
}

/// The interface on the frontend's object.
pub struct NetworkAccess {
    pub callers: Arc<Callers>,
    /// The Access backend's bus name, when there is one.
    pub backend: Option<String>,
    shared: Arc<Shared>,
}

impl NetworkAccess {
    pub fn new(callers: Arc<Callers>, backend: Option<String>) -> Self {
        Self {
            callers,
            backend,
            shared: Arc::default(),
        }
    }
}

/// The sandboxed app behind a call, or NotAllowed.
struct App {
    app_id: String,
    /// The instance (the app id when the info names none): whose denial
    /// memory applies.
    instance: String,
    shared_network: bool,
}

#[zbus::interface(name = "org.porthole.NetworkAccess1")]
impl NetworkAccess {
    /// A connected TCP socket to `host:port`, once the destination is
    /// approved for the calling app.
    async fn connect(
        &self,
        host: &str,
        port: u16,
        options: HashMap<String, OwnedValue>,
        #[zbus(header)] hdr: Header<'_>,
        #[zbus(connection)] conn: &zbus::Connection,
    ) -> Result<zvariant::OwnedFd, PortalError> {
        let _ = options;
        let app = self.app(conn, &hdr).await?;
        let dest = Destination::parse(host, port)
            .map_err(|e| PortalError::InvalidArgument(e.to_string()))?;
        let id = dest.id();
        let resolved = if app.shared_network {
            None
        } else {
            self.approve(conn, &app, &dest).await?
        };
        let addrs = match resolved {
            Some(addrs) => addrs,
            None => dest.resolve().await?,
        };
        let fd = connect_any(&id, &addrs).await?;
        tracing::debug!(app = %app.app_id, destination = %id, "connected");
        Ok(zvariant::OwnedFd::from(fd))
    }

    /// Whether the calling app may use the network at all (`network=ask`):
    /// the stored answer under id `*`, else the user's.
    async fn request_network(
        &self,
        options: HashMap<String, OwnedValue>,
        #[zbus(header)] hdr: Header<'_>,
        #[zbus(connection)] conn: &zbus::Connection,
    ) -> Result<bool, PortalError> {
        let _ = options;
        let app = self.app(conn, &hdr).await?;
        if app.shared_network {
            return Ok(true);
        }
        if let Some(d) = stored(conn, &app.app_id, APP_WIDE).await {
            return Ok(d.decision == Decision::Allow);
        }
        let key = (app.instance.clone(), APP_WIDE.to_owned());
        if self.shared.recently_denied(&key) {
            return Ok(false);
        }
        let question = Question {
            app_id: app.app_id.clone(),
            instance: app.instance.clone(),
            id: APP_WIDE.to_owned(),
            local: false,
            title: format!("Allow {} to use the network?", app.app_id),
            subtitle: format!("{} asks for full network access", app.app_id),
            body: "Without it, the app reaches only the destinations you approve one by one."
                .to_owned(),
        };
        Ok(self.ask(conn, question).await? == Decision::Allow)
    }

    #[zbus(property(emits_changed_signal = "const"), name = "version")]
    fn version(&self) -> u32 {
        1
    }
}

/// One dialog's content and whom it concerns.
struct Question {
    app_id: String,
    instance: String,
    id: String,
    /// Whether the dialog says that a public-looking name leads to a local
    /// address: an approval to remember then covers local addresses
    /// ([`LOCAL_PERMISSION`]).
    local: bool,
    title: String,
    subtitle: String,
    body: String,
}

impl NetworkAccess {
    async fn app(&self, conn: &zbus::Connection, hdr: &Header<'_>) -> Result<App, PortalError> {
        match self.callers.identify(conn, hdr).await.require()? {
            Caller::App {
                app_id,
                instance_id,
                network,
            } => Ok(App {
                app_id: app_id.as_str().to_owned(),
                instance: instance_id
                    .clone()
                    .unwrap_or_else(|| app_id.as_str().to_owned()),
                shared_network: *network,
            }),
            _ => Err(PortalError::NotAllowed(
                "Network grants are for sandboxed apps only".into(),
            )),
        }
    }

    /// Ok when `dest` is approved for the app: stored, app-wide, or asked.
    /// Some(addresses) when they were resolved and checked here: the
    /// connection goes to those, not to a second resolution.
    async fn approve(
        &self,
        conn: &zbus::Connection,
        app: &App,
        dest: &Destination,
    ) -> Result<Option<Vec<SocketAddr>>, PortalError> {
        let id = dest.id();
        let refused = || PortalError::NotAllowed(format!("Network access to {id} is not allowed"));
        let mut addrs = None;
        match stored(conn, &app.app_id, &id).await {
            Some(Stored {
                decision: Decision::Allow,
                local,
            }) => {
                if local || dest.literal.is_some() || is_local_name(&dest.host) {
                    return Ok(None);
                }
                let found = dest.resolve().await?;
                if dest.covers(false, &found) {
                    return Ok(Some(found));
                }
                // Rebinding: approved as a public name, it leads here now.
                tracing::warn!(
                    app = %app.app_id, destination = %id,
                    "approved while public, now resolves to a local address: asking again"
                );
                addrs = Some(found);
            }
            Some(Stored {
                decision: Decision::Deny,
                ..
            }) => return Err(refused()),
            None => {}
        }
        if stored(conn, &app.app_id, APP_WIDE)
            .await
            .is_some_and(|s| s.decision == Decision::Allow)
        {
            return Ok(addrs);
        }
        if self
            .shared
            .recently_denied(&(app.instance.clone(), id.clone()))
        {
            tracing::debug!(destination = %id, "denied by this instance a moment ago");
            return Err(refused());
        }
        // Resolved before asking, so that the dialog can say when a name
        // leads to this computer or the local network.
        let addrs = match addrs {
            Some(a) => a,
            None => dest.resolve().await?,
        };
        let local = addrs.iter().any(|a| is_local(a.ip()));
        let where_ = if local {
            format!("{id}, a local destination (this computer or its local network)")
        } else {
            id.clone()
        };
        let question = Question {
            app_id: app.app_id.clone(),
            instance: app.instance.clone(),
            id: id.clone(),
            // Only a public-looking name needs the mark: literals and
            // local names are covered as they are.
            local: local && !dest.covers(false, &addrs),
            title: format!("Allow {} to connect to {id}?", app.app_id),
            subtitle: format!("{} wants to connect to {where_}", app.app_id),
            body: "The app reaches this destination only; other destinations are asked for separately."
                .to_owned(),
        };
        match self.ask(conn, question).await? {
            Decision::Allow => Ok(Some(addrs)),
            Decision::Deny => Err(refused()),
        }
    }

    /// The user's answer, through one dialog per (app, id) however many
    /// requests wait for it.
    async fn ask(
        &self,
        conn: &zbus::Connection,
        question: Question,
    ) -> Result<Decision, PortalError> {
        let Some(backend) = self.backend.clone() else {
            tracing::warn!(
                "no backend implements {ACCESS_INTERFACE}: network access to {} refused",
                question.id
            );
            return Ok(Decision::Deny);
        };
        let key = (question.app_id.clone(), question.id.clone());
        let mut rx = {
            let mut pending = self.shared.pending.lock().expect("pending lock");
            match pending.get(&key) {
                Some(rx) => rx.clone(),
                None => {
                    let (tx, rx) = watch::channel(None);
                    pending.insert(key.clone(), rx.clone());
                    // On its own task: a caller that goes away must not
                    // take the dialog, and the others' answer, with it.
                    let shared = self.shared.clone();
                    let conn = conn.clone();
                    tokio::spawn(async move {
                        let decision = dialog(&conn, &backend, &shared, &question).await;
                        // Answer first: a request that finds the entry
                        // until it goes gets this answer, not a new dialog.
                        let _ = tx.send(Some(decision));
                        shared.pending.lock().expect("pending lock").remove(&key);
                    });
                    rx
                }
            }
        };
        let answered = rx
            .wait_for(Option::is_some)
            .await
            .map(|d| d.unwrap_or(Decision::Deny));
        answered.map_err(|_| PortalError::Failed("the dialog ended without an answer".into()))
    }
}

/// The permission store, without the property cache (one call fewer).
async fn store(conn: &zbus::Connection) -> zbus::Result<PermissionStoreProxy<'static>> {
    PermissionStoreProxy::builder(conn)
        .cache_properties(zbus::proxy::CacheProperties::No)
        .build()
        .await
}

/// What the store holds for `app` on `id` (None: nothing, or no store).
async fn stored(conn: &zbus::Connection, app: &str, id: &str) -> Option<Stored> {
    let store = match store(conn).await {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!("permission store proxy: {e}");
            return None;
        }
    };
    // A missing id is an error (NotFound) from the store: no answer.
    let (apps, _) = match store.lookup(TABLE, id).await {
        Ok(found) => found,
        Err(e) => {
            tracing::trace!(id, "no stored answer: {e}");
            return None;
        }
    };
    parse_stored(apps.get(app)?)
}

/// `["yes"]`, `["yes", "local"]` or `["no"]` as a [`Stored`]; anything
/// else is no answer.
fn parse_stored(perms: &[String]) -> Option<Stored> {
    let decision = if perms.iter().any(|p| p == "yes") {
        Decision::Allow
    } else if perms.iter().any(|p| p == "no") {
        Decision::Deny
    } else {
        return None;
    };
    Some(Stored {
        decision,
        local: perms.iter().any(|p| p == LOCAL_PERMISSION),
    })
}

/// A dialog choice as the Access backend takes it: `(ssa(ss)s)`.
type Choice<'a> = (&'a str, &'a str, Vec<(&'a str, &'a str)>, &'a str);

/// Asks the backend, stores an answer to remember, notes a denial once.
async fn dialog(conn: &zbus::Connection, backend: &str, shared: &Shared, q: &Question) -> Decision {
    let n = shared.next_handle.fetch_add(1, Ordering::Relaxed);
    let handle = match OwnedObjectPath::try_from(format!(
        "/org/freedesktop/portal/desktop/request/network/n{n}"
    )) {
        Ok(h) => h,
        Err(e) => {
            tracing::error!("dialog handle: {e}");
            return Decision::Deny;
        }
    };
    let choices: Vec<Choice<'_>> = vec![(
        "remember",
        "Remember",
        vec![
            ("once", "Only this time"),
            ("always", "Always for this app"),
        ],
        "once",
    )];
    let mut options: HashMap<&str, Value<'_>> = HashMap::new();
    options.insert("choices", Value::from(choices));
    options.insert("grant_label", Value::from("Allow"));
    options.insert("deny_label", Value::from("Deny"));
    tracing::info!(app = %q.app_id, id = %q.id, "asking the user");
    let reply = conn
        .call_method(
            Some(backend),
            BACKEND_PATH,
            Some(ACCESS_INTERFACE),
            "AccessDialog",
            &(
                &handle,
                q.app_id.as_str(),
                "",
                q.title.as_str(),
                q.subtitle.as_str(),
                q.body.as_str(),
                options,
            ),
        )
        .await;
    let (response, results) =
        match reply.and_then(|m| m.body().deserialize::<(u32, HashMap<String, OwnedValue>)>()) {
            Ok(answer) => answer,
            Err(e) => {
                tracing::warn!(id = %q.id, "Access backend failed: {e}");
                return Decision::Deny;
            }
        };
    let remember = results
        .get("choices")
        .and_then(|v| <Vec<(String, String)>>::try_from(v.clone()).ok())
        .and_then(|c| c.into_iter().find(|(id, _)| id == "remember"))
        .map(|(_, option)| option);
    let always = remember.as_deref() == Some("always");
    let decision = match response {
        0 => Decision::Allow,
        1 => Decision::Deny,
        // Closed, or the backend failed: nothing said, nothing kept.
        _ => {
            tracing::info!(app = %q.app_id, id = %q.id, response, "dialog ended without an answer");
            return Decision::Deny;
        }
    };
    tracing::info!(app = %q.app_id, id = %q.id, ?decision, always, "answered");
    if always {
        let perms: &[&str] = match decision {
            Decision::Allow if q.local => &["yes", LOCAL_PERMISSION],
            Decision::Allow => &["yes"],
            Decision::Deny => &["no"],
        };
        match store(conn).await {
            Ok(store) => {
                if let Err(e) = store
                    .set_permission(TABLE, true, &q.id, &q.app_id, perms)
                    .await
                {
                    tracing::warn!(id = %q.id, "storing the answer: {e}");
                }
            }
            Err(e) => tracing::warn!("permission store proxy: {e}"),
        }
    } else if decision == Decision::Deny {
        shared.denied.lock().expect("denied lock").insert(
            (q.instance.clone(), q.id.clone()),
            Instant::now() + DENIAL_MEMORY,
        );
    }
    decision
}

/// Connects to the first address that answers. Failures are named with a
/// word the SOCKS5 endpoint maps to its reply codes: `refused:`,
/// `unreachable:`, `timeout:`.
async fn connect_any(id: &str, addrs: &[SocketAddr]) -> Result<OwnedFd, PortalError> {
    let mut last = PortalError::Failed(format!("unreachable: {id}: no addresses"));
    for addr in addrs {
        match tokio::time::timeout(CONNECT_TIMEOUT, tokio::net::TcpStream::connect(addr)).await {
            Ok(Ok(stream)) => {
                let std = stream
                    .into_std()
                    .map_err(|e| PortalError::Failed(format!("unreachable: {id}: {e}")))?;
                // The app gets an ordinary blocking socket.
                std.set_nonblocking(false)
                    .map_err(|e| PortalError::Failed(format!("unreachable: {id}: {e}")))?;
                return Ok(OwnedFd::from(std));
            }
            Ok(Err(e)) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
                last = PortalError::Failed(format!("refused: {id}: {e}"));
            }
            Ok(Err(e)) => last = PortalError::Failed(format!("unreachable: {id}: {e}")),
            Err(_) => {
                last = PortalError::Failed(format!(
                    "timeout: {id}: no answer within {} s",
                    CONNECT_TIMEOUT.as_secs()
                ))
            }
        }
    }
    Err(last)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn destinations_are_checked_and_named_as_written() {
        let d = Destination::parse("Example.ORG", 443).unwrap();
        assert_eq!(d.id(), "example.org:443");
        assert_eq!(Destination::parse("::1", 80).unwrap().id(), "[::1]:80");
        assert_eq!(Destination::parse("[::1]", 80).unwrap().id(), "[::1]:80");
        assert_eq!(
            Destination::parse("127.0.0.1", 8080).unwrap().id(),
            "127.0.0.1:8080"
        );
        assert_eq!(Destination::parse("a", 0), Err(DestinationError::PortZero));
        assert_eq!(Destination::parse("", 1), Err(DestinationError::Empty));
        let long = "a".repeat(255);
        assert_eq!(
            Destination::parse(&long, 1),
            Err(DestinationError::TooLong(255))
        );
        for bad in [
            "a b", "-a.org", "a..b", "a/b", "a:b", "x\0y", "é.org", "[1.2.3.4",
        ] {
            assert!(
                matches!(
                    Destination::parse(bad, 1),
                    Err(DestinationError::BadName(_))
                ),
                "{bad:?}"
            );
        }
        let label = "a".repeat(64);
        assert!(Destination::parse(&label, 1).is_err());
        assert!(Destination::parse("host.example.", 1).is_ok());
    }

    #[test]
    fn a_public_name_approval_does_not_cover_local_addresses() {
        let public: Vec<SocketAddr> = vec!["93.184.215.14:443".parse().unwrap()];
        let here: Vec<SocketAddr> = vec![
            "93.184.215.14:443".parse().unwrap(),
            "127.0.0.1:443".parse().unwrap(),
        ];
        let name = Destination::parse("www.example.org", 443).unwrap();
        assert!(name.covers(false, &public));
        assert!(!name.covers(false, &here), "rebinding: asked again");
        assert!(name.covers(true, &here), "approved as local");
        for exempt in [
            "127.0.0.1",
            "localhost",
            "printer.local",
            "nas.home.arpa",
            "router",
        ] {
            let d = Destination::parse(exempt, 80).unwrap();
            assert!(d.covers(false, &here), "{exempt}");
        }
        for public in ["example.org", "local.example.org", "localhost.example.org"] {
            assert!(!is_local_name(public), "{public}");
        }
        for local in [
            "localhost",
            "localhost.",
            "a.localhost",
            "box.local",
            "x.home.arpa",
            "nas",
        ] {
            assert!(is_local_name(local), "{local}");
        }
    }

    #[test]
    fn stored_answers_parse() {
        let s = |p: &[&str]| parse_stored(&p.iter().map(|x| x.to_string()).collect::<Vec<_>>());
        assert_eq!(
            s(&["yes"]),
            Some(Stored {
                decision: Decision::Allow,
                local: false
            })
        );
        assert_eq!(
            s(&["yes", "local"]),
            Some(Stored {
                decision: Decision::Allow,
                local: true
            })
        );
        assert_eq!(s(&["no"]).map(|x| x.decision), Some(Decision::Deny));
        assert_eq!(s(&[]), None);
        assert_eq!(s(&["maybe"]), None);
    }

    #[test]
    fn local_addresses_are_recognised() {
        for local in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.1.1",
            "100.64.0.1",
            "0.0.0.0",
            "::1",
            "fd00::1",
            "fe80::1",
            "::ffff:127.0.0.1",
        ] {
            assert!(is_local(local.parse().unwrap()), "{local}");
        }
        for public in ["1.1.1.1", "172.32.0.1", "100.128.0.1", "2001:db8::1"] {
            assert!(!is_local(public.parse().unwrap()), "{public}");
        }
    }
}
