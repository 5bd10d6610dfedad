//! Terminal mode: each dialog is shown on the prompt's standard output and
//! answered on its standard input, one dialog at a time (for headless and
//! remote sessions: run `porthole-prompt --terminal` in a terminal).
//!
//! OpenFile asks for paths, one per line, ended by an empty line (none at
//! all cancels); SaveFile for one path; SaveFiles for the folder the named
//! files go into; AccessDialog for y/N. Each choice of the dialog is then
//! asked by name (Enter keeps its initial value). Relative paths are taken
//! from the dialog's current folder, else from the prompt's working
//! directory. A dialog the app closes meanwhile says so and ends; the end
//! of input cancels every dialog from then on (response 2).

use std::io::{BufRead, Write};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use tokio::sync::{mpsc, oneshot};
use zvariant::{OwnedValue, Value};

use crate::dialog::{Asked, Results};
use crate::record::value_json;
use crate::script::Method;

type Choice = (String, String, Vec<(String, String)>, String);

/// The terminal: lines typed, and where dialogs are shown.
pub struct Terminal {
    /// Held for the whole of a dialog: one dialog at a time.
    lines: tokio::sync::Mutex<mpsc::Receiver<String>>,
    out: Mutex<Box<dyn Write + Send>>,
}

/// One line of input, or why there is none.
enum Line {
    Text(String),
    Closed,
    Eof,
}

impl Terminal {
    /// Standard input and output. A thread reads the input, so a dialog
    /// closed while waiting leaves nothing blocked.
    pub fn stdio() -> Self {
        let (tx, rx) = mpsc::channel(64);
        std::thread::spawn(move || {
            for line in std::io::stdin().lock().lines() {
                let Ok(line) = line else { break };
                if tx.blocking_send(line).is_err() {
                    break;
                }
            }
        });
        Self {
            lines: tokio::sync::Mutex::new(rx),
            out: Mutex::new(Box::new(std::io::stdout())),
        }
    }

    fn say(&self, text: &str) {
        let mut out = self.out.lock().expect("terminal lock");
        if let Err(e) = out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
            tracing::warn!("writing to the terminal: {e}");
        }
    }

    /// Shows the dialog and reads the answer.
    pub(crate) async fn ask(
        &self,
        asked: &Asked<'_>,
        mut closed: oneshot::Receiver<()>,
    ) -> (u32, Results, &'static str) {
        let mut lines = tokio::select! {
            lines = self.lines.lock() => lines,
            _ = &mut closed => return (2, Results::new(), "closed"),
        };
        self.say(&describe(asked));
        match self.converse(asked, &mut lines, &mut closed).await {
            Ok((response, results)) => (response, results, "answered"),
            Err(Line::Closed) => {
                self.say("(closed by the app)\n\n");
                (2, Results::new(), "closed")
            }
            Err(_) => {
                self.say("(end of input: cancelled)\n\n");
                (2, Results::new(), "no input")
            }
        }
    }

    async fn line(
        &self,
        prompt: &str,
        lines: &mut mpsc::Receiver<String>,
        closed: &mut oneshot::Receiver<()>,
    ) -> Result<String, Line> {
        self.say(prompt);
        let line = tokio::select! {
            line = lines.recv() => line.map_or(Line::Eof, Line::Text),
            _ = closed => Line::Closed,
        };
        match line {
            Line::Text(t) => Ok(t.trim().to_owned()),
            other => Err(other),
        }
    }

    async fn converse(
        &self,
        asked: &Asked<'_>,
        lines: &mut mpsc::Receiver<String>,
        closed: &mut oneshot::Receiver<()>,
    ) -> Result<(u32, Results), Line> {
        if asked.method == Method::ChooseApplication {
            return self.choose_app(asked, lines, closed).await;
        }
        let base = folder_of(asked.options);
        let mut uris: Vec<String> = Vec::new();
        match asked.method {
            Method::OpenFile => {
                let mut prompt =
                    "Path(s) to open, one per line, an empty line to finish (none: cancel):\n> ";
                loop {
                    let line = self.line(prompt, lines, closed).await?;
                    if line.is_empty() {
                        break;
                    }
                    uris.push(file_uri(&base.join(line)));
                    prompt = "> ";
                }
            }
            Method::SaveFile => {
                let line = self
                    .line("Save as (empty: cancel): ", lines, closed)
                    .await?;
                if !line.is_empty() {
                    uris.push(file_uri(&base.join(line)));
                }
            }
            Method::SaveFiles => {
                let line = self
                    .line("Folder to save into (empty: cancel): ", lines, closed)
                    .await?;
                if !line.is_empty() {
                    let folder = base.join(line);
                    for name in files_of(asked.options) {
                        uris.push(file_uri(&folder.join(name)));
                    }
                }
            }
            // Answered by choose_app.
            Method::ChooseApplication => {}
            Method::AccessDialog => {
                let line = self.line("Allow? [y/N]: ", lines, closed).await?;
                if !matches!(line.to_ascii_lowercase().as_str(), "y" | "yes") {
                    self.say("denied\n\n");
                    return Ok((1, Results::new()));
                }
            }
        }
        if asked.method != Method::AccessDialog && uris.is_empty() {
            self.say("cancelled\n\n");
            return Ok((1, Results::new()));
        }
        let mut picked: Vec<(String, String)> = Vec::new();
        for (id, label, options, initial) in choices_of(asked.options) {
            let names: Vec<&str> = if options.is_empty() {
                vec!["true", "false"]
            } else {
                options.iter().map(|(o, _)| o.as_str()).collect()
            };
            let prompt = format!("{label} [{}] (Enter: {initial:?}): ", names.join("/"));
            let value = loop {
                let line = self.line(&prompt, lines, closed).await?;
                if line.is_empty() {
                    break initial.clone();
                }
                if names.contains(&line.as_str()) {
                    break line;
                }
                self.say(&format!("not one of {}\n", names.join(", ")));
            };
            picked.push((id, value));
        }
        let mut results = Results::new();
        if asked.method != Method::AccessDialog {
            put(&mut results, "uris", Value::from(uris));
        }
        if !picked.is_empty() {
            put(&mut results, "choices", Value::from(picked));
        }
        self.say("done\n\n");
        Ok((0, results))
    }
}

impl Terminal {
    /// AppChooser: the candidates numbered, the last choice marked; a
    /// number picks one, Enter the marked one, `0` (or Enter without a
    /// mark) cancels.
    async fn choose_app(
        &self,
        asked: &Asked<'_>,
        lines: &mut mpsc::Receiver<String>,
        closed: &mut oneshot::Receiver<()>,
    ) -> Result<(u32, Results), Line> {
        let apps = crate::app_chooser::candidates(asked.handle.as_str(), asked.options);
        let last = asked
            .options
            .get("last_choice")
            .and_then(|v| v.try_clone().ok())
            .and_then(|v| String::try_from(v).ok())
            .filter(|l| apps.contains(l));
        let mut text = String::from("Open with:\n");
        for (i, app) in apps.iter().enumerate() {
            let mark = if last.as_ref() == Some(app) { " *" } else { "" };
            text.push_str(&format!("  {}) {app}{mark}\n", i + 1));
        }
        self.say(&text);
        let prompt = match &last {
            Some(l) => format!("Number (Enter: {l}, 0: cancel): "),
            None => "Number (0 or Enter: cancel): ".to_owned(),
        };
        let chosen = loop {
            let line = self.line(&prompt, lines, closed).await?;
            if line.is_empty() {
                break last.clone();
            }
            match line.parse::<usize>() {
                Ok(0) => break None,
                Ok(n) if n <= apps.len() => break Some(apps[n - 1].clone()),
                _ => self.say(&format!("not a number from 0 to {}\n", apps.len())),
            }
        };
        let Some(app) = chosen else {
            self.say("cancelled\n\n");
            return Ok((1, Results::new()));
        };
        let mut results = Results::new();
        put(&mut results, "choice", Value::from(app.as_str()));
        self.say(&format!("open with {app}\n\n"));
        Ok((0, results))
    }
}

/// What the dialog says, with each option as its JSON.
fn describe(asked: &Asked<'_>) -> String {
    let who = if asked.app_id.is_empty() {
        "a host app".to_owned()
    } else {
        asked.app_id.to_owned()
    };
    let mut text = format!(
        "── {} from {who}: {:?}\n",
        asked.method.as_str(),
        asked.title
    );
    if let Some((subtitle, body)) = asked.text {
        text.push_str(&format!("   {subtitle}\n   {body}\n"));
    }
    let mut keys: Vec<&String> = asked.options.keys().collect();
    keys.sort();
    for key in keys {
        text.push_str(&format!("   {key}: {}\n", value_json(&asked.options[key])));
    }
    text
}

fn put(results: &mut Results, key: &str, value: Value<'_>) {
    match OwnedValue::try_from(value) {
        Ok(v) => {
            results.insert(key.to_owned(), v);
        }
        Err(e) => tracing::error!(key, "building a result: {e}"),
    }
}

/// A NUL-terminated byte string option (`ay`) as bytes.
fn bytes(value: &Value<'_>) -> Option<Vec<u8>> {
    let mut v: Vec<u8> = value.try_clone().ok()?.try_into().ok()?;
    if v.last() == Some(&0) {
        v.pop();
    }
    Some(v)
}

/// Where relative paths start: the dialog's current folder, else ours.
fn folder_of(options: &Results) -> PathBuf {
    options
        .get("current_folder")
        .and_then(|v| bytes(v))
        .filter(|b| b.first() == Some(&b'/'))
        .map(|b| PathBuf::from(std::ffi::OsStr::from_bytes(&b)))
        .or_else(|| std::env::current_dir().ok())
        .unwrap_or_else(|| PathBuf::from("/"))
}

fn files_of(options: &Results) -> Vec<PathBuf> {
    let Some(value) = options.get("files") else {
        return Vec::new();
    };
    let Ok(Value::Array(files)) = value.try_clone().map(Value::from) else {
        return Vec::new();
    };
    files
        .iter()
        .filter_map(bytes)
        .map(|b| PathBuf::from(std::ffi::OsStr::from_bytes(&b)))
        .collect()
}

fn choices_of(options: &Results) -> Vec<Choice> {
    options
        .get("choices")
        .and_then(|v| v.try_clone().ok())
        .and_then(|v| Vec::<Choice>::try_from(v).ok())
        .unwrap_or_default()
}

/// The `file://` URI of an absolute path, escaped as GLib escapes it.
fn file_uri(path: &Path) -> String {
    let mut uri = String::from("file://");
    for &b in path.as_os_str().as_bytes() {
        if b.is_ascii_alphanumeric() || b"-._~/!$&'()*+,;=:@".contains(&b) {
            uri.push(b as char);
        } else {
            uri.push_str(&format!("%{b:02X}"));
        }
    }
    uri
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uris_and_folders() {
        assert_eq!(file_uri(Path::new("/tmp/a b.txt")), "file:///tmp/a%20b.txt");
        let mut o = Results::new();
        o.insert(
            "current_folder".into(),
            OwnedValue::try_from(Value::from(b"/srv/x\0".to_vec())).unwrap(),
        );
        o.insert(
            "files".into(),
            OwnedValue::try_from(Value::from(vec![b"a\0".to_vec(), b"b".to_vec()])).unwrap(),
        );
        assert_eq!(folder_of(&o), Path::new("/srv/x"));
        assert_eq!(files_of(&o), [PathBuf::from("a"), PathBuf::from("b")]);
    }
}
