//! Argument-type checking in GDBus's words.
//!
//! zbus answers a call whose body has the wrong signature with
//! `org.freedesktop.zbus.Error`; GDBus (and so upstream) answers
//! `org.freedesktop.DBus.Error.InvalidArgs`, and clients match on that name.
//! [`Strict`] wraps a zbus interface, learns each method's input signature
//! from the interface's own introspection data (read with an XML parser),
//! and answers mismatches the GDBus way before the call reaches the
//! interface.

use std::collections::HashMap;

use async_trait::async_trait;
use zbus::message::{Flags, Header, Message};
use zbus::names::{InterfaceName, MemberName};
use zbus::object_server::{DispatchResult2, Interface, SignalEmitter};
use zbus::{Connection, ObjectServer, fdo};
use zbus_xml::ArgDirection;
use zvariant::{OwnedValue, Value};

/// A zbus interface whose calls are checked against its in-signatures.
pub struct Strict<I> {
    inner: I,
    /// Method name -> signature of its in-arguments (without parentheses).
    inputs: HashMap<String, String>,
}

impl<I: Interface> Strict<I> {
    pub fn new(inner: I) -> Self {
        let mut xml = String::new();
        inner.introspect_to_writer(&mut xml, 0);
        let inputs = method_inputs(&xml).unwrap_or_else(|e| {
            // zbus wrote this XML from the interface's own code, so this is
            // a bug of ours or zbus's: serve unchecked rather than not at all.
            tracing::error!(interface = %I::name(), "reading our own introspection: {e}");
            HashMap::new()
        });
        Self { inner, inputs }
    }
}

/// Each method's in-argument signature, from the introspection XML zbus
/// generates for one interface (an `<interface>` element).
fn method_inputs(interface_xml: &str) -> Result<HashMap<String, String>, zbus_xml::Error> {
    let node = zbus_xml::Node::from_reader(format!("<node>{interface_xml}</node>").as_bytes())?;
    Ok(node
        .interfaces()
        .iter()
        .flat_map(|iface| iface.methods())
        .map(|method| {
            let inputs = method
                .args()
                .iter()
                .filter(|arg| arg.direction() != Some(ArgDirection::Out))
                .map(|arg| arg.ty().inner().to_string())
                .collect();
            (method.name().to_string(), inputs)
        })
        .collect())
}

#[async_trait]
impl<I: Interface> Interface for Strict<I> {
    fn name() -> InterfaceName<'static> {
        I::name()
    }

    fn spawn_tasks_for_methods(&self) -> bool {
        self.inner.spawn_tasks_for_methods()
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

    async fn set_mut(
        &mut self,
        property_name: &str,
        value: &Value<'_>,
        server: &ObjectServer,
        connection: &Connection,
        header: Option<&Header<'_>>,
        emitter: &SignalEmitter<'_>,
    ) -> Option<fdo::Result<()>> {
        self.inner
            .set_mut(property_name, value, server, connection, header, emitter)
            .await
    }

    fn call<'call>(
        &'call self,
        server: &'call ObjectServer,
        connection: &'call Connection,
        msg: &'call Message,
        name: MemberName<'call>,
    ) -> DispatchResult2<'call> {
        if let Some(expected) = self.inputs.get(name.as_str()) {
            // zbus shows a multi-argument body as one structure: "(ss)".
            let sig = msg.body().signature().to_string();
            let got = match sig.strip_prefix('(').and_then(|s| s.strip_suffix(')')) {
                Some(inner) if inner == expected => inner.to_owned(),
                _ => sig,
            };
            if got != *expected {
                return DispatchResult2::Async(Box::pin(async move {
                    let hdr = msg.header();
                    if hdr.primary().flags().contains(Flags::NoReplyExpected) {
                        return Ok(());
                    }
                    let err = fdo::Error::InvalidArgs(format!(
                        "Type of message, '({got})', does not match expected type '({expected})'"
                    ));
                    connection
                        .reply_dbus_error(&hdr, err)
                        .await
                        .map(|_| ())
                        .map_err(fdo::Error::from)
                }));
            }
        }
        self.inner.call(server, connection, msg, name)
    }

    fn call_mut<'call>(
        &'call mut self,
        server: &'call ObjectServer,
        connection: &'call Connection,
        msg: &'call Message,
        name: MemberName<'call>,
    ) -> DispatchResult2<'call> {
        self.inner.call_mut(server, connection, msg, name)
    }

    fn introspect_to_writer(&self, writer: &mut dyn std::fmt::Write, level: usize) {
        self.inner.introspect_to_writer(writer, level)
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn reads_in_signatures_from_introspection() {
        let xml = r#"<interface name="org.example.X">
  <method name="Lookup">
    <arg name="table" type="s" direction="in"/>
    <arg name="id" type="s" direction="in"/>
    <arg name="permissions" type="a{sas}" direction="out"/>
  </method>
  <method name="Ping"/>
  <signal name="Changed">
    <arg name="table" type="s"/>
  </signal>
</interface>"#;
        let m = super::method_inputs(xml).unwrap();
        assert_eq!(m["Lookup"], "ss");
        assert_eq!(m["Ping"], "");
        assert!(!m.contains_key("Changed"));
    }

    /// What line scraping got wrong: single quotes, attributes over several
    /// lines, comments.
    #[test]
    fn reads_any_well_formed_layout() {
        let xml = "<interface name='org.example.X'><!-- <method name='Fake'/> -->\n<method\n name='Set'><arg type='s'\n direction='in'/>\n<arg\n type='v'/></method></interface>";
        let m = super::method_inputs(xml).unwrap();
        assert_eq!(m.len(), 1, "{m:?}");
        assert_eq!(m["Set"], "sv");
    }
}
