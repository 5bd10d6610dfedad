//! The backend's D-Bus side: `org.freedesktop.impl.portal.FileChooser` and
//! `org.freedesktop.impl.portal.Access` on `/org/freedesktop/portal/desktop`,
//! and an `org.freedesktop.impl.portal.Request` at each dialog's handle
//! while the dialog is up (the frontend's `Close` ends the dialog there),
//! exported before anything else happens on the bus connection, as
//! xdg-desktop-portal-gtk does ([`crate::in_order`]).
//!
//! Each method call is one dialog: the backend replies to the call itself
//! when the dialog ends (`(u response, a{sv} results)`), as upstream's
//! backends do; the frontend turns that into the app's `Response` signal.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::oneshot;
use zbus::ObjectServer;
use zbus::message::{Header, Message};
use zvariant::{OwnedObjectPath, OwnedValue, Value};

use crate::in_order::InOrder;
use crate::record::{Entry, Record};
use crate::script::{Answer, Method, Script};
use crate::terminal::Terminal;

/// The bus name our `.portal` file names.
pub const BUS_NAME: &str = "org.freedesktop.impl.portal.desktop.porthole";
/// Where every backend serves its interfaces.
pub const OBJECT_PATH: &str = "/org/freedesktop/portal/desktop";

/// Response codes of the portal API.
const CANCELLED_OTHERWISE: u32 = 2;

pub(crate) type Results = HashMap<String, OwnedValue>;

/// Who answers the dialogs.
pub enum Answers {
    Script(Script),
    Terminal(Terminal),
}

/// What every dialog needs: who answers it and the record.
pub struct Dialogs {
    answers: Answers,
    record: Record,
    /// Dialogs exported and not yet shown.
    pending: Mutex<HashMap<DialogKey, Pending>>,
}

/// A dialog as asked.
pub(crate) struct Asked<'a> {
    pub method: Method,
    pub handle: &'a OwnedObjectPath,
    pub app_id: &'a str,
    pub parent_window: &'a str,
    pub title: &'a str,
    pub text: Option<(&'a str, &'a str)>,
    pub options: &'a Results,
}

impl Dialogs {
    pub fn new(answers: Answers, record: Record) -> Arc<Self> {
        Arc::new(Self {
            answers,
            record,
            pending: Mutex::default(),
        })
    }

    /// Exports the `org.freedesktop.impl.portal.Request` of the dialog
    /// that `msg` asks for, at its handle (the call's first argument), and
    /// keeps what [`Dialogs::show`] needs to hear its Close. Run by
    /// [`crate::in_order::InOrder`] before the object server reads the next
    /// message, so a Close sent after the call always finds the object.
    /// Returns the dialog's key, or None when nothing was exported (a bad
    /// call, which the method itself then refuses, or a handle already in
    /// use, which [`Dialogs::show`] ends at once).
    pub(crate) async fn open(&self, server: &ObjectServer, msg: &Message) -> Option<DialogKey> {
        let hdr = msg.header();
        let key = DialogKey::of(&hdr)?;
        let body = msg.body();
        let fields = body.deserialize::<zvariant::Structure<'_>>().ok()?;
        let Some(Value::ObjectPath(handle)) = fields.fields().first() else {
            return None;
        };
        let handle = OwnedObjectPath::from(handle.to_owned());
        let (closed_tx, closed_rx) = oneshot::channel();
        let request = BackendRequest {
            owner: hdr.sender().map(|s| s.to_string()),
            close: Mutex::new(Some(closed_tx)),
        };
        match server.at(handle.as_ref(), request).await {
            Ok(true) => {}
            Ok(false) => {
                tracing::warn!(%handle, "a dialog is already up at this handle");
                return None;
            }
            Err(e) => {
                tracing::warn!(%handle, "exporting the request: {e}");
                return None;
            }
        }
        self.pending
            .lock()
            .expect("pending lock")
            .insert(key.clone(), Pending { handle, closed_rx });
        Some(key)
    }

    /// After the call has been answered: a dialog that [`Dialogs::show`]
    /// never took (the call was refused before it) is unexported here.
    pub(crate) async fn forget(&self, server: &ObjectServer, key: &DialogKey) {
        let pending = self.pending.lock().expect("pending lock").remove(key);
        if let Some(pending) = pending {
            unexport(server, &pending.handle).await;
        }
    }

    /// Shows one dialog whose Request [`Dialogs::open`] exported: answers
    /// from the script (or when closed), unexports, records.
    pub(crate) async fn show(
        &self,
        server: &ObjectServer,
        hdr: &Header<'_>,
        asked: Asked<'_>,
    ) -> (u32, Results) {
        let pending = DialogKey::of(hdr)
            .and_then(|key| self.pending.lock().expect("pending lock").remove(&key))
            .filter(|p| p.handle == *asked.handle);
        let Some(Pending { closed_rx, .. }) = pending else {
            // The handle was taken by another dialog: this one never came up.
            return (CANCELLED_OTHERWISE, Results::new());
        };
        tracing::debug!(method = asked.method.as_str(), handle = %asked.handle, "dialog up");

        let (response, results, ended) = match &self.answers {
            Answers::Script(script) => scripted(script, asked.method, closed_rx).await,
            Answers::Terminal(terminal) => terminal.ask(&asked, closed_rx).await,
        };

        unexport(server, asked.handle).await;
        self.record.write(&Entry {
            method: asked.method.as_str(),
            handle: asked.handle.as_str(),
            app_id: asked.app_id,
            parent_window: asked.parent_window,
            title: asked.title,
            text: asked.text,
            options: asked.options,
            response,
            results: &results,
            ended,
        });
        (response, results)
    }
}

async fn unexport(server: &ObjectServer, handle: &OwnedObjectPath) {
    if let Err(e) = server.remove::<BackendRequest, _>(handle.as_ref()).await {
        tracing::debug!(%handle, "unexporting the request: {e}");
    }
}

/// One dialog call: its caller's unique name and the call's serial.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct DialogKey {
    sender: String,
    serial: u32,
}

impl DialogKey {
    fn of(hdr: &Header<'_>) -> Option<Self> {
        Some(Self {
            sender: hdr.sender()?.to_string(),
            serial: hdr.primary().serial_num().get(),
        })
    }
}

/// A dialog exported by [`Dialogs::open`], not yet shown.
struct Pending {
    handle: OwnedObjectPath,
    closed_rx: oneshot::Receiver<()>,
}

/// The script's answer to one dialog (or its Close).
async fn scripted(
    script: &Script,
    method: Method,
    mut closed: oneshot::Receiver<()>,
) -> (u32, Results, &'static str) {
    match script.next(method) {
        None => (CANCELLED_OTHERWISE, Results::new(), "unscripted"),
        Some(answer) if answer.hold => {
            // Nobody answers: only Close ends it.
            let _ = closed.await;
            (CANCELLED_OTHERWISE, Results::new(), "closed")
        }
        // No delay: answer now. (tokio's timer counts whole milliseconds,
        // so even a zero sleep would wait for its next tick, about 1 ms:
        // most of a round trip.) A Close that came first still wins.
        Some(answer) if answer.delay_ms == 0 => match closed.try_recv() {
            Ok(()) => (CANCELLED_OTHERWISE, Results::new(), "closed"),
            Err(_) => (answer.response, results_of(&answer), "answered"),
        },
        Some(answer) => {
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_millis(answer.delay_ms)) => {
                    (answer.response, results_of(&answer), "answered")
                }
                _ = closed => (CANCELLED_OTHERWISE, Results::new(), "closed"),
            }
        }
    }
}

/// The results dictionary of a scripted answer.
fn results_of(answer: &Answer) -> Results {
    let mut results = Results::new();
    let mut put = |key: &str, value: Value<'_>| match OwnedValue::try_from(value) {
        Ok(v) => {
            results.insert(key.to_owned(), v);
        }
        // Only values holding fds fail to convert; none of these do.
        Err(e) => tracing::error!(key, "converting a scripted result: {e}"),
    };
    if let Some(uris) = &answer.uris {
        put("uris", Value::from(uris.clone()));
    }
    if let Some(choices) = &answer.choices {
        put("choices", Value::from(choices.clone()));
    }
    if let Some(filter) = &answer.current_filter {
        put("current_filter", Value::from(filter.clone()));
    }
    if let Some(writable) = answer.writable {
        put("writable", Value::from(writable));
    }
    if let Some(choice) = &answer.choice {
        put("choice", Value::from(choice.as_str()));
    }
    results
}

/// `org.freedesktop.impl.portal.Request` at a dialog's handle.
struct BackendRequest {
    /// The connection that asked for the dialog (the frontend); only it
    /// may close it.
    owner: Option<String>,
    close: Mutex<Option<oneshot::Sender<()>>>,
}

#[zbus::interface(name = "org.freedesktop.impl.portal.Request")]
impl BackendRequest {
    async fn close(&self, #[zbus(header)] hdr: Header<'_>) -> zbus::fdo::Result<()> {
        let sender = hdr.sender().map(|s| s.to_string());
        if sender != self.owner {
            return Err(zbus::fdo::Error::AccessDenied(
                "Only the caller that opened the dialog may close it".into(),
            ));
        }
        if let Some(tx) = self.close.lock().expect("close lock").take() {
            let _ = tx.send(());
        }
        Ok(())
    }
}

/// `org.freedesktop.impl.portal.FileChooser`.
pub struct FileChooser(pub Arc<Dialogs>);

#[zbus::interface(name = "org.freedesktop.impl.portal.FileChooser")]
impl FileChooser {
    #[allow(clippy::too_many_arguments)]
    #[zbus(out_args("response", "results"))]
    async fn open_file(
        &self,
        handle: OwnedObjectPath,
        app_id: &str,
        parent_window: &str,
        title: &str,
        options: Results,
        #[zbus(header)] hdr: Header<'_>,
        #[zbus(object_server)] server: &ObjectServer,
    ) -> (u32, Results) {
        self.dialog(
            Method::OpenFile,
            server,
            &hdr,
            &handle,
            app_id,
            parent_window,
            title,
            &options,
        )
        .await
    }

    #[allow(clippy::too_many_arguments)]
    #[zbus(out_args("response", "results"))]
    async fn save_file(
        &self,
        handle: OwnedObjectPath,
        app_id: &str,
        parent_window: &str,
        title: &str,
        options: Results,
        #[zbus(header)] hdr: Header<'_>,
        #[zbus(object_server)] server: &ObjectServer,
    ) -> (u32, Results) {
        self.dialog(
            Method::SaveFile,
            server,
            &hdr,
            &handle,
            app_id,
            parent_window,
            title,
            &options,
        )
        .await
    }

    #[allow(clippy::too_many_arguments)]
    #[zbus(out_args("response", "results"))]
    async fn save_files(
        &self,
        handle: OwnedObjectPath,
        app_id: &str,
        parent_window: &str,
        title: &str,
        options: Results,
        #[zbus(header)] hdr: Header<'_>,
        #[zbus(object_server)] server: &ObjectServer,
    ) -> (u32, Results) {
        self.dialog(
            Method::SaveFiles,
            server,
            &hdr,
            &handle,
            app_id,
            parent_window,
            title,
            &options,
        )
        .await
    }

    /// The impl interface's version (upstream's test backend says 4).
    #[zbus(property(emits_changed_signal = "const"), name = "version")]
    fn version(&self) -> u32 {
        4
    }
}

impl FileChooser {
    #[allow(clippy::too_many_arguments)]
    async fn dialog(
        &self,
        method: Method,
        server: &ObjectServer,
        hdr: &Header<'_>,
        handle: &OwnedObjectPath,
        app_id: &str,
        parent_window: &str,
        title: &str,
        options: &Results,
    ) -> (u32, Results) {
        let asked = Asked {
            method,
            handle,
            app_id,
            parent_window,
            title,
            text: None,
            options,
        };
        self.0.show(server, hdr, asked).await
    }
}

/// `org.freedesktop.impl.portal.Access`.
pub struct Access(pub Arc<Dialogs>);

#[zbus::interface(name = "org.freedesktop.impl.portal.Access")]
impl Access {
    #[allow(clippy::too_many_arguments)]
    #[zbus(out_args("response", "results"))]
    async fn access_dialog(
        &self,
        handle: OwnedObjectPath,
        app_id: &str,
        parent_window: &str,
        title: &str,
        subtitle: &str,
        body: &str,
        options: Results,
        #[zbus(header)] hdr: Header<'_>,
        #[zbus(object_server)] server: &ObjectServer,
    ) -> (u32, Results) {
        let asked = Asked {
            method: Method::AccessDialog,
            handle: &handle,
            app_id,
            parent_window,
            title,
            text: Some((subtitle, body)),
            options: &options,
        };
        self.0.show(server, &hdr, asked).await
    }
}

/// Exports the three interfaces on `conn` (before the name is claimed), each
/// taking its dialog calls in order of arrival ([`InOrder`]).
pub async fn export(conn: &zbus::Connection, dialogs: Arc<Dialogs>) -> zbus::Result<()> {
    let server = conn.object_server();
    let file_chooser = InOrder::new(
        FileChooser(dialogs.clone()),
        dialogs.clone(),
        &["OpenFile", "SaveFile", "SaveFiles"],
    );
    server.at(OBJECT_PATH, file_chooser).await?;
    let access = InOrder::new(Access(dialogs.clone()), dialogs.clone(), &["AccessDialog"]);
    server.at(OBJECT_PATH, access).await?;
    let app_chooser = InOrder::new(
        crate::app_chooser::AppChooser(dialogs.clone()),
        dialogs,
        &["ChooseApplication"],
    );
    server.at(OBJECT_PATH, app_chooser).await?;
    Ok(())
}
