//! `org.freedesktop.portal.OpenURI` (version 5), as upstream's
//! `open-uri.c` (1.20.4): OpenURI, OpenFile, OpenDirectory and
//! SchemeSupported.
//!
//! A request finds the target's content type (`x-scheme-handler/SCHEME`
//! for a URI, the sniffed type of a file, `inode/directory` for a
//! folder), the installed handlers for it ([`crate::mime_apps`]) and what
//! the caller chose before (permission store table `desktop-used-apps`,
//! id = content type, app = caller, value `[handler, count, threshold]`,
//! data `{always-ask: b}`). Then, in upstream's order: the default handler
//! of a web, mail or calendar scheme or a folder opens without a dialog, so
//! does the only handler, and the handler chosen `threshold` (3) times in a
//! row; `ask` from the app, `always-ask` or a threshold of `i32::MAX` from
//! the user always ask. Otherwise the AppChooser backend asks the user;
//! the chosen handler is launched ([`crate::desktop_entry`]) and the count
//! updated. A sandboxed handler (`X-Flatpak`) gets a local file through
//! the document store.
//!
//! Refused with response 2, as upstream: an invalid URI, a `file:` URI
//! (local files go through OpenFile, with an fd that proves access), an fd
//! that is not a readable file ([`crate::fd_path`]), `writable` with a
//! read-only fd, a writable fd from a sandboxed app without `writable`.
//! Refused with response 2 beyond upstream: files that are programs or
//! launchers ([`crate::content_type::dangerous`]), whose handler would run
//! them outside the sandbox. Lockdown's `disable-application-handlers` is
//! `NotAllowed`; options of the wrong type are `InvalidArgument`.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use porthole_permission_store_client::PermissionStoreProxy;
use porthole_service::{Caller, Callers, PortalError};
use zbus::message::Header;
use zvariant::{ObjectPath, OwnedObjectPath, OwnedValue, Value};

use crate::app_monitor::AppMonitor;
use crate::config::SearchDirs;
use crate::content_type;
use crate::desktop_entry::{DesktopEntry, Launch};
use crate::documents::{self, Handover};
use crate::fd_path;
use crate::mime_apps::MimeApps;
use crate::options::{self, OptionKey, Options};
use crate::request::{self, BackendHandle, Requests};
use crate::uri;

pub const INTERFACE: &str = "org.freedesktop.portal.OpenURI";
pub const IMPL_INTERFACE: &str = "org.freedesktop.impl.portal.AppChooser";
pub const LOCKDOWN_INTERFACE: &str = "org.freedesktop.impl.portal.Lockdown";
/// Where backends serve their interfaces.
pub const BACKEND_PATH: &str = "/org/freedesktop/portal/desktop";
/// The permission store table of remembered handlers.
pub const TABLE: &str = "desktop-used-apps";
/// How often the same handler must be chosen before the dialog is skipped.
pub const DEFAULT_THRESHOLD: i32 = 3;

const FILE_MANAGER: &str = "org.freedesktop.FileManager1";
const FILE_MANAGER_PATH: &str = "/org/freedesktop/FileManager1";

/// Schemes whose default handler opens without a dialog.
const DEFAULT_HANDLER_SCHEMES: &[&str] = &["http", "https", "ftp", "mailto", "webcal", "calendar"];

const OPEN_KEYS: &[OptionKey] = &[
    OptionKey::plain("writable", "b"),
    OptionKey::plain("ask", "b"),
    OptionKey::plain("activation_token", "s"),
];

const OPEN_DIRECTORY_KEYS: &[OptionKey] = &[OptionKey::plain("activation_token", "s")];

/// The OpenURI portal on the frontend's object.
pub struct OpenUri {
    pub callers: Arc<Callers>,
    pub requests: Arc<Requests>,
    /// The AppChooser backend's bus name.
    pub backend: String,
    /// See [`crate::desktop::Frontend::test_app`].
    pub test_app: Option<porthole_identity::AppId>,
    /// The `org.freedesktop.impl.portal.Lockdown` backend, if any.
    pub lockdown: Option<String>,
    /// Where apps and `mimeapps.list` files are found.
    pub dirs: SearchDirs,
}

/// What a request opens.
enum Target {
    Uri(String),
    File {
        fd: zvariant::OwnedFd,
        directory: bool,
    },
}

#[zbus::interface(name = "org.freedesktop.portal.OpenURI")]
impl OpenUri {
    #[zbus(name = "OpenURI")]
    async fn open_uri(
        &self,
        parent_window: &str,
        uri: &str,
        options: Options,
        #[zbus(header)] hdr: Header<'_>,
        #[zbus(connection)] conn: &zbus::Connection,
    ) -> Result<OwnedObjectPath, PortalError> {
        self.start(
            conn,
            &hdr,
            parent_window,
            Target::Uri(uri.to_owned()),
            options,
        )
        .await
    }

    async fn open_file(
        &self,
        parent_window: &str,
        fd: zvariant::OwnedFd,
        options: Options,
        #[zbus(header)] hdr: Header<'_>,
        #[zbus(connection)] conn: &zbus::Connection,
    ) -> Result<OwnedObjectPath, PortalError> {
        let target = Target::File {
            fd,
            directory: false,
        };
        self.start(conn, &hdr, parent_window, target, options).await
    }

    async fn open_directory(
        &self,
        parent_window: &str,
        fd: zvariant::OwnedFd,
        options: Options,
        #[zbus(header)] hdr: Header<'_>,
        #[zbus(connection)] conn: &zbus::Connection,
    ) -> Result<OwnedObjectPath, PortalError> {
        let target = Target::File {
            fd,
            directory: true,
        };
        self.start(conn, &hdr, parent_window, target, options).await
    }

    /// Whether a handler is installed for `scheme` (no options defined).
    async fn scheme_supported(&self, scheme: &str, _options: Options) -> Result<bool, PortalError> {
        if scheme.is_empty() {
            return Err(PortalError::InvalidArgument("Scheme not specified".into()));
        }
        let dirs = self.dirs.clone();
        let types = vec![format!("x-scheme-handler/{scheme}")];
        let found = tokio::task::spawn_blocking(move || MimeApps::load(&dirs).default_for(&types))
            .await
            .map_err(|e| PortalError::Failed(format!("looking up handlers: {e}")))?;
        tracing::debug!(scheme, handler = ?found, "SchemeSupported");
        Ok(found.is_some())
    }

    #[zbus(property(emits_changed_signal = "const"), name = "version")]
    fn version(&self) -> u32 {
        5
    }
}

/// A boolean property of the lockdown backend (false when there is none
/// or it does not answer, as upstream's stand-in lockdown object says).
pub async fn lockdown_flag(conn: &zbus::Connection, lockdown: Option<&str>, key: &str) -> bool {
    let Some(lockdown) = lockdown else {
        return false;
    };
    let reply = conn
        .call_method(
            Some(lockdown),
            BACKEND_PATH,
            Some("org.freedesktop.DBus.Properties"),
            "Get",
            &(LOCKDOWN_INTERFACE, key),
        )
        .await;
    match reply.and_then(|m| m.body().deserialize::<OwnedValue>()) {
        Ok(v) => matches!(&*v, Value::Bool(true)),
        Err(e) => {
            tracing::debug!(lockdown, key, "reading the lockdown flag: {e}");
            false
        }
    }
}

impl OpenUri {
    async fn start(
        &self,
        conn: &zbus::Connection,
        hdr: &Header<'_>,
        parent_window: &str,
        target: Target,
        options: Options,
    ) -> Result<OwnedObjectPath, PortalError> {
        if lockdown_flag(
            conn,
            self.lockdown.as_deref(),
            "disable-application-handlers",
        )
        .await
        {
            return Err(PortalError::NotAllowed(
                "Application handlers disabled".into(),
            ));
        }
        let (caller, app_id) = match &self.test_app {
            Some(app_id) => (Caller::Host, app_id.as_str().to_owned()),
            None => {
                let caller = self.callers.identify(conn, hdr).await.require()?.clone();
                let app_id = caller.app_id_str().unwrap_or_default().to_owned();
                (caller, app_id)
            }
        };
        let sender = hdr
            .sender()
            .map(|s| s.to_string())
            .ok_or_else(|| PortalError::NotAllowed("a call without a sender".into()))?;
        let keys = match &target {
            Target::File {
                directory: true, ..
            } => OPEN_DIRECTORY_KEYS,
            _ => OPEN_KEYS,
        };
        let given = options::filter(&options, keys)?;
        let token = request::token_of(&options)?;
        let flag = |key| {
            options::lookup(&given, key, "b").is_some_and(|v| matches!(&**v, Value::Bool(true)))
        };
        let activation_token = options::lookup(&given, "activation_token", "s")
            .and_then(|v| options::decode::<String>(v).ok());

        let backend = BackendHandle::new(self.backend.clone());
        let asked = backend.asked.clone();
        let handle = self
            .requests
            .create(conn, &sender, &token, Some(backend))
            .await?;
        tracing::debug!(%handle, ?caller, "open request");
        let work = Work {
            conn: conn.clone(),
            requests: self.requests.clone(),
            backend: self.backend.clone(),
            dirs: self.dirs.clone(),
            handle: handle.clone(),
            caller,
            app_id,
            parent_window: parent_window.to_owned(),
            writable: flag("writable"),
            ask: flag("ask"),
            activation_token,
            asked,
        };
        let task = tokio::spawn(work.run(target));
        self.requests.set_task(&handle.as_ref(), task);
        Ok(handle)
    }
}

/// One request's work, run as an abortable task.
struct Work {
    conn: zbus::Connection,
    requests: Arc<Requests>,
    backend: String,
    dirs: SearchDirs,
    handle: OwnedObjectPath,
    caller: Caller,
    app_id: String,
    parent_window: String,
    writable: bool,
    ask: bool,
    activation_token: Option<String>,
    asked: Arc<AtomicBool>,
}

/// What is opened, once checked.
#[derive(Debug)]
struct Resolved {
    uri: String,
    scheme: String,
    content_type: String,
    /// For files: the name shown by the chooser.
    filename: Option<String>,
}

/// What the user chose before (a `desktop-used-apps` entry).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Remembered {
    pub handler: Option<String>,
    pub count: i32,
    pub threshold: i32,
    pub always_ask: bool,
}

impl Default for Remembered {
    fn default() -> Self {
        Self {
            handler: None,
            count: 0,
            threshold: DEFAULT_THRESHOLD,
            always_ask: false,
        }
    }
}

/// C's `atoi` as upstream reads the counts: leading blanks, a sign,
/// digits; anything else ends the number (none at all is 0).
fn atoi(s: &str) -> i32 {
    let s = s.trim_start();
    let (negative, digits) = match s.as_bytes().first() {
        Some(b'-') => (true, &s[1..]),
        Some(b'+') => (false, &s[1..]),
        _ => (false, s),
    };
    let mut n: i64 = 0;
    for b in digits.bytes().take_while(u8::is_ascii_digit) {
        n = (n * 10 + i64::from(b - b'0')).min(i64::from(i32::MAX) + 1);
    }
    let n = if negative { -n } else { n };
    n.clamp(i64::from(i32::MIN), i64::from(i32::MAX)) as i32
}

impl Remembered {
    /// Upstream's `parse_permissions`: `[handler, count, threshold]`, the
    /// threshold optional (blank: the default).
    pub fn parse(permissions: &[String], always_ask: bool) -> Self {
        let mut r = Self {
            always_ask,
            ..Self::default()
        };
        if let (Some(handler), Some(count)) = (permissions.first(), permissions.get(1)) {
            r.handler = Some(handler.clone());
            r.count = atoi(count);
            if let Some(t) = permissions.get(2).filter(|t| !t.trim().is_empty()) {
                r.threshold = atoi(t);
            }
        }
        r
    }

    /// The entry after `chosen` was picked in the dialog (upstream's
    /// `update_permissions_store`): the same handler counts up to the
    /// threshold, another starts again at 1.
    pub fn after_choosing(&self, chosen: &str) -> [String; 3] {
        let count = if self.handler.as_deref() == Some(chosen) {
            if self.count >= self.threshold {
                self.threshold
            } else {
                self.count + 1
            }
        } else {
            1
        };
        // Upstream formats both with "%u".
        [
            chosen.to_owned(),
            (count as u32).to_string(),
            (self.threshold as u32).to_string(),
        ]
    }
}

/// The handlers of a content type, and upstream's decision whether to ask.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    /// Launch this one without a dialog.
    pub launch: Option<String>,
    /// Otherwise the dialog's choices and its preselected handler.
    pub choices: Vec<String>,
    pub last_choice: Option<String>,
}

/// Upstream's `handle_open_in_thread_func` decision, given the installed
/// handlers (`default`, `choices`, both already checked to exist),
/// whether `exists` an app, what was remembered (its handler dropped
/// by the caller if no longer installed) and the app's `ask`.
pub fn decide(
    scheme: &str,
    content_type: &str,
    default: Option<String>,
    choices: Vec<String>,
    remembered: &Remembered,
    ask: bool,
    exists: impl Fn(&str) -> bool,
) -> Decision {
    let use_default =
        DEFAULT_HANDLER_SCHEMES.contains(&scheme) || content_type == "inode/directory";
    let latest = remembered.handler.clone();
    let mut skip = false;
    if default.is_some() && use_default {
        skip = true;
    }
    if choices.len() == 1 {
        skip = true;
    }
    if latest.is_some() && remembered.count >= remembered.threshold {
        skip = true;
    }
    if ask {
        skip = false;
    }
    if remembered.always_ask || remembered.threshold == i32::MAX {
        skip = false;
    }
    if skip {
        let app = if use_default && default.is_some() {
            default.clone()
        } else if latest.is_some() {
            latest.clone()
        } else if default.is_some() {
            default.clone()
        } else {
            choices.first().filter(|c| exists(c)).cloned()
        };
        if app.is_some() {
            return Decision {
                launch: app,
                choices,
                last_choice: None,
            };
        }
    }
    Decision {
        launch: None,
        last_choice: latest.or(default),
        choices,
    }
}

impl Work {
    async fn run(self, target: Target) {
        let response = match self.resolve(target).await {
            Ok(Some(resolved)) => self.open(resolved).await,
            Ok(None) => request::SUCCESS,
            Err(reason) => {
                tracing::info!(handle = %self.handle, "refusing the open request: {reason}");
                request::OTHER
            }
        };
        let path: ObjectPath<'_> = self.handle.as_ref();
        self.requests
            .respond(&self.conn, &path, response, Options::new())
            .await;
    }

    /// The URI, scheme and content type of the target; None when a file
    /// manager already showed a folder; Err with the reason to refuse.
    async fn resolve(&self, target: Target) -> Result<Option<Resolved>, String> {
        let (fd, directory) = match target {
            Target::Uri(text) => {
                if !uri::is_valid(&text) {
                    return Err(format!("invalid URI {text:?}"));
                }
                let scheme = uri::scheme(&text).unwrap_or_default().to_ascii_lowercase();
                if scheme == "file" {
                    return Err("a file: URI (local files go through OpenFile)".into());
                }
                return Ok(Some(Resolved {
                    content_type: format!("x-scheme-handler/{scheme}"),
                    scheme,
                    uri: text,
                    filename: None,
                }));
            }
            Target::File { fd, directory } => (fd, directory),
        };
        let is_host = !matches!(self.caller, Caller::App { .. });
        let app_doc_view = self.app_doc_view();
        let checked = {
            use std::os::fd::AsFd;
            fd_path::path_for_fd(fd.as_fd(), is_host, |p| {
                app_doc_view.as_ref().and_then(|(mount, view)| {
                    p.strip_prefix(mount).ok().map(|rest| view.join(rest))
                })
            })
            .map_err(|e| e.to_string())?
        };
        if self.writable && !checked.writable {
            return Err(format!(
                "{:?}: writable asked, the fd is read-only",
                checked.path
            ));
        }
        if !is_host && !self.writable && checked.writable {
            return Err(format!(
                "{:?}: a writable fd without the writable option",
                checked.path
            ));
        }
        let mut path = self.host_path(&checked.path).await;
        if directory {
            if self.show_in_file_manager(&path).await {
                return Ok(None);
            }
            path = path.parent().map(Path::to_owned).unwrap_or(path);
        }
        // The type comes from the caller's own file (its fd's /proc
        // entry) for a file; a folder is opened by path, as upstream.
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "/".to_owned());
        let sniff_at = if directory {
            path.clone()
        } else {
            checked.proc_path.clone()
        };
        let sniff_name = name.clone();
        let sniffed =
            tokio::task::spawn_blocking(move || content_type::sniff(&sniff_at, &sniff_name))
                .await
                .map_err(|e| e.to_string())?
                .map_err(|e| format!("{path:?}: {e}"))?;
        if !directory && let Some(why) = content_type::dangerous(&sniffed) {
            return Err(format!("{path:?} is not opened: {why}"));
        }
        drop(fd);
        Ok(Some(Resolved {
            uri: uri::from_path(&path),
            scheme: "file".to_owned(),
            content_type: sniffed.content_type,
            filename: Some(name),
        }))
    }

    /// For a sandboxed caller: where its documents appear to it, and the
    /// host's view of that app's documents (upstream's alternate path).
    fn app_doc_view(&self) -> Option<(PathBuf, PathBuf)> {
        let Caller::App { app_id, .. } = &self.caller else {
            return None;
        };
        let runtime = std::env::var_os("XDG_RUNTIME_DIR").map(PathBuf::from)?;
        Some((
            documents::sandbox_doc_dir(),
            runtime.join("doc/by-app").join(app_id.as_str()),
        ))
    }

    /// A document path of a sandboxed caller as the host path of the
    /// document (upstream's `xdp_get_real_path_for_doc_path`); other paths
    /// as they are.
    async fn host_path(&self, path: &Path) -> PathBuf {
        use std::os::unix::ffi::OsStrExt;
        if !matches!(self.caller, Caller::App { .. }) {
            return path.to_owned();
        }
        let Some((mount, view)) = self.app_doc_view() else {
            return path.to_owned();
        };
        let rest = path
            .strip_prefix(&view)
            .or_else(|_| path.strip_prefix(&mount))
            .ok();
        let Some(id) = rest
            .and_then(|r| r.iter().next())
            .map(|c| c.to_string_lossy().into_owned())
        else {
            return path.to_owned();
        };
        let Some(real) = documents::host_path(&self.conn, &id).await else {
            return path.to_owned();
        };
        let real = PathBuf::from(std::ffi::OsStr::from_bytes(&real));
        // The document is a file (its path) or a directory (its files
        // below it).
        let below: PathBuf = rest.map(|r| r.iter().skip(2).collect()).unwrap_or_default();
        if below.as_os_str().is_empty() {
            real
        } else {
            real.join(below)
        }
    }

    /// OpenDirectory's first try: `org.freedesktop.FileManager1.ShowItems`.
    async fn show_in_file_manager(&self, path: &Path) -> bool {
        let items = vec![uri::from_path(path)];
        let token = self.activation_token.clone().unwrap_or_default();
        let reply = self
            .conn
            .call_method(
                Some(FILE_MANAGER),
                FILE_MANAGER_PATH,
                Some(FILE_MANAGER),
                "ShowItems",
                &(items, token),
            )
            .await;
        match reply {
            Ok(_) => true,
            Err(zbus::Error::MethodError(name, _, _))
                if matches!(
                    name.as_str(),
                    "org.freedesktop.DBus.Error.ServiceUnknown"
                        | "org.freedesktop.DBus.Error.NameHasNoOwner"
                ) =>
            {
                tracing::debug!("no {FILE_MANAGER} on the bus");
                false
            }
            Err(e) => {
                tracing::warn!("{FILE_MANAGER}.ShowItems failed: {e}");
                false
            }
        }
    }

    /// Finds the handler (asking the user when upstream would) and starts
    /// it; returns the response code.
    async fn open(&self, target: Resolved) -> u32 {
        let Some((apps, default, choices)) = handlers(&self.dirs, &target.content_type).await
        else {
            return request::OTHER;
        };
        let mut remembered = self.remembered(&target.content_type).await;
        if remembered
            .handler
            .as_deref()
            .is_some_and(|h| !apps.exists(h))
        {
            remembered.handler = None;
        }
        let decision = decide(
            &target.scheme,
            &target.content_type,
            default,
            choices,
            &remembered,
            self.ask,
            |id| apps.exists(id),
        );
        tracing::debug!(?target, ?remembered, ?decision, "open");
        if let Some(handler) = &decision.launch {
            let token = self.activation_token.clone();
            return match self
                .launch(&apps, handler, &target.uri, token.as_deref())
                .await
            {
                Ok(()) => request::SUCCESS,
                Err(e) => {
                    tracing::warn!("opening {} with {handler}: {e}", target.uri);
                    request::OTHER
                }
            };
        }
        let (response, results) = self.choose(&target, &decision).await;
        if response != request::SUCCESS {
            return response;
        }
        let Some(choice) = options::lookup(&results, "choice", "s")
            .and_then(|v| options::decode::<String>(v).ok())
        else {
            return response;
        };
        tracing::debug!(%choice, "chosen");
        let token = options::lookup(&results, "activation_token", "s")
            .and_then(|v| options::decode::<String>(v).ok())
            .or_else(|| self.activation_token.clone());
        // Read the apps again: the chosen one may have been installed while
        // the dialog was up (upstream looks the desktop file up at launch).
        let apps = match handlers(&self.dirs, &target.content_type).await {
            Some((fresh, _, _)) => fresh,
            None => apps,
        };
        match self
            .launch(&apps, &choice, &target.uri, token.as_deref())
            .await
        {
            Ok(()) => {
                self.remember(&target.content_type, &choice).await;
            }
            // Upstream answers the dialog's response all the same.
            Err(e) => tracing::warn!("opening {} with {choice}: {e}", target.uri),
        }
        response
    }

    /// Asks the AppChooser backend.
    async fn choose(&self, target: &Resolved, decision: &Decision) -> (u32, Options) {
        let mut opts = Options::new();
        let mut put = |key: &str, value: &str| {
            if let Ok(v) = OwnedValue::try_from(Value::from(value)) {
                opts.insert(key.to_owned(), v);
            }
        };
        if let Some(last) = &decision.last_choice {
            put("last_choice", last);
        }
        put("content_type", &target.content_type);
        if let Some(name) = &target.filename {
            put("filename", name);
        }
        put("uri", &target.uri);
        if let Some(token) = &self.activation_token {
            put("activation_token", token);
        }
        let args = (
            &self.handle,
            self.app_id.as_str(),
            self.parent_window.as_str(),
            &decision.choices,
            opts,
        );
        self.asked.store(true, Ordering::SeqCst);
        let call = self.conn.call_method(
            Some(self.backend.as_str()),
            BACKEND_PATH,
            Some(IMPL_INTERFACE),
            "ChooseApplication",
            &args,
        );
        tokio::pin!(call);
        // While the dialog is up, installed apps may change: the dialog
        // is sent the new candidates (upstream's app_info_changed).
        let monitor = match AppMonitor::watch(&self.dirs) {
            Ok(m) => Some(m),
            Err(e) => {
                tracing::warn!("not watching installed apps: {e}");
                None
            }
        };
        let mut watching = monitor.is_some();
        let mut sent = decision.choices.clone();
        let reply = loop {
            tokio::select! {
                reply = &mut call => break reply,
                changed = async {
                    match &monitor {
                        Some(m) if watching => m.changed().await,
                        _ => std::future::pending().await,
                    }
                } => {
                    if let Err(e) = changed {
                        tracing::warn!("watching installed apps: {e}");
                        watching = false;
                        continue;
                    }
                    let Some((_, _, choices)) = handlers(&self.dirs, &target.content_type).await else {
                        continue;
                    };
                    if choices != sent {
                        tracing::debug!(handle = %self.handle, ?choices, "UpdateChoices");
                        let updated = self
                            .conn
                            .call_method(
                                Some(self.backend.as_str()),
                                BACKEND_PATH,
                                Some(IMPL_INTERFACE),
                                "UpdateChoices",
                                &(&self.handle, &choices),
                            )
                            .await;
                        if let Err(e) = updated {
                            tracing::debug!("UpdateChoices: {e}");
                        }
                        sent = choices;
                    }
                }
            }
        };
        match reply.and_then(|m| m.body().deserialize::<(u32, Options)>()) {
            Ok(answer) => answer,
            Err(e) => {
                tracing::warn!(handle = %self.handle, "backend call failed: {e}");
                (request::OTHER, Options::new())
            }
        }
    }

    /// Starts `handler` on `target_uri` (exported to a sandboxed handler
    /// through the document store first when it is a local file).
    async fn launch(
        &self,
        apps: &MimeApps,
        handler: &str,
        target_uri: &str,
        activation_token: Option<&str>,
    ) -> Result<(), String> {
        let entry: &DesktopEntry = apps
            .app(handler)
            .ok_or_else(|| format!("Desktop file {handler}.desktop does not exist"))?;
        let mut opened = target_uri.to_owned();
        if entry.sandboxed()
            && uri::scheme(target_uri).is_some_and(|s| s.eq_ignore_ascii_case("file"))
        {
            let how = Handover {
                writable: self.writable,
                directory: false,
                for_save: false,
            };
            opened = documents::register(&self.conn, target_uri, handler, how)
                .await
                .map_err(|e| format!("registering {target_uri} for {handler}: {e}"))?;
        }
        let how = Launch {
            parent_window: &self.parent_window,
            activation_token,
        };
        let pid = entry.launch(&opened, &how).map_err(|e| e.to_string())?;
        tracing::info!(handler, uri = %opened, pid, "launched");
        Ok(())
    }

    /// The caller's remembered choice for `content_type`.
    async fn remembered(&self, content_type: &str) -> Remembered {
        let store = match PermissionStoreProxy::new(&self.conn).await {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!("the permission store: {e}");
                return Remembered::default();
            }
        };
        let (permissions, data) = match store.lookup(TABLE, content_type).await {
            Ok(found) => found,
            Err(zbus::Error::MethodError(name, _, _))
                if name.as_str() == "org.freedesktop.portal.Error.NotFound" =>
            {
                return Remembered::default();
            }
            Err(e) => {
                tracing::warn!(
                    "Unable to retrieve info for '{content_type}' in the {TABLE} table of the permission store: {e}"
                );
                return Remembered::default();
            }
        };
        let always_ask = always_ask(&data);
        let mine = permissions
            .get(&self.app_id)
            .map(Vec::as_slice)
            .unwrap_or_default();
        Remembered::parse(mine, always_ask)
    }

    /// Counts a choice made in the dialog.
    async fn remember(&self, content_type: &str, chosen: &str) {
        let before = self.remembered(content_type).await;
        let after = before.after_choosing(chosen);
        let perms: Vec<&str> = after.iter().map(String::as_str).collect();
        tracing::debug!(app = %self.app_id, content_type, ?perms, "remembering the choice");
        let result = match PermissionStoreProxy::new(&self.conn).await {
            Ok(store) => {
                store
                    .set_permission(TABLE, true, content_type, &self.app_id, &perms)
                    .await
            }
            Err(e) => Err(e),
        };
        if let Err(e) = result {
            tracing::warn!("Error updating permission store: {e}");
        }
    }
}

/// The installed apps, the default handler and the dialog's candidates
/// for a content type (upstream's `find_recommended_choices`: the apps
/// recommended for the type, else every app for it or a parent type).
async fn handlers(
    dirs: &SearchDirs,
    content_type: &str,
) -> Option<(MimeApps, Option<String>, Vec<String>)> {
    let dirs = dirs.clone();
    let content_type = content_type.to_owned();
    let found = tokio::task::spawn_blocking(move || {
        let apps = MimeApps::load(&dirs);
        let types = content_type::with_parents(&content_type);
        let default = apps.default_for(&types);
        let mut choices = apps.recommended(&content_type);
        if choices.is_empty() {
            choices = apps.all(&types);
        }
        (apps, default, choices)
    })
    .await;
    match found {
        Ok(found) => Some(found),
        Err(e) => {
            tracing::warn!("looking up handlers: {e}");
            None
        }
    }
}

/// `always-ask` in an entry's data (a vardict, possibly in a variant).
fn always_ask(data: &OwnedValue) -> bool {
    let mut v: &Value<'_> = data;
    while let Value::Value(inner) = v {
        v = inner;
    }
    if !matches!(v, Value::Dict(_)) {
        return false;
    }
    let Ok(map) = v
        .try_clone()
        .map_err(|e| e.to_string())
        .and_then(|v| Options::try_from(v).map_err(|e| e.to_string()))
    else {
        return false;
    };
    map.get("always-ask").is_some_and(|v| {
        let mut v: &Value<'_> = v;
        while let Value::Value(inner) = v {
            v = inner;
        }
        matches!(v, Value::Bool(true))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn remembered_entries_read_and_count_as_upstream() {
        let r = Remembered::parse(&strings(&["furrfix", "2", "3"]), false);
        assert_eq!(r.handler.as_deref(), Some("furrfix"));
        assert_eq!((r.count, r.threshold), (2, 3));
        assert_eq!(r.after_choosing("furrfix"), ["furrfix", "3", "3"]);
        assert_eq!(r.after_choosing("other"), ["other", "1", "3"]);
        let full = Remembered::parse(&strings(&["a", "3", "3"]), false);
        assert_eq!(full.after_choosing("a"), ["a", "3", "3"]);
        // Blank or missing threshold: the default; junk counts are atoi's.
        let r = Remembered::parse(&strings(&["a", " 7x", " "]), false);
        assert_eq!((r.count, r.threshold), (7, DEFAULT_THRESHOLD));
        assert_eq!(Remembered::parse(&strings(&["a"]), true).handler, None);
        assert_eq!(atoi("2147483647"), i32::MAX);
        assert_eq!(atoi("99999999999"), i32::MAX);
        assert_eq!(atoi("-4"), -4);
        assert_eq!(atoi("x"), 0);
    }

    #[test]
    fn the_dialog_is_skipped_and_forced_as_upstream() {
        let yes = |_: &str| true;
        let two = strings(&["a", "b"]);
        let none = Remembered::default();
        // A web URI with a default: no dialog.
        let d = decide(
            "https",
            "x-scheme-handler/https",
            Some("b".into()),
            two.clone(),
            &none,
            false,
            yes,
        );
        assert_eq!(d.launch.as_deref(), Some("b"));
        // ... unless the app asks, or the user said always ask.
        let d = decide(
            "https",
            "x-scheme-handler/https",
            Some("b".into()),
            two.clone(),
            &none,
            true,
            yes,
        );
        assert_eq!((d.launch, d.last_choice.as_deref()), (None, Some("b")));
        let paranoid = Remembered {
            always_ask: true,
            ..Remembered::default()
        };
        let d = decide(
            "https",
            "x-scheme-handler/https",
            Some("b".into()),
            two.clone(),
            &paranoid,
            false,
            yes,
        );
        assert_eq!(d.launch, None);
        // Another scheme with two handlers: the dialog, the default first.
        let d = decide(
            "irc",
            "x-scheme-handler/irc",
            Some("b".into()),
            two.clone(),
            &none,
            false,
            yes,
        );
        assert_eq!((d.launch, d.last_choice.as_deref()), (None, Some("b")));
        // One handler: no dialog.
        let d = decide(
            "irc",
            "x-scheme-handler/irc",
            None,
            strings(&["a"]),
            &none,
            false,
            yes,
        );
        assert_eq!(d.launch.as_deref(), Some("a"));
        // Chosen three times: no dialog; twice: the dialog, preselected.
        let thrice = Remembered::parse(&strings(&["a", "3", "3"]), false);
        let d = decide(
            "file",
            "text/plain",
            Some("b".into()),
            two.clone(),
            &thrice,
            false,
            yes,
        );
        assert_eq!(d.launch.as_deref(), Some("a"));
        let twice = Remembered::parse(&strings(&["a", "2", "3"]), false);
        let d = decide(
            "file",
            "text/plain",
            Some("b".into()),
            two.clone(),
            &twice,
            false,
            yes,
        );
        assert_eq!((d.launch, d.last_choice.as_deref()), (None, Some("a")));
        // A threshold of INT_MAX always asks.
        let max = Remembered::parse(&strings(&["a", "3", "2147483647"]), false);
        assert_eq!(
            decide("file", "text/plain", None, two, &max, false, yes).launch,
            None
        );
        // Nothing installed at all: the dialog (with no choices).
        let d = decide(
            "irc",
            "x-scheme-handler/irc",
            None,
            vec![],
            &none,
            false,
            yes,
        );
        assert_eq!(d.launch, None);
    }

    #[test]
    fn always_ask_is_read_from_the_data_vardict() {
        let mut dict = std::collections::HashMap::new();
        dict.insert("always-ask", Value::from(true));
        let data = OwnedValue::try_from(Value::from(dict)).unwrap();
        assert!(always_ask(&data));
        let wrapped = OwnedValue::try_from(Value::Value(Box::new(Value::from({
            let mut d = std::collections::HashMap::new();
            d.insert("always-ask", Value::from(true));
            d
        }))))
        .unwrap();
        assert!(always_ask(&wrapped));
        assert!(!always_ask(&OwnedValue::from(1u32)));
    }
}
