//! A small reader and writer for the GLib key-file format.
//!
//! We need exactly what `/.flatpak-info` and Flatpak app metadata use: groups,
//! `key=value` lines, comments, the escapes `\s \n \t \r \\ \;` and
//! `;`-separated lists. Localised keys (`Name[de]=`) are kept as plain keys.

/// Errors while reading a key file.
#[derive(Debug, thiserror::Error)]
pub enum KeyFileError {
    #[error("line {line}: key outside of any group")]
    KeyOutsideGroup { line: usize },
    #[error("line {line}: expected `[Group]`, `key=value` or a comment")]
    Malformed { line: usize },
    #[error("line {line}: invalid escape sequence")]
    BadEscape { line: usize },
}

/// An ordered key file: groups keep their order, keys keep theirs.
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
        for (i, raw) in text.lines().enumerate() {
            let line_no = i + 1;
            let line = raw.trim_start();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            if let Some(rest) = line.strip_prefix('[') {
                let name = rest
                    .trim_end()
                    .strip_suffix(']')
                    .ok_or(KeyFileError::Malformed { line: line_no })?;
                current = Some(kf.group_index_or_insert(name));
                continue;
            }
            let (key, value) = line
                .split_once('=')
                .ok_or(KeyFileError::Malformed { line: line_no })?;
            let group = current.ok_or(KeyFileError::KeyOutsideGroup { line: line_no })?;
            let value = value.trim_start();
            unescape(value).ok_or(KeyFileError::BadEscape { line: line_no })?;
            kf.set_raw(group, key.trim_end(), value.to_owned());
        }
        Ok(kf)
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

    fn raw(&self, group: &str, key: &str) -> Option<&str> {
        self.groups
            .iter()
            .find(|(g, _)| g == group)?
            .1
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// The unescaped value of `key` in `group`.
    pub fn get(&self, group: &str, key: &str) -> Option<String> {
        self.raw(group, key).and_then(unescape)
    }

    /// A `;`-separated list value; a trailing `;` does not add an empty item.
    pub fn get_list(&self, group: &str, key: &str) -> Option<Vec<String>> {
        let raw = self.raw(group, key)?;
        let mut items = Vec::new();
        let mut cur = String::new();
        let mut chars = raw.chars();
        while let Some(c) = chars.next() {
            match c {
                '\\' => {
                    cur.push(c);
                    if let Some(n) = chars.next() {
                        cur.push(n);
                    }
                }
                ';' => items.push(unescape(&std::mem::take(&mut cur))?),
                other => cur.push(other),
            }
        }
        if !cur.is_empty() {
            items.push(unescape(&cur)?);
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
                out.push_str(v);
                out.push('\n');
            }
        }
        out
    }
}

/// Undoes GLib's escapes; `None` for an unknown escape.
fn unescape(value: &str) -> Option<String> {
    let mut out = String::with_capacity(value.len());
    let mut chars = value.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next()? {
            's' => out.push(' '),
            'n' => out.push('\n'),
            't' => out.push('\t'),
            'r' => out.push('\r'),
            '\\' => out.push('\\'),
            ';' => out.push(';'),
            _ => return None,
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
        assert!(matches!(
            KeyFile::parse("[G]\nk=a\\q\n"),
            Err(KeyFileError::BadEscape { line: 2 })
        ));
    }
}
