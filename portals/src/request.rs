//! `org.freedesktop.portal.Request`, as upstream runs it
//! (`xdp-request.c`).
//!
//! An interactive method replies at once with a handle,
//! `/org/freedesktop/portal/desktop/request/SENDER/TOKEN` (SENDER the
//! caller's unique name without `:`, `.` made `_`; TOKEN the `handle_token`
//! option or `t`), exported before the reply and before any work, so a
//! client that subscribed to `Response` on that path in advance never
//! misses it. The work runs as an abortable task. The result reaches only
//! the caller: `Response(u, a{sv})` sent to its unique name, then the object
//! goes. `Close` (from the caller only) ends the request without a
//! `Response` and closes the backend's dialog; so does the caller leaving
//! the bus.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use porthole_service::PortalError;
use tokio::task::JoinHandle;
use zbus::message::Header;
use zbus::object_server::SignalEmitter;
use zvariant::{ObjectPath, OwnedObjectPath, OwnedValue, Value};

pub const INTERFACE: &str = "org.freedesktop.portal.Request";
pub const IMPL_INTERFACE: &str = "org.freedesktop.impl.portal.Request";
pub const PREFIX: &str = "/org/freedesktop/portal/desktop/request";

/// Response codes.
pub const SUCCESS: u32 = 0;
pub const CANCELLED: u32 = 1;
pub const OTHER: u32 = 2;

/// A caller's unique name as a path element: `:1.42` -> `1_42`.
pub fn sender_element(sender: &str) -> String {
    sender.trim_start_matches(':').replace('.', "_")
}

/// Upstream's `xdp_is_valid_token`: `[A-Za-z0-9_]+`.
pub fn valid_token(token: &str) -> bool {
    !token.is_empty()
        && token
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

/// The token from an options dictionary: `handle_token`, or `t` when it
/// is missing or not a string (upstream looks it up with type `s`).
pub fn token_of(options: &HashMap<String, OwnedValue>) -> Result<String, PortalError> {
    let token = match options.get("handle_token").map(|v| &**v) {
        Some(Value::Str(s)) => s.as_str().to_owned(),
        _ => "t".to_owned(),
    };
    if !valid_token(&token) {
        return Err(PortalError::InvalidArgument(format!(
            "Invalid token: {token}"
        )));
    }
    Ok(token)
}

/// The backend side of a request: whom to tell when it is closed.
#[derive(Debug, Clone)]
pub struct BackendHandle {
    pub bus_name: String,
    /// Set by the request's work just before it asks the backend: from
    /// then on the backend may be showing a dialog to close.
    pub asked: Arc<AtomicBool>,
}

impl BackendHandle {
    pub fn new(bus_name: String) -> Self {
        Self {
            bus_name,
            asked: Arc::default(),
        }
    }
}

struct Entry {
    sender: String,
    task: Option<JoinHandle<()>>,
    backend: Option<BackendHandle>,
}

/// Every live request of this frontend.
#[derive(Default)]
pub struct Requests {
    live: Mutex<HashMap<String, Entry>>,
}

impl Requests {
    pub fn new() -> Arc<Self> {
        Arc::default()
    }

    /// How many requests are live (for tests and logs).
    pub fn len(&self) -> usize {
        self.live.lock().expect("requests lock").len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Creates and exports the request object for `sender` and `token`.
    /// The path is upstream's formula; only when it is taken does a random
    /// element follow, as upstream does.
    pub async fn create(
        self: &Arc<Self>,
        conn: &zbus::Connection,
        sender: &str,
        token: &str,
        backend: Option<BackendHandle>,
    ) -> Result<OwnedObjectPath, PortalError> {
        let base = format!("{PREFIX}/{}/{token}", sender_element(sender));
        let mut path = base.clone();
        loop {
            {
                let mut live = self.live.lock().expect("requests lock");
                if !live.contains_key(&path) {
                    live.insert(
                        path.clone(),
                        Entry {
                            sender: sender.to_owned(),
                            task: None,
                            backend: backend.clone(),
                        },
                    );
                    break;
                }
            }
            path = format!("{base}/{}", random_u32());
        }
        let object_path = OwnedObjectPath::try_from(path.clone())
            .map_err(|e| PortalError::InvalidArgument(format!("Invalid token: {e}")))?;
        let object = Request {
            owner: sender.to_owned(),
            requests: self.clone(),
        };
        match conn.object_server().at(object_path.as_ref(), object).await {
            Ok(true) => Ok(object_path),
            Ok(false) | Err(_) => {
                self.live.lock().expect("requests lock").remove(&path);
                Err(PortalError::Failed("Could not export the request".into()))
            }
        }
    }

    /// Attaches the request's work, so Close and the caller leaving abort
    /// it. A request that already ended is left alone.
    pub fn set_task(&self, path: &ObjectPath<'_>, task: JoinHandle<()>) {
        if let Some(entry) = self
            .live
            .lock()
            .expect("requests lock")
            .get_mut(path.as_str())
        {
            entry.task = Some(task);
        }
    }

    /// Ends a request with its result: `Response` to the caller alone,
    /// then the object goes. Nothing is sent when the request was closed
    /// meanwhile.
    pub async fn respond(
        &self,
        conn: &zbus::Connection,
        path: &ObjectPath<'_>,
        response: u32,
        results: HashMap<String, OwnedValue>,
    ) {
        let Some(entry) = self
            .live
            .lock()
            .expect("requests lock")
            .remove(path.as_str())
        else {
            return;
        };
        let emitted = conn
            .emit_signal(
                Some(entry.sender.as_str()),
                path,
                INTERFACE,
                "Response",
                &(response, results),
            )
            .await;
        if let Err(e) = emitted {
            tracing::warn!(%path, "emitting Response: {e}");
        }
        unexport(conn, path).await;
    }

    /// Ends a request without a `Response`: aborts its work, closes the
    /// backend's dialog, unexports. Returns whether it was live.
    pub async fn close(&self, conn: &zbus::Connection, path: &ObjectPath<'_>) -> bool {
        let Some(entry) = self
            .live
            .lock()
            .expect("requests lock")
            .remove(path.as_str())
        else {
            return false;
        };
        end(conn, path, entry).await;
        true
    }

    /// Closes every request of a caller that left the bus.
    pub async fn close_all_of(&self, conn: &zbus::Connection, sender: &str) {
        let ended: Vec<(String, Entry)> = {
            let mut live = self.live.lock().expect("requests lock");
            let paths: Vec<String> = live
                .iter()
                .filter(|(_, e)| e.sender == sender)
                .map(|(p, _)| p.clone())
                .collect();
            paths
                .into_iter()
                .filter_map(|p| live.remove(&p).map(|e| (p, e)))
                .collect()
        };
        for (path, entry) in ended {
            tracing::debug!(%path, %sender, "the caller left: closing its request");
            if let Ok(path) = ObjectPath::try_from(path.as_str()) {
                end(conn, &path, entry).await;
            }
        }
    }
}

async fn end(conn: &zbus::Connection, path: &ObjectPath<'_>, entry: Entry) {
    stop(conn, path, entry).await;
    unexport(conn, path).await;
}

/// Aborts a request's work and closes the backend's dialog.
///
/// The work is awaited until it has stopped before the backend hears the
/// Close: a call to the backend that the work had begun to send is then on
/// the wire before the Close, on the same connection, and a backend that
/// exports the dialog's Request before it reads its next message (ours,
/// xdg-desktop-portal-gtk) always finds it. One Close, no retries.
async fn stop(conn: &zbus::Connection, path: &ObjectPath<'_>, entry: Entry) {
    if let Some(task) = entry.task {
        task.abort();
        // Cancelled at its next await; a task that already ended returns
        // at once.
        let _ = task.await;
    }
    let Some(backend) = entry.backend else {
        return;
    };
    if !backend.asked.load(Ordering::SeqCst) {
        // The work stopped before it asked: no dialog to close.
        return;
    }
    if let Err(e) = close_backend(conn, &backend.bus_name, path).await {
        // The dialog ended on its own meanwhile (UnknownObject).
        tracing::debug!(%path, "closing the backend's request: {e}");
    }
}

async fn close_backend(
    conn: &zbus::Connection,
    bus_name: &str,
    path: &ObjectPath<'_>,
) -> zbus::Result<()> {
    conn.call_method(Some(bus_name), path, Some(IMPL_INTERFACE), "Close", &())
        .await
        .map(|_| ())
}

async fn unexport(conn: &zbus::Connection, path: &ObjectPath<'_>) {
    if let Err(e) = conn.object_server().remove::<Request, _>(path).await {
        tracing::debug!(%path, "unexporting the request: {e}");
    }
}

/// A random path element for a taken path. Not a secret (the request
/// paths are guessable by design; only the caller may close or hear its
/// request): std's per-process random hash keys are enough.
fn random_u32() -> u32 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64),
    );
    h.finish() as u32
}

/// The exported request object.
pub struct Request {
    owner: String,
    requests: Arc<Requests>,
}

#[zbus::interface(name = "org.freedesktop.portal.Request")]
impl Request {
    /// Only the caller that made the request may close it.
    async fn close(
        &self,
        #[zbus(header)] hdr: Header<'_>,
        #[zbus(connection)] conn: &zbus::Connection,
    ) -> zbus::fdo::Result<()> {
        if hdr.sender().map(|s| s.as_str()) != Some(self.owner.as_str()) {
            return Err(zbus::fdo::Error::AccessDenied(
                "Portal operation not allowed: Unmatched caller".into(),
            ));
        }
        let Some(path) = hdr.path().map(|p| p.to_owned()) else {
            return Ok(());
        };
        let entry = self
            .requests
            .live
            .lock()
            .expect("requests lock")
            .remove(path.as_str());
        if let Some(entry) = entry {
            stop(conn, &path, entry).await;
        }
        // Unexporting this very object from its own handler could wait on
        // the handler: do it after the reply, on its own task.
        let conn = conn.clone();
        tokio::spawn(async move { unexport(&conn, &path).await });
        Ok(())
    }

    /// Declared for introspection; sent only to the caller by
    /// [`Requests::respond`].
    #[zbus(signal)]
    async fn response(
        emitter: &SignalEmitter<'_>,
        response: u32,
        results: HashMap<String, Value<'_>>,
    ) -> zbus::Result<()>;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_and_tokens_as_upstream() {
        assert_eq!(sender_element(":1.42"), "1_42");
        assert!(valid_token("ashpd_Ab12"));
        for bad in ["", "a-b", "a.b", "a/b", "ä"] {
            assert!(!valid_token(bad), "{bad}");
        }
        let mut options = HashMap::new();
        assert_eq!(token_of(&options).unwrap(), "t");
        options.insert(
            "handle_token".to_owned(),
            OwnedValue::try_from(Value::from("tok_1")).unwrap(),
        );
        assert_eq!(token_of(&options).unwrap(), "tok_1");
        options.insert(
            "handle_token".to_owned(),
            OwnedValue::try_from(Value::from("no-dash")).unwrap(),
        );
        assert!(matches!(
            token_of(&options),
            Err(PortalError::InvalidArgument(_))
        ));
        options.insert("handle_token".to_owned(), OwnedValue::from(7u32));
        assert_eq!(token_of(&options).unwrap(), "t");
    }
}
