//! Dialog calls taken in the order they arrive.
//!
//! zbus runs each method call on a task of its own, so a frontend's
//! `org.freedesktop.impl.portal.Request.Close`, sent a moment after the
//! dialog's call on the same connection, can be looked up before that
//! call's task has run and exported the dialog's Request: the Close then
//! meets `UnknownObject` and the dialog stays up. Upstream's backends
//! (xdg-desktop-portal-gtk's `handle_open`, GDBus) run handlers in order
//! and export the Request before they show anything, then complete the
//! call later. [`InOrder`] gives ours the same order: it wraps an interface
//! whose dialog methods take a handle first, so that the object server's
//! dispatch loop itself exports the dialog's Request ([`Dialogs::open`])
//! before it reads the next message; the call is then answered on its own
//! task, by the wrapped interface, as before.
//!
//! zbus marks [`Interface`] as unstable to implement by hand; this is the
//! one place that does, and only to delegate to the generated code (the
//! workspace pins zbus through Cargo.lock).

use std::collections::HashMap;
use std::fmt::Write;
use std::sync::Arc;

use async_trait::async_trait;
use zbus::message::{Header, Message};
use zbus::names::{InterfaceName, MemberName};
use zbus::object_server::{DispatchResult2, Interface, SignalEmitter};
use zbus::{Connection, ObjectServer, fdo};
use zvariant::{OwnedValue, Value};

use crate::dialog::Dialogs;

/// `inner`, with its `methods` (each a dialog whose first argument is its
/// handle) taken in order of arrival.
pub struct InOrder<I> {
    inner: Arc<I>,
    dialogs: Arc<Dialogs>,
    methods: &'static [&'static str],
}

impl<I> InOrder<I> {
    pub fn new(inner: I, dialogs: Arc<Dialogs>, methods: &'static [&'static str]) -> Self {
        Self {
            inner: Arc::new(inner),
            dialogs,
            methods,
        }
    }
}

#[async_trait]
impl<I: Interface> Interface for InOrder<I> {
    fn name() -> InterfaceName<'static> {
        I::name()
    }

    /// In order: the dispatch loop awaits [`InOrder::call`]'s future before
    /// the next message, and that future only exports the Request.
    fn spawn_tasks_for_methods(&self) -> bool {
        false
    }

    async fn get(
        &self,
        property_name: &str,
        server: &ObjectServer,
        connection: &Connection,
        header: Option<&Header<'_>>,
        emitter: &SignalEmitter<'_>,
    ) -> Option<fdo::Result<OwnedValue>> {
        self.inner
            .get(property_name, server, connection, header, emitter)
            .await
    }

    async fn get_all(
        &self,
        server: &ObjectServer,
        connection: &Connection,
        header: Option<&Header<'_>>,
        emitter: &SignalEmitter<'_>,
    ) -> fdo::Result<HashMap<String, OwnedValue>> {
        self.inner
            .get_all(server, connection, header, emitter)
            .await
    }

    fn set<'call>(
        &'call self,
        property_name: &'call str,
        value: &'call Value<'_>,
        server: &'call ObjectServer,
        connection: &'call Connection,
        header: Option<&'call Header<'_>>,
        emitter: &'call SignalEmitter<'_>,
    ) -> DispatchResult2<'call> {
        self.inner
            .set(property_name, value, server, connection, header, emitter)
    }

    /// The wrapped interfaces have no writable properties (and no `&mut
    /// self` methods): nothing to set.
    async fn set_mut(
        &mut self,
        _property_name: &str,
        _value: &Value<'_>,
        _server: &ObjectServer,
        _connection: &Connection,
        _header: Option<&Header<'_>>,
        _emitter: &SignalEmitter<'_>,
    ) -> Option<fdo::Result<()>> {
        None
    }

    fn call<'call>(
        &'call self,
        server: &'call ObjectServer,
        connection: &'call Connection,
        msg: &'call Message,
        name: MemberName<'call>,
    ) -> DispatchResult2<'call> {
        if !self.methods.contains(&name.as_str()) {
            return self.inner.call(server, connection, msg, name);
        }
        let inner = self.inner.clone();
        let dialogs = self.dialogs.clone();
        let name = name.to_owned();
        DispatchResult2::Async(Box::pin(async move {
            // In the dispatch loop: the Request is up before the next
            // message is read.
            let key = dialogs.open(server, msg).await;
            let (conn, msg) = (connection.clone(), msg.clone());
            tokio::spawn(async move {
                let server = conn.object_server();
                let result = match inner.call(server, &conn, &msg, name) {
                    DispatchResult2::Async(answer) => answer.await,
                    DispatchResult2::NotFound | DispatchResult2::RequiresMut => {
                        Err(fdo::Error::UnknownMethod("Unknown method".to_owned()))
                    }
                };
                if let Err(e) = result
                    && let Err(e) = conn.reply_dbus_error(&msg.header(), e).await
                {
                    tracing::debug!("replying with an error: {e}");
                }
                if let Some(key) = key {
                    dialogs.forget(server, &key).await;
                }
            });
            Ok(())
        }))
    }

    fn call_mut<'call>(
        &'call mut self,
        _server: &'call ObjectServer,
        _connection: &'call Connection,
        _msg: &'call Message,
        _name: MemberName<'call>,
    ) -> DispatchResult2<'call> {
        DispatchResult2::NotFound
    }

    fn introspect_to_writer(&self, writer: &mut dyn Write, level: usize) {
        self.inner.introspect_to_writer(writer, level);
    }
}
