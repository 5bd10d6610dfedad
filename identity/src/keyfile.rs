//! A small reader and writer for the GLib key-file format.
//!
//! We need exactly what `/.flatpak-info` and Flatpak app metadata use: groups,
//! `key=value` lines, comments, the escapes `\s \n \t \r \\` (and `\;` in
//! lists) and `;`-separated lists. Localised keys (`Name[de]=`) are kept as
//! plain keys, as GLib keeps them with `G_KEY_FILE_KEEP_TRANSLATIONS`.
//!
//! Flatpak and xdg-desktop-portal read `/.flatpak-info` with GLib's
//! `GKeyFile`, so this parser accepts and refuses what GLib 2.74 does and
//! reads the same groups, keys and values (`identity/tests/keyfile_glib.rs`
//! compares the two on generated files). Like GLib it checks escapes only
//! when a value is read: [`KeyFile::get`] and [`KeyFile::get_list`] answer
//! `None` where `g_key_file_get_string` and `g_key_file_get_string_list`
//! fail. Where we differ we refuse more, never read something else: a file
//! that is not UTF-8 or holds a NUL byte, and a locale suffix with a
//! character outside ASCII letters, digits and `-_.@`, are errors here.

/// Errors while reading a key file.
#[derive(Debug, thiserror::Error)]
pub enum KeyFileError {
    #[error("line {line}: key outside of any group")]
    KeyOutsideGroup { line: usize },
    #[error("line {line}: expected `[Group]`, `key=value` or a comment")]
    Malformed { line: usize },
    #[error("line {line}: invalid group name")]
    BadGroupName { line: usize },
    #[error("line {line}: invalid key name")]
    BadKeyName { line: usize },
    #[error("line {line}: the first group's Encoding is not UTF-8")]
    UnsupportedEncoding { line: usize },
    #[error("line {line}: not UTF-8")]
    NotUtf8 { line: usize },
    /// GLib reads a line only up to a NUL byte; rather than guess what the
    /// writer meant, we refuse the file.
    #[error("line {line}: NUL byte")]
    Nul { line: usize },
}

/// An ordered key file: groups keep their order, keys keep theirs. A group
/// or key that appears twice is one group or key, at its first place; a
/// repeated key's last value wins (as GLib looks it up).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct KeyFile {
    groups: Vec<(String, Vec<(String, String)>)>,
}

impl KeyFile {
    pub fn new() -> Self {
        Self::default()
    }

    /// Parses the text of a key file. Values are kept in their escaped form
    /// and unescaped on access, so list separators stay distinguishable.
    pub fn parse(text: &str) -> Result<Self, KeyFileError> {
        let mut kf = KeyFile::new();
        let mut current: Option<usize> = None;
        for (i, line) in lines(text).enumerate() {
            let line_no = i + 1;
            if line.contains('\0') {
                return Err(KeyFileError::Nul { line: line_no });
            }
            let line = line.trim_start_matches(is_glib_space);
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            if line.starts_with('[') {
                // Never a key: a key name cannot start with '['.
                let name = group_header(line).ok_or(KeyFileError::Malformed { line: line_no })?;
                if !is_group_name(name) {
                    return Err(KeyFileError::BadGroupName { line: line_no });
                }
                current = Some(kf.group_index_or_insert(name));
                continue;
            }
            let (key, value) = match line.split_once('=') {
                Some((key, value)) if !key.is_empty() => (key, value),
                _ => return Err(KeyFileError::Malformed { line: line_no }),
            };
            let group = current.ok_or(KeyFileError::KeyOutsideGroup { line: line_no })?;
            let key = key.trim_end_matches(is_glib_space);
            if !is_key_name(key) {
                return Err(KeyFileError::BadKeyName { line: line_no });
            }
            let value = value.trim_start_matches(is_glib_space);
            // GLib's one check of content at load: the first group may
            // declare the encoding, and only UTF-8 is accepted.
            if group == 0 && key == "Encoding" && !value.eq_ignore_ascii_case("UTF-8") {
                return Err(KeyFileError::UnsupportedEncoding { line: line_no });
            }
            kf.set_raw(group, key, value.to_owned());
        }
        Ok(kf)
    }

    /// Parses bytes that should be a key file: [`KeyFile::parse`] after a
    /// check that they are UTF-8.
    pub fn parse_bytes(data: &[u8]) -> Result<Self, KeyFileError> {
        let text = std::str::from_utf8(data).map_err(|e| KeyFileError::NotUtf8 {
            line: 1 + data[..e.valid_up_to()]
                .iter()
                .filter(|&&b| b == b'\n')
                .count(),
        })?;
        Self::parse(text)
    }

    fn group_index_or_insert(&mut self, name: &str) -> usize {
        match self.groups.iter().position(|(g, _)| g == name) {
            Some(i) => i,
            None => {
                self.groups.push((name.to_owned(), Vec::new()));
                self.groups.len() - 1
            }
        }
    }

    fn set_raw(&mut self, group: usize, key: &str, raw: String) {
        let entries = &mut self.groups[group].1;
        match entries.iter_mut().find(|(k, _)| k == key) {
            Some(slot) => slot.1 = raw,
            None => entries.push((key.to_owned(), raw)),
        }
    }

    /// The value of `key` in `group` as the file has it, escapes and all
    /// (GLib's `g_key_file_get_value`).
    pub fn get_raw(&self, group: &str, key: &str) -> Option<&str> {
        self.groups
            .iter()
            .find(|(g, _)| g == group)?
            .1
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// The unescaped value of `key` in `group`; `None` also when the value
    /// holds an escape GLib does not know (`\;` included: it is one only in
    /// lists), as `g_key_file_get_string` fails then.
    pub fn get(&self, group: &str, key: &str) -> Option<String> {
        unescape(self.get_raw(group, key)?, None)
    }

    /// A `;`-separated list value; a trailing `;` does not add an empty item.
    /// `None` when the key is missing or an item holds an unknown escape.
    pub fn get_list(&self, group: &str, key: &str) -> Option<Vec<String>> {
        let mut items = Vec::new();
        let last = unescape(self.get_raw(group, key)?, Some(&mut items))?;
        if !last.is_empty() {
            items.push(last);
        }
        Some(items)
    }

    /// The keys of a group, in file order.
    pub fn keys(&self, group: &str) -> Vec<&str> {
        self.groups
            .iter()
            .find(|(g, _)| g == group)
            .map(|(_, e)| e.iter().map(|(k, _)| k.as_str()).collect())
            .unwrap_or_default()
    }

    /// The groups, in file order.
    pub fn groups(&self) -> Vec<&str> {
        self.groups.iter().map(|(g, _)| g.as_str()).collect()
    }

    /// Whether [`KeyFile::set`] can store `key` so that [`KeyFile::parse`]
    /// (and GLib) reads the same key back: a valid key name, no line break,
    /// no `#` first (a comment), no whitespace at either end (trimmed).
    /// A writer of keys it does not choose itself (`--env`) checks this.
    pub fn is_writable_key(key: &str) -> bool {
        is_key_name(key)
            && !key.starts_with('#')
            && !key.contains(['\n', '\0'])
            && key.trim_matches(is_glib_space) == key
    }

    pub fn has_group(&self, group: &str) -> bool {
        self.groups.iter().any(|(g, _)| g == group)
    }

    /// Sets `key` in `group`, creating the group at the end if needed.
    pub fn set(&mut self, group: &str, key: &str, value: &str) {
        let gi = self.group_index_or_insert(group);
        self.set_raw(gi, key, escape(value, false));
    }

    /// Sets a list value, written as `a;b;c;` like GLib does.
    pub fn set_list<S: AsRef<str>>(&mut self, group: &str, key: &str, items: &[S]) {
        let mut out = String::new();
        for item in items {
            out.push_str(&escape(item.as_ref(), true));
            out.push(';');
        }
        let gi = self.group_index_or_insert(group);
        self.set_raw(gi, key, out);
    }

    /// Serialises the file, groups separated by a blank line.
    pub fn to_text(&self) -> String {
        let mut out = String::new();
        for (i, (group, entries)) in self.groups.iter().enumerate() {
            if i > 0 {
                out.push('\n');
            }
            out.push('[');
            out.push_str(group);
            out.push_str("]\n");
            for (k, v) in entries {
                out.push_str(k);
                out.push('=');
                // A CR just before the newline would be read as part of a
                // CRLF line end; written as its escape it means the same.
                // After a lone backslash it is no escape, and the value
                // cannot be read; it is written so that it still cannot
                // (a trailing backslash) rather than as a valid `\\r`.
                match v.strip_suffix('\r') {
                    Some(v) => {
                        out.push_str(v);
                        if v.bytes().rev().take_while(|&b| b == b'\\').count() % 2 == 0 {
                            out.push_str("\\r");
                        }
                    }
                    None => out.push_str(v),
                }
                out.push('\n');
            }
        }
        out
    }
}

/// The lines of a key file as GLib splits them: at `\n` only, dropping one
/// `\r` before it (a `\r` at the very end, with no `\n`, stays).
fn lines(text: &str) -> impl Iterator<Item = &str> {
    let mut rest = Some(text);
    std::iter::from_fn(move || {
        let text = rest?;
        match text.split_once('\n') {
            Some((line, tail)) => {
                rest = Some(tail);
                Some(line.strip_suffix('\r').unwrap_or(line))
            }
            None => {
                rest = None;
                (!text.is_empty()).then_some(text)
            }
        }
    })
}

/// `g_ascii_isspace`: space, tab, LF, FF and CR; not the vertical tab, and
/// nothing beyond ASCII (`str::trim` would also strip U+00A0 and others).
fn is_glib_space(c: char) -> bool {
    c.is_ascii_whitespace()
}

/// The name in a `[Group]` line: up to the first `]`, after which only
/// spaces and tabs may follow.
fn group_header(line: &str) -> Option<&str> {
    let (name, after) = line.strip_prefix('[')?.split_once(']')?;
    after.chars().all(|c| c == ' ' || c == '\t').then_some(name)
}

/// GLib's group names: not empty, no brackets, no ASCII control characters.
fn is_group_name(name: &str) -> bool {
    !name.is_empty()
        && !name
            .chars()
            .any(|c| c == '[' || c == ']' || c.is_ascii_control())
}

/// GLib's key names: not empty, no `=`, no brackets except one locale
/// suffix at the end (`Name[sr@latin]`, `Name[]` too), no space at either end of the
/// name before the suffix.
///
/// GLib allows any Unicode letter or digit in the suffix; we allow ASCII
/// ones only, since locale names are ASCII and Rust's notion of a letter is
/// not GLib's (marks, newer Unicode versions): a key GLib accepts may be
/// refused here, never the other way round.
fn is_key_name(key: &str) -> bool {
    let (name, locale) = match key.find(['[', ']', '=']) {
        None => (key, None),
        Some(at) => (&key[..at], Some(&key[at..])),
    };
    if name.is_empty() || name.starts_with(' ') || name.ends_with(' ') {
        return false;
    }
    match locale {
        None => true,
        Some(suffix) => suffix
            .strip_prefix('[')
            .and_then(|s| s.strip_suffix(']'))
            .is_some_and(|l| {
                l.chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '@'))
            }),
    }
}

/// Undoes GLib's escapes. With `items`, the value is a list: `\;` is a
/// literal `;`, every other `;` ends an item (pushed there), and the text
/// after the last `;` is returned. `None` for an escape GLib refuses.
fn unescape(value: &str, mut items: Option<&mut Vec<String>>) -> Option<String> {
    let mut out = String::with_capacity(value.len());
    let mut chars = value.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => match chars.next()? {
                's' => out.push(' '),
                'n' => out.push('\n'),
                't' => out.push('\t'),
                'r' => out.push('\r'),
                '\\' => out.push('\\'),
                ';' if items.is_some() => out.push(';'),
                _ => return None,
            },
            ';' => match items.as_deref_mut() {
                Some(items) => items.push(std::mem::take(&mut out)),
                None => out.push(';'),
            },
            other => out.push(other),
        }
    }
    Some(out)
}

fn escape(value: &str, in_list: bool) -> String {
    let mut out = String::with_capacity(value.len());
    for (i, c) in value.chars().enumerate() {
        match c {
            ' ' if i == 0 => out.push_str("\\s"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            '\\' => out.push_str("\\\\"),
            ';' if in_list => out.push_str("\\;"),
            other => out.push(other),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const INFO: &str = "[Application]\nname=org.example.App\nruntime=runtime/org.example.Platform/x86_64/1\n\n# comment\n[Instance]\ninstance-id=1234\napp-path=/app\n\n[Context]\nshared=ipc;\nsockets=wayland;pulseaudio;\n";

    #[test]
    fn reads_flatpak_info() {
        let kf = KeyFile::parse(INFO).unwrap();
        assert_eq!(
            kf.get("Application", "name").as_deref(),
            Some("org.example.App")
        );
        assert_eq!(kf.get("Instance", "instance-id").as_deref(), Some("1234"));
        assert_eq!(
            kf.get_list("Context", "sockets").unwrap(),
            vec!["wayland", "pulseaudio"]
        );
        assert_eq!(kf.get("Nope", "name"), None);
    }

    #[test]
    fn round_trips_through_text() {
        let mut kf = KeyFile::new();
        kf.set("Application", "name", "org.example.App");
        kf.set("Instance", "note", " leading space and\nnewline");
        kf.set_list("Context", "filesystems", &["home", "a;b"]);
        let back = KeyFile::parse(&kf.to_text()).unwrap();
        assert_eq!(
            back.get("Application", "name").as_deref(),
            Some("org.example.App")
        );
        assert_eq!(
            back.get("Instance", "note").as_deref(),
            Some(" leading space and\nnewline")
        );
        assert_eq!(
            back.get_list("Context", "filesystems").unwrap(),
            vec!["home", "a;b"]
        );
    }

    #[test]
    fn rejects_malformed_lines() {
        assert!(matches!(
            KeyFile::parse("name=x\n"),
            Err(KeyFileError::KeyOutsideGroup { line: 1 })
        ));
        assert!(matches!(
            KeyFile::parse("[G]\njunk\n"),
            Err(KeyFileError::Malformed { line: 2 })
        ));
        for (text, line) in [("[G]\n[a[b]\n", 2), ("[]\n", 1), ("[G\x01]\n", 1)] {
            assert!(
                matches!(KeyFile::parse(text), Err(KeyFileError::BadGroupName { line: l }) if l == line),
                "{text:?}"
            );
        }
        for text in [
            "\x0b[G]\n",
            "[G] x\n",
            "[G]\x0c\n",
            "[G\n",
            "\u{feff}[G]\n",
            "[G]\n=v\n",
            "[G]\n;c\n",
        ] {
            assert!(
                matches!(KeyFile::parse(text), Err(KeyFileError::Malformed { .. })),
                "{text:?}"
            );
        }
        for key in [
            "a]b",
            "a[b",
            "n[de",
            "n[de]x",
            "n [de]",
            "n[de][fr]",
            "n[d e]",
            "n[ñ]",
        ] {
            let text = format!("[G]\n{key}=v\n");
            assert!(
                matches!(
                    KeyFile::parse(&text),
                    Err(KeyFileError::BadKeyName { line: 2 })
                ),
                "{text:?}"
            );
        }
        assert!(matches!(
            KeyFile::parse("[G]\nEncoding=latin1\n"),
            Err(KeyFileError::UnsupportedEncoding { line: 2 })
        ));
        assert!(matches!(
            KeyFile::parse("[G]\nk=a\0b\n"),
            Err(KeyFileError::Nul { line: 2 })
        ));
        assert!(matches!(
            KeyFile::parse_bytes(b"[G]\nk=a\n\nj=\xff\n"),
            Err(KeyFileError::NotUtf8 { line: 4 })
        ));
    }

    /// What GLib accepts: escapes are checked when a value is read, not when
    /// the file is loaded; whitespace is ASCII's; the rest as `gkeyfile.c`.
    #[test]
    fn reads_what_glib_reads() {
        let kf = KeyFile::parse(concat!(
            "# comment\n",
            "\x0c\t \n",
            "  [Group one]\t \n",
            "bad=a\\qb\n",
            "semi=a\\;b\n",
            "list=a\\;b;c\\s;;\n",
            "name[sr@latin]=x\n",
            "name[]=y\n",
            "name\t[de]=z\n",
            "key\u{a0}=nbsp\n",
            "k\x0c=\x0c  v \r\n",
            "Encoding=utf-8\n",
            "[Second]\n",
            "Encoding=latin1\n",
            "[Group one]\n",
            "bad=twice\n",
            "end=cr\r",
        ))
        .unwrap();
        let g = "Group one";
        assert_eq!(
            kf.keys(g),
            [
                "bad",
                "semi",
                "list",
                "name[sr@latin]",
                "name[]",
                "name\t[de]",
                "key\u{a0}",
                "k",
                "Encoding",
                "end"
            ]
        );
        assert_eq!(kf.get(g, "bad").as_deref(), Some("twice"));
        assert_eq!(kf.get_raw(g, "semi"), Some("a\\;b"));
        assert_eq!(kf.get(g, "semi"), None, "\\; is an escape only in lists");
        assert_eq!(kf.get_list(g, "semi").unwrap(), ["a;b"]);
        assert_eq!(kf.get_list(g, "list").unwrap(), ["a;b", "c ", ""]);
        assert_eq!(kf.get(g, "k").as_deref(), Some("v "));
        assert_eq!(kf.get(g, "end").as_deref(), Some("cr\r"));
        assert_eq!(kf.get("Second", "Encoding").as_deref(), Some("latin1"));
        assert_eq!(
            KeyFile::parse("[G]\nk=a\\qb\n").unwrap().get("G", "k"),
            None,
            "an unknown escape fails the read, not the load"
        );
        assert_eq!(
            KeyFile::parse("[G]\nk=a\\\n").unwrap().get_list("G", "k"),
            None
        );
        for key in ["PATH", "A B", "name[de]", "x.y-z_1", "ctl\u{1}"] {
            assert!(KeyFile::is_writable_key(key), "{key:?}");
        }
        for key in [
            "", " A", "A ", "\tA", "A\r", "#A", "A\nB", "A=B", "A[x", "A]", "A\0",
        ] {
            assert!(!KeyFile::is_writable_key(key), "{key:?}");
        }
        // Found by the fuzzer: a lone backslash before a final CR is no
        // escape, and stays unreadable after a write and a reread.
        let odd = KeyFile::parse("[G]\nk=a;\\\r").unwrap();
        assert_eq!((odd.get("G", "k"), odd.get_list("G", "k")), (None, None));
        let odd = KeyFile::parse(&odd.to_text()).unwrap();
        assert_eq!((odd.get("G", "k"), odd.get_list("G", "k")), (None, None));
        // A trailing CR survives a write and a second read.
        let again = KeyFile::parse(&kf.to_text()).unwrap();
        assert_eq!(again.get(g, "end").as_deref(), Some("cr\r"));
        assert_eq!(again.keys(g), kf.keys(g));
    }
}
