//! The answer script: what the scripted backend answers, per dialog.
//!
//! One JSON object per line; blank lines and lines starting with `#` are
//! ignored. Each object answers one dialog of one method:
//!
//! ```text
//! # pick a file, tick a choice, end on the "Text" filter
//! {"method": "OpenFile", "uris": ["file:///home/me/a.txt"], "choices": [["encoding", "utf8"]],
//!  "current_filter": ["Text", [[0, "*.txt"]]], "writable": false}
//! # the user cancels the next save dialog
//! {"method": "SaveFile", "response": 1}
//! # an access dialog the user grants, remembering it
//! {"method": "AccessDialog", "choices": [["remember", "always"]]}
//! # a dialog nobody answers: it stays up until the caller closes it
//! {"method": "SaveFiles", "hold": true}
//! # open the link with this handler (a desktop id without .desktop)
//! {"method": "ChooseApplication", "choice": "org.example.Browser"}
//! ```
//!
//! Keys: `method` (`OpenFile`, `SaveFile`, `SaveFiles`, `AccessDialog`,
//! `ChooseApplication`; required), `response` (0 success, 1 cancelled, 2 other; default 0),
//! `uris`, `choices` (`[id, option]` pairs), `current_filter` (`[label,
//! [[kind, pattern], ...]]`, kind 0 glob, 1 MIME type), `writable` (OpenFile
//! only), `choice` (ChooseApplication only: the chosen app), `delay_ms` (answer after this long), `hold` (never answer; the
//! dialog ends only through `Request.Close`, with response 2). Unknown keys
//! are an error, so a typo does not silently change a test.
//!
//! The answers of one method are used in order; the last one then answers
//! every later dialog of that method. A method with no answer at all is
//! answered 2 (and logged as unscripted).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use serde::Deserialize;

/// The dialogs the backend shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize)]
pub enum Method {
    OpenFile,
    SaveFile,
    SaveFiles,
    AccessDialog,
    ChooseApplication,
}

impl Method {
    pub fn as_str(self) -> &'static str {
        match self {
            Method::OpenFile => "OpenFile",
            Method::SaveFile => "SaveFile",
            Method::SaveFiles => "SaveFiles",
            Method::AccessDialog => "AccessDialog",
            Method::ChooseApplication => "ChooseApplication",
        }
    }
}

/// A filter as the portal spells it: `(sa(us))`.
pub type Filter = (String, Vec<(u32, String)>);

/// One scripted answer.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Answer {
    pub method: Method,
    #[serde(default)]
    pub response: u32,
    #[serde(default)]
    pub uris: Option<Vec<String>>,
    #[serde(default)]
    pub choices: Option<Vec<(String, String)>>,
    #[serde(default)]
    pub current_filter: Option<Filter>,
    #[serde(default)]
    pub writable: Option<bool>,
    #[serde(default)]
    pub choice: Option<String>,
    #[serde(default)]
    pub delay_ms: u64,
    #[serde(default)]
    pub hold: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum ScriptError {
    #[error("reading the script {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}:{line}: {message}")]
    Parse {
        path: PathBuf,
        line: usize,
        message: String,
    },
}

/// The parsed script, with each method's place in its answers.
#[derive(Debug, Default)]
pub struct Script {
    answers: Mutex<HashMap<Method, Queue>>,
}

#[derive(Debug, Default)]
struct Queue {
    answers: Vec<Answer>,
    next: usize,
}

impl Script {
    pub fn load(path: &Path) -> Result<Self, ScriptError> {
        let text = std::fs::read_to_string(path).map_err(|source| ScriptError::Read {
            path: path.to_owned(),
            source,
        })?;
        Self::parse(&text).map_err(|(line, message)| ScriptError::Parse {
            path: path.to_owned(),
            line,
            message,
        })
    }

    /// Parses the script text; an error names the 1-based line.
    pub fn parse(text: &str) -> Result<Self, (usize, String)> {
        let mut answers: HashMap<Method, Queue> = HashMap::new();
        for (i, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let answer: Answer = serde_json::from_str(line).map_err(|e| (i + 1, e.to_string()))?;
            if answer.response > 2 {
                return Err((
                    i + 1,
                    format!("response {} is not 0, 1 or 2", answer.response),
                ));
            }
            if answer.writable.is_some() && answer.method != Method::OpenFile {
                return Err((i + 1, "writable is an OpenFile result only".into()));
            }
            if answer.method == Method::AccessDialog
                && (answer.uris.is_some() || answer.current_filter.is_some())
            {
                return Err((i + 1, "AccessDialog answers only with choices".into()));
            }
            if answer.choice.is_some() && answer.method != Method::ChooseApplication {
                return Err((i + 1, "choice is a ChooseApplication result only".into()));
            }
            if answer.method == Method::ChooseApplication
                && (answer.uris.is_some()
                    || answer.current_filter.is_some()
                    || answer.choices.is_some())
            {
                return Err((i + 1, "ChooseApplication answers only with choice".into()));
            }
            answers
                .entry(answer.method)
                .or_default()
                .answers
                .push(answer);
        }
        Ok(Self {
            answers: Mutex::new(answers),
        })
    }

    /// The answer for the next dialog of `method`, if the script has one.
    pub fn next(&self, method: Method) -> Option<Answer> {
        let mut map = self.answers.lock().expect("script lock");
        let queue = map.get_mut(&method)?;
        let answer = queue.answers.get(queue.next).or(queue.answers.last())?;
        let answer = answer.clone();
        if queue.next < queue.answers.len() {
            queue.next += 1;
        }
        Some(answer)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_go_in_order_and_the_last_repeats() {
        let script = Script::parse(
            "# comment\n\n{\"method\": \"OpenFile\", \"uris\": [\"file:///a\"]}\n\
             {\"method\": \"OpenFile\", \"response\": 1}\n\
             {\"method\": \"AccessDialog\", \"choices\": [[\"remember\", \"always\"]]}\n",
        )
        .unwrap();
        let first = script.next(Method::OpenFile).unwrap();
        assert_eq!(first.response, 0);
        assert_eq!(first.uris.as_deref(), Some(&["file:///a".to_owned()][..]));
        assert_eq!(script.next(Method::OpenFile).unwrap().response, 1);
        assert_eq!(script.next(Method::OpenFile).unwrap().response, 1);
        let access = script.next(Method::AccessDialog).unwrap();
        assert_eq!(
            access.choices,
            Some(vec![("remember".into(), "always".into())])
        );
        assert!(script.next(Method::SaveFile).is_none());
    }

    #[test]
    fn an_app_choice_is_a_desktop_id() {
        let script = Script::parse(
            "{\"method\": \"ChooseApplication\", \"choice\": \"org.example.Viewer\"}\n\
             {\"method\": \"ChooseApplication\", \"response\": 1}\n",
        )
        .unwrap();
        let a = script.next(Method::ChooseApplication).unwrap();
        assert_eq!(a.choice.as_deref(), Some("org.example.Viewer"));
        assert_eq!(script.next(Method::ChooseApplication).unwrap().response, 1);
    }

    #[test]
    fn filters_parse_as_the_portal_spells_them() {
        let script = Script::parse(
            r#"{"method": "SaveFile", "current_filter": ["Text", [[0, "*.txt"], [1, "text/plain"]]]}"#,
        )
        .unwrap();
        let a = script.next(Method::SaveFile).unwrap();
        assert_eq!(
            a.current_filter,
            Some((
                "Text".into(),
                vec![(0, "*.txt".into()), (1, "text/plain".into())]
            ))
        );
    }

    #[test]
    fn mistakes_name_their_line() {
        for (text, line) in [
            ("{\"method\": \"OpenFile\"}\n{\"method\": \"Nope\"}", 2),
            ("{\"method\": \"OpenFile\", \"respons\": 1}", 1),
            ("\n{\"method\": \"OpenFile\", \"response\": 3}", 2),
            ("{\"method\": \"SaveFile\", \"writable\": true}", 1),
            ("{\"method\": \"AccessDialog\", \"uris\": []}", 1),
            ("{\"method\": \"OpenFile\", \"choice\": \"a\"}", 1),
            (
                "{\"method\": \"ChooseApplication\", \"choice\": \"a\", \"uris\": []}",
                1,
            ),
            ("not json", 1),
        ] {
            let err = Script::parse(text).unwrap_err();
            assert_eq!(err.0, line, "{text}: {}", err.1);
        }
    }
}
