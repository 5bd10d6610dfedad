//! `org.freedesktop.portal.FileChooser` (version 4), as upstream's
//! `file-chooser.c`: options filtered and validated per method, the dialog
//! asked of the backend's `org.freedesktop.impl.portal.FileChooser` with the
//! request's handle, and the chosen `file://` URIs returned: unchanged to a
//! host caller, exported through the document store to a sandboxed one.

use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use porthole_service::{Caller, Callers, PortalError};
use zbus::message::Header;
use zvariant::{ObjectPath, OwnedObjectPath, OwnedValue, Value};

use crate::documents::{self, Handover};
use crate::options::{self, OptionKey, Options, decode};
use crate::request::{self, BackendHandle, Requests};

pub const INTERFACE: &str = "org.freedesktop.portal.FileChooser";
pub const IMPL_INTERFACE: &str = "org.freedesktop.impl.portal.FileChooser";
/// Where backends serve their interfaces.
pub const BACKEND_PATH: &str = "/org/freedesktop/portal/desktop";
pub const LOCKDOWN_INTERFACE: &str = "org.freedesktop.impl.portal.Lockdown";

type Filter = (String, Vec<(u32, String)>);
type Choice = (String, String, Vec<(String, String)>, String);

fn check_filter((name, patterns): &Filter) -> Result<(), String> {
    if name.is_empty() {
        return Err("invalid filter: name is empty".into());
    }
    if patterns.is_empty() {
        return Err("invalid filter: no filters".into());
    }
    for (kind, pattern) in patterns {
        match kind {
            0 if pattern.is_empty() => return Err("invalid filter: invalid glob pattern".into()),
            1 if pattern.is_empty() => {
                return Err("invalid filter: invalid content type".into());
            }
            0 | 1 => {}
            other => return Err(format!("invalid filter: invalid filter type: {other}")),
        }
    }
    Ok(())
}

fn validate_filters(value: &Value<'_>, _: &Options) -> Result<(), String> {
    let filters: Vec<Filter> = decode(value)?;
    filters.iter().try_for_each(check_filter)
}

fn validate_current_filter(value: &Value<'_>, options: &Options) -> Result<(), String> {
    let current: Filter = decode(value)?;
    check_filter(&current)?;
    // With a non-empty filters list, current_filter must be one of them.
    let Some(filters) = options::lookup(options, "filters", "a(sa(us))") else {
        return Ok(());
    };
    let filters: Vec<Filter> = decode(filters)?;
    if filters.is_empty() || filters.contains(&current) {
        Ok(())
    } else {
        Err(
            "current_filter, if specified, must be present in filters list if list is nonempty"
                .into(),
        )
    }
}

fn check_choice((id, label, choices, initial): &Choice) -> Result<(), String> {
    if id.is_empty() {
        return Err("invalid choice: id is empty".into());
    }
    if label.is_empty() {
        return Err("invalid choice: label is empty".into());
    }
    if choices.is_empty() {
        // A check box: initial "", "true" or "false".
        return match initial.as_str() {
            "" | "true" | "false" => Ok(()),
            other => Err(format!("invalid choice: bad current option: {other}")),
        };
    }
    for (option_id, option_label) in choices {
        if option_id.is_empty() {
            return Err("invalid choice: option id is empty".into());
        }
        if option_label.is_empty() {
            return Err("invalid choice: option label is empty".into());
        }
    }
    if !initial.is_empty() && !choices.iter().any(|(o, _)| o == initial) {
        return Err(format!("invalid choice: bad current option: {initial}"));
    }
    Ok(())
}

fn validate_choices(value: &Value<'_>, _: &Options) -> Result<(), String> {
    let choices: Vec<Choice> = decode(value)?;
    choices.iter().try_for_each(check_choice)
}

/// SaveFiles' `files`: each a plain file name, never a path (the fix for
/// GHSA-cm83-2936-gxjm: backends append these names to the chosen folder).
fn validate_files(value: &Value<'_>, _: &Options) -> Result<(), String> {
    let files: Vec<Vec<u8>> = decode(value)?;
    for file in &files {
        let name = file.strip_suffix(&[0]).unwrap_or(file);
        if name.is_empty()
            || name == b"."
            || name == b".."
            || name.contains(&b'/')
            || name.contains(&0)
        {
            return Err(format!(
                "invalid file name in files: {:?}",
                String::from_utf8_lossy(name)
            ));
        }
    }
    Ok(())
}

// current_folder and current_file are looked up apart (wrong types are
// ignored there, as upstream does), to translate document paths.
const OPEN_FILE: &[OptionKey] = &[
    OptionKey::plain("accept_label", "s"),
    OptionKey::plain("modal", "b"),
    OptionKey::plain("multiple", "b"),
    OptionKey::plain("directory", "b"),
    OptionKey::checked("filters", "a(sa(us))", validate_filters),
    OptionKey::checked("current_filter", "(sa(us))", validate_current_filter),
    OptionKey::checked("choices", "a(ssa(ss)s)", validate_choices),
];

const SAVE_FILE: &[OptionKey] = &[
    OptionKey::plain("accept_label", "s"),
    OptionKey::plain("modal", "b"),
    OptionKey::checked("filters", "a(sa(us))", validate_filters),
    OptionKey::checked("current_filter", "(sa(us))", validate_current_filter),
    OptionKey::plain("current_name", "s"),
    OptionKey::checked("choices", "a(ssa(ss)s)", validate_choices),
];

const SAVE_FILES: &[OptionKey] = &[
    OptionKey::plain("accept_label", "s"),
    OptionKey::plain("modal", "b"),
    OptionKey::plain("current_name", "s"),
    OptionKey::plain("current_folder", "ay"),
    OptionKey::checked("files", "aay", validate_files),
    OptionKey::checked("choices", "a(ssa(ss)s)", validate_choices),
];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Method {
    OpenFile,
    SaveFile,
    SaveFiles,
}

impl Method {
    fn name(self) -> &'static str {
        match self {
            Method::OpenFile => "OpenFile",
            Method::SaveFile => "SaveFile",
            Method::SaveFiles => "SaveFiles",
        }
    }

    fn keys(self) -> &'static [OptionKey] {
        match self {
            Method::OpenFile => OPEN_FILE,
            Method::SaveFile => SAVE_FILE,
            Method::SaveFiles => SAVE_FILES,
        }
    }
}

/// The FileChooser portal on the frontend's object.
pub struct FileChooser {
    pub callers: Arc<Callers>,
    pub requests: Arc<Requests>,
    /// The backend's bus name.
    pub backend: String,
    /// See [`crate::desktop::Frontend::test_app`].
    pub test_app: Option<porthole_identity::AppId>,
    /// The `org.freedesktop.impl.portal.Lockdown` backend, if any.
    pub lockdown: Option<String>,
}

#[zbus::interface(name = "org.freedesktop.portal.FileChooser")]
impl FileChooser {
    async fn open_file(
        &self,
        parent_window: &str,
        title: &str,
        options: Options,
        #[zbus(header)] hdr: Header<'_>,
        #[zbus(connection)] conn: &zbus::Connection,
    ) -> Result<OwnedObjectPath, PortalError> {
        self.start(Method::OpenFile, conn, &hdr, parent_window, title, options)
            .await
    }

    async fn save_file(
        &self,
        parent_window: &str,
        title: &str,
        options: Options,
        #[zbus(header)] hdr: Header<'_>,
        #[zbus(connection)] conn: &zbus::Connection,
    ) -> Result<OwnedObjectPath, PortalError> {
        self.start(Method::SaveFile, conn, &hdr, parent_window, title, options)
            .await
    }

    async fn save_files(
        &self,
        parent_window: &str,
        title: &str,
        options: Options,
        #[zbus(header)] hdr: Header<'_>,
        #[zbus(connection)] conn: &zbus::Connection,
    ) -> Result<OwnedObjectPath, PortalError> {
        self.start(Method::SaveFiles, conn, &hdr, parent_window, title, options)
            .await
    }

    #[zbus(property(emits_changed_signal = "const"), name = "version")]
    fn version(&self) -> u32 {
        4
    }
}

impl FileChooser {
    /// The lockdown backend's `disable-save-to-disk`, read per call (no
    /// backend, or no answer: saving is allowed, as upstream's stand-in
    /// lockdown object says).
    async fn save_disabled(&self, conn: &zbus::Connection) -> bool {
        let Some(lockdown) = &self.lockdown else {
            return false;
        };
        let reply = conn
            .call_method(
                Some(lockdown.as_str()),
                BACKEND_PATH,
                Some("org.freedesktop.DBus.Properties"),
                "Get",
                &(LOCKDOWN_INTERFACE, "disable-save-to-disk"),
            )
            .await;
        match reply.and_then(|m| m.body().deserialize::<OwnedValue>()) {
            Ok(v) => matches!(&*v, Value::Bool(true)),
            Err(e) => {
                tracing::debug!(lockdown, "reading disable-save-to-disk: {e}");
                false
            }
        }
    }

    async fn start(
        &self,
        method: Method,
        conn: &zbus::Connection,
        hdr: &Header<'_>,
        parent_window: &str,
        title: &str,
        options: Options,
    ) -> Result<OwnedObjectPath, PortalError> {
        // Upstream's test app info has no engine, so it counts as a host
        // app (URIs returned as they are) that has an app id.
        let (caller, app_id) = match &self.test_app {
            Some(app_id) => (Caller::Host, app_id.as_str().to_owned()),
            None => {
                let caller = self.callers.identify(conn, hdr).await.require()?.clone();
                let app_id = caller.app_id_str().unwrap_or_default().to_owned();
                (caller, app_id)
            }
        };
        if method != Method::OpenFile && self.save_disabled(conn).await {
            return Err(PortalError::NotAllowed("File saving disabled".into()));
        }
        let sender = hdr
            .sender()
            .map(|s| s.to_string())
            .ok_or_else(|| PortalError::NotAllowed("a call without a sender".into()))?;
        let mut forwarded = options::filter(&options, method.keys())?;
        let token = request::token_of(&options)?;
        translate_paths(conn, method, &options, &mut forwarded).await;
        let directory = method == Method::OpenFile
            && options::lookup(&options, "directory", "b")
                .is_some_and(|v| matches!(&**v, Value::Bool(true)));

        let backend = BackendHandle::new(self.backend.clone());
        let asked = backend.asked.clone();
        let handle = self
            .requests
            .create(conn, &sender, &token, Some(backend))
            .await?;
        tracing::debug!(method = method.name(), %handle, ?caller, "request");

        let dialog = Dialog {
            conn: conn.clone(),
            requests: self.requests.clone(),
            backend: self.backend.clone(),
            method,
            handle: handle.clone(),
            caller,
            directory,
            asked,
        };
        let args = (
            handle.clone(),
            app_id,
            parent_window.to_owned(),
            title.to_owned(),
            forwarded,
        );
        let task = tokio::spawn(dialog.run(args));
        self.requests.set_task(&handle.as_ref(), task);
        Ok(handle)
    }
}

/// current_folder (and SaveFile's current_file) inside the caller's
/// document view become the host paths the backend can show.
async fn translate_paths(
    conn: &zbus::Connection,
    method: Method,
    options: &Options,
    forwarded: &mut Options,
) {
    if method == Method::SaveFiles {
        return;
    }
    if let Some(folder) = options::lookup(options, "current_folder", "ay") {
        let mut path: Vec<u8> = decode(folder).unwrap_or_default();
        if let Some(id) = documents::doc_id_in(path.strip_suffix(&[0]).unwrap_or(&path))
            && let Some(real) = documents::host_path(conn, &id).await
        {
            let parent = Path::new(std::ffi::OsStr::from_bytes(&real))
                .parent()
                .map(|p| p.as_os_str().as_bytes().to_vec())
                .unwrap_or(real);
            path = nul_terminated(parent);
        }
        put(forwarded, "current_folder", Value::from(path));
    }
    if method == Method::SaveFile
        && let Some(file) = options::lookup(options, "current_file", "ay")
    {
        let mut path: Vec<u8> = decode(file).unwrap_or_default();
        if let Some(id) = documents::doc_id_in(path.strip_suffix(&[0]).unwrap_or(&path))
            && let Some(real) = documents::host_path(conn, &id).await
        {
            path = nul_terminated(real);
        }
        put(forwarded, "current_file", Value::from(path));
    }
}

fn nul_terminated(mut bytes: Vec<u8>) -> Vec<u8> {
    bytes.push(0);
    bytes
}

fn put(dict: &mut Options, key: &str, value: Value<'_>) {
    match OwnedValue::try_from(value) {
        Ok(v) => {
            dict.insert(key.to_owned(), v);
        }
        Err(e) => tracing::error!(key, "building a result: {e}"),
    }
}

/// One request's work, run as an abortable task.
struct Dialog {
    conn: zbus::Connection,
    requests: Arc<Requests>,
    backend: String,
    method: Method,
    handle: OwnedObjectPath,
    caller: Caller,
    directory: bool,
    /// Set before the backend is asked (see [`BackendHandle::asked`]).
    asked: Arc<AtomicBool>,
}

impl Dialog {
    async fn run(self, args: (OwnedObjectPath, String, String, String, Options)) {
        self.asked.store(true, Ordering::SeqCst);
        let reply = self
            .conn
            .call_method(
                Some(self.backend.as_str()),
                BACKEND_PATH,
                Some(IMPL_INTERFACE),
                self.method.name(),
                &args,
            )
            .await;
        let (response, results) = match reply.and_then(|m| m.body().deserialize::<(u32, Options)>())
        {
            Ok(answer) => answer,
            Err(e) => {
                tracing::warn!(handle = %self.handle, "backend call failed: {e}");
                (request::OTHER, Options::new())
            }
        };
        let results = self.results(response, results).await;
        let path: ObjectPath<'_> = self.handle.as_ref();
        self.requests
            .respond(&self.conn, &path, response, results)
            .await;
    }

    /// What the app gets: `uris` always, `choices` and `current_filter`
    /// when the backend gave them, for a successful dialog.
    async fn results(&self, response: u32, backend: Options) -> Options {
        let mut out = Options::new();
        let mut uris: Vec<String> = Vec::new();
        if response == request::SUCCESS {
            for (key, signature) in [("choices", "a(ss)"), ("current_filter", "(sa(us))")] {
                if let Some(v) = options::lookup(&backend, key, signature)
                    && let Ok(v) = options::clone(v)
                {
                    out.insert(key.to_owned(), v);
                }
            }
            // A missing `writable` means writable (upstream clears the flag
            // only on an explicit false).
            let writable = !options::lookup(&backend, "writable", "b")
                .is_some_and(|v| matches!(&**v, Value::Bool(false)));
            let how = Handover {
                writable,
                directory: self.directory,
                for_save: self.method != Method::OpenFile,
            };
            let chosen: Vec<String> = options::lookup(&backend, "uris", "as")
                .and_then(|v| decode(v).ok())
                .unwrap_or_default();
            for uri in chosen {
                if !uri.starts_with("file://") {
                    tracing::warn!(%uri, "only URIs with the file:// scheme are allowed");
                    continue;
                }
                match &self.caller {
                    Caller::App { app_id, .. } => {
                        match documents::register(&self.conn, &uri, app_id.as_str(), how).await {
                            Ok(doc_uri) => {
                                tracing::debug!(%uri, %doc_uri, "exported");
                                uris.push(doc_uri);
                            }
                            Err(e) => tracing::warn!("failed to register {uri}: {e}"),
                        }
                    }
                    _ => uris.push(uri),
                }
            }
        }
        put(&mut out, "uris", Value::from(uris));
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(value: Value<'_>) -> OwnedValue {
        OwnedValue::try_from(value).unwrap()
    }

    fn filter(label: &str, kind: u32, pattern: &str) -> Filter {
        (label.into(), vec![(kind, pattern.into())])
    }

    fn check(method: Method, key: &str, value: Value<'_>) -> Result<Options, PortalError> {
        let mut o = Options::new();
        o.insert(key.into(), v(value));
        options::filter(&o, method.keys())
    }

    #[test]
    fn filters_are_checked_as_upstream() {
        assert!(
            check(
                Method::OpenFile,
                "filters",
                Value::from(vec![filter("Text", 0, "*.txt")])
            )
            .is_ok()
        );
        for bad in [
            filter("", 0, "*"),
            filter("A", 2, "*"),
            filter("A", 0, ""),
            filter("A", 1, ""),
        ] {
            assert!(
                check(Method::OpenFile, "filters", Value::from(vec![bad.clone()])).is_err(),
                "{bad:?}"
            );
        }
        let none: Filter = ("Empty".into(), vec![]);
        assert!(check(Method::SaveFile, "filters", Value::from(vec![none])).is_err());
        // SaveFiles takes no filters: dropped, not checked.
        let out = check(Method::SaveFiles, "filters", Value::from("wrong type")).unwrap();
        assert!(out.is_empty());
    }

    #[test]
    fn current_filter_must_be_listed_when_filters_are() {
        let mut o = Options::new();
        o.insert(
            "current_filter".into(),
            v(Value::from(filter("Text", 0, "*.txt"))),
        );
        assert!(options::filter(&o, OPEN_FILE).is_ok());
        o.insert(
            "filters".into(),
            v(Value::from(vec![filter("Images", 1, "image/*")])),
        );
        assert!(options::filter(&o, OPEN_FILE).is_err());
        o.insert(
            "filters".into(),
            v(Value::from(vec![
                filter("Images", 1, "image/*"),
                filter("Text", 0, "*.txt"),
            ])),
        );
        assert!(options::filter(&o, OPEN_FILE).is_ok());
    }

    #[test]
    fn choices_are_checked_as_upstream() {
        let ok: Vec<Choice> = vec![
            (
                "enc".into(),
                "Encoding".into(),
                vec![("utf8".into(), "UTF-8".into())],
                "utf8".into(),
            ),
            ("bold".into(), "Bold".into(), vec![], "true".into()),
        ];
        assert!(check(Method::SaveFiles, "choices", Value::from(ok)).is_ok());
        for bad in [
            ("".into(), "L".into(), vec![], "".into()),
            ("i".into(), "".into(), vec![], "".into()),
            ("i".into(), "L".into(), vec![], "maybe".into()),
            (
                "i".into(),
                "L".into(),
                vec![("a".into(), "A".into())],
                "b".into(),
            ),
            (
                "i".into(),
                "L".into(),
                vec![("".into(), "A".into())],
                "".into(),
            ),
        ] {
            let bad: Choice = bad;
            assert!(
                check(Method::OpenFile, "choices", Value::from(vec![bad.clone()])).is_err(),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn save_files_names_are_file_names() {
        let ok = vec![b"a.txt\0".to_vec(), b"b".to_vec()];
        assert!(check(Method::SaveFiles, "files", Value::from(ok)).is_ok());
        for bad in [&b"../x\0"[..], b"a/b\0", b".\0", b"..", b"\0", b""] {
            let files = vec![bad.to_vec()];
            assert!(
                check(Method::SaveFiles, "files", Value::from(files)).is_err(),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn each_method_passes_on_its_own_keys() {
        assert!(
            check(Method::OpenFile, "multiple", Value::from(true))
                .unwrap()
                .contains_key("multiple")
        );
        assert!(
            check(Method::SaveFile, "multiple", Value::from(true))
                .unwrap()
                .is_empty()
        );
        assert!(
            check(Method::SaveFile, "current_name", Value::from("a.txt"))
                .unwrap()
                .contains_key("current_name")
        );
        assert!(
            check(Method::OpenFile, "current_name", Value::from("a.txt"))
                .unwrap()
                .is_empty()
        );
        assert!(check(Method::OpenFile, "modal", Value::from("no")).is_err());
    }
}
