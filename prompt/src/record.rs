//! The record of every dialog asked: one JSON object per line, written when
//! the dialog ends, so a demo or a test can show what the backend was asked
//! and what it answered.

use std::collections::HashMap;
use std::fs::File;
use std::io::Write;
use std::path::Path;
use std::sync::Mutex;

use serde_json::{Map, Value as Json, json};
use zvariant::{OwnedValue, Value};

/// Where the records go: a file, or nowhere (the tracing log still shows
/// each dialog).
#[derive(Debug, Default)]
pub struct Record {
    file: Option<Mutex<File>>,
}

/// One dialog, as asked and as answered.
#[derive(Debug)]
pub struct Entry<'a> {
    pub method: &'a str,
    pub handle: &'a str,
    pub app_id: &'a str,
    pub parent_window: &'a str,
    pub title: &'a str,
    /// Access dialogs' subtitle and body.
    pub text: Option<(&'a str, &'a str)>,
    pub options: &'a HashMap<String, OwnedValue>,
    pub response: u32,
    pub results: &'a HashMap<String, OwnedValue>,
    /// How the dialog ended: "answered", "closed" or "unscripted".
    pub ended: &'a str,
}

impl Record {
    /// Appends to `path` (created if missing).
    pub fn to_file(path: &Path) -> std::io::Result<Self> {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)?;
        Ok(Self {
            file: Some(Mutex::new(file)),
        })
    }

    pub fn write(&self, entry: &Entry<'_>) {
        let mut line = json!({
            "method": entry.method,
            "handle": entry.handle,
            "app_id": entry.app_id,
            "parent_window": entry.parent_window,
            "title": entry.title,
            "options": dict_json(entry.options),
            "response": entry.response,
            "results": dict_json(entry.results),
            "ended": entry.ended,
        });
        if let (Some((subtitle, body)), Some(obj)) = (entry.text, line.as_object_mut()) {
            obj.insert("subtitle".into(), subtitle.into());
            obj.insert("body".into(), body.into());
        }
        tracing::info!(
            method = entry.method,
            app_id = entry.app_id,
            title = entry.title,
            response = entry.response,
            ended = entry.ended,
            results = %line["results"],
            "dialog"
        );
        if let Some(file) = &self.file {
            let mut text = line.to_string();
            text.push('\n');
            let mut f = file.lock().expect("record lock");
            if let Err(e) = f.write_all(text.as_bytes()).and_then(|()| f.flush()) {
                tracing::warn!("writing the dialog record: {e}");
            }
        }
    }
}

fn dict_json(dict: &HashMap<String, OwnedValue>) -> Json {
    let mut keys: Vec<_> = dict.keys().collect();
    keys.sort();
    let map: Map<String, Json> = keys
        .into_iter()
        .map(|k| (k.clone(), value_json(&dict[k])))
        .collect();
    Json::Object(map)
}

/// A D-Bus value as JSON: strings, numbers and booleans as themselves,
/// arrays and structures as arrays, dictionaries as objects, byte arrays
/// (file paths) as strings without their trailing NUL.
pub fn value_json(v: &Value<'_>) -> Json {
    match v {
        Value::U8(n) => json!(n),
        Value::Bool(b) => json!(b),
        Value::I16(n) => json!(n),
        Value::U16(n) => json!(n),
        Value::I32(n) => json!(n),
        Value::U32(n) => json!(n),
        Value::I64(n) => json!(n),
        Value::U64(n) => json!(n),
        Value::F64(n) => json!(n),
        Value::Str(s) => json!(s.as_str()),
        Value::Signature(s) => json!(s.to_string()),
        Value::ObjectPath(p) => json!(p.as_str()),
        Value::Value(inner) => value_json(inner),
        Value::Array(a) if a.element_signature() == "y" => {
            let bytes: Vec<u8> = a
                .iter()
                .filter_map(|b| match b {
                    Value::U8(b) => Some(*b),
                    _ => None,
                })
                .collect();
            let bytes = bytes.strip_suffix(&[0]).unwrap_or(&bytes);
            json!(String::from_utf8_lossy(bytes))
        }
        Value::Array(a) => Json::Array(a.iter().map(value_json).collect()),
        Value::Dict(d) => {
            let map: Map<String, Json> = d
                .iter()
                .map(|(k, v)| {
                    let key = match value_json(k) {
                        Json::String(s) => s,
                        other => other.to_string(),
                    };
                    (key, value_json(v))
                })
                .collect();
            Json::Object(map)
        }
        Value::Structure(s) => Json::Array(s.fields().iter().map(value_json).collect()),
        Value::Fd(_) => json!("<fd>"),
        // GVariant's maybe type exists when zvariant's `gvariant` feature
        // is on (the permission store's GVDB files turn it on workspace-wide);
        // D-Bus has no such type, so no dialog sends one.
        #[allow(unreachable_patterns)]
        other => json!(other.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_read_as_json() {
        let filter: (String, Vec<(u32, String)>) = ("Text".into(), vec![(0, "*.txt".into())]);
        assert_eq!(
            value_json(&Value::from(filter)),
            json!(["Text", [[0, "*.txt"]]])
        );
        assert_eq!(
            value_json(&Value::from(b"/tmp/x\0".to_vec())),
            json!("/tmp/x")
        );
        assert_eq!(value_json(&Value::from(true)), json!(true));
    }

    #[test]
    fn a_record_is_one_json_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log");
        let record = Record::to_file(&path).unwrap();
        let mut results = HashMap::new();
        results.insert(
            "uris".to_owned(),
            OwnedValue::try_from(Value::from(vec!["file:///a"])).unwrap(),
        );
        let options = HashMap::new();
        record.write(&Entry {
            method: "OpenFile",
            handle: "/h",
            app_id: "org.example.App",
            parent_window: "",
            title: "Open",
            text: None,
            options: &options,
            response: 0,
            results: &results,
            ended: "answered",
        });
        let text = std::fs::read_to_string(&path).unwrap();
        let line: Json = serde_json::from_str(text.trim_end()).unwrap();
        assert_eq!(line["results"]["uris"], json!(["file:///a"]));
        assert_eq!(line["app_id"], json!("org.example.App"));
        assert_eq!(text.lines().count(), 1);
    }
}
