//! `org.freedesktop.portal.Settings` (version 2), as upstream 1.20's
//! `settings.c`: every backend that implements
//! `org.freedesktop.impl.portal.Settings` is asked, in the configured
//! order. `ReadAll` merges their answers, the first backend winning a key;
//! `ReadOne` (and the deprecated `Read`, which wraps the value in one more
//! variant) takes the first backend that knows the key, else `NotFound`;
//! each backend's `SettingChanged` is sent on as ours. The portal is served
//! only when some backend implements the interface.

use std::collections::HashMap;

use futures_util::StreamExt;
use porthole_service::PortalError;
use zbus::object_server::SignalEmitter;
use zvariant::{OwnedValue, Value};

pub const INTERFACE: &str = "org.freedesktop.portal.Settings";
pub const IMPL_INTERFACE: &str = "org.freedesktop.impl.portal.Settings";
const BACKEND_PATH: &str = "/org/freedesktop/portal/desktop";

type Namespaces = HashMap<String, HashMap<String, OwnedValue>>;

/// The Settings portal over its backends (bus names, first wins).
pub struct Settings {
    pub backends: Vec<String>,
}

impl Settings {
    /// The first backend's value for the key.
    async fn read_backends(
        &self,
        conn: &zbus::Connection,
        namespace: &str,
        key: &str,
    ) -> Result<OwnedValue, PortalError> {
        for backend in &self.backends {
            let reply = conn
                .call_method(
                    Some(backend.as_str()),
                    BACKEND_PATH,
                    Some(IMPL_INTERFACE),
                    "Read",
                    &(namespace, key),
                )
                .await;
            match reply.and_then(|m| m.body().deserialize::<OwnedValue>()) {
                Ok(value) => return Ok(value),
                // A key not being found is expected: ask the next.
                Err(e) => tracing::debug!(backend, namespace, key, "Read: {e}"),
            }
        }
        Err(PortalError::NotFound("Requested setting not found".into()))
    }
}

#[zbus::interface(name = "org.freedesktop.portal.Settings")]
impl Settings {
    async fn read_all(
        &self,
        namespaces: Vec<String>,
        #[zbus(connection)] conn: &zbus::Connection,
    ) -> Namespaces {
        let mut merged = Namespaces::new();
        // Last backend first, so that the first one's keys win.
        for backend in self.backends.iter().rev() {
            let reply = conn
                .call_method(
                    Some(backend.as_str()),
                    BACKEND_PATH,
                    Some(IMPL_INTERFACE),
                    "ReadAll",
                    &(&namespaces,),
                )
                .await;
            match reply.and_then(|m| m.body().deserialize::<Namespaces>()) {
                Ok(answer) => {
                    for (namespace, keys) in answer {
                        merged.entry(namespace).or_default().extend(keys);
                    }
                }
                Err(e) => tracing::warn!(backend, "ReadAll from a Settings backend failed: {e}"),
            }
        }
        merged
    }

    /// Deprecated: the value comes wrapped in one more variant.
    async fn read(
        &self,
        namespace: &str,
        key: &str,
        #[zbus(connection)] conn: &zbus::Connection,
    ) -> Result<OwnedValue, PortalError> {
        let value = self.read_backends(conn, namespace, key).await?;
        OwnedValue::try_from(Value::Value(Box::new(Value::from(value))))
            .map_err(|e| PortalError::Failed(e.to_string()))
    }

    async fn read_one(
        &self,
        namespace: &str,
        key: &str,
        #[zbus(connection)] conn: &zbus::Connection,
    ) -> Result<OwnedValue, PortalError> {
        self.read_backends(conn, namespace, key).await
    }

    #[zbus(signal)]
    async fn setting_changed(
        emitter: &SignalEmitter<'_>,
        namespace: &str,
        key: &str,
        value: Value<'_>,
    ) -> zbus::Result<()>;

    #[zbus(property(emits_changed_signal = "const"), name = "version")]
    fn version(&self) -> u32 {
        2
    }
}

/// The stream of one backend's `SettingChanged` (subscribe before the
/// name is claimed, so that no change is missed).
pub async fn subscribe_changes(
    conn: &zbus::Connection,
    backend: &str,
) -> zbus::Result<zbus::proxy::SignalStream<'static>> {
    let proxy: zbus::Proxy<'static> = zbus::proxy::Builder::new(conn)
        .destination(backend.to_owned())?
        .path(BACKEND_PATH)?
        .interface(IMPL_INTERFACE)?
        .cache_properties(zbus::proxy::CacheProperties::No)
        .build()
        .await?;
    proxy.receive_signal("SettingChanged").await
}

/// Sends each backend change on as the portal's `SettingChanged`.
pub async fn forward_changes(
    conn: zbus::Connection,
    mut changes: zbus::proxy::SignalStream<'static>,
) {
    let emitter = match SignalEmitter::new(&conn, crate::desktop::OBJECT_PATH) {
        Ok(e) => e,
        Err(e) => {
            tracing::error!("the portal's signal emitter: {e}");
            return;
        }
    };
    while let Some(msg) = changes.next().await {
        let Ok((namespace, key, value)) = msg.body().deserialize::<(String, String, OwnedValue)>()
        else {
            tracing::warn!("a SettingChanged of the wrong signature from a backend");
            continue;
        };
        tracing::debug!(namespace, key, "emitting SettingChanged");
        if let Err(e) =
            Settings::setting_changed(&emitter, &namespace, &key, Value::from(value)).await
        {
            tracing::warn!("emitting SettingChanged: {e}");
        }
    }
}
