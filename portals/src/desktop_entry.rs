//! Desktop entries (`*.desktop`, the Desktop Entry Specification) as GIO's
//! `GDesktopAppInfo` reads them for launching a handler: the
//! `[Desktop Entry]` group's keys, the `Exec` line split into arguments and
//! its field codes expanded for one URI, and the launch itself (what
//! `g_app_info_launch_uris` does for a plain, non-D-Bus-activated app).

use std::collections::HashMap;
use std::ffi::OsString;
use std::path::{Path, PathBuf};

use crate::uri;

const GROUP: &str = "Desktop Entry";

/// One parsed entry: its `[Desktop Entry]` keys (unlocalised).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DesktopEntry {
    /// The file it was read from (`%k`).
    pub path: PathBuf,
    keys: HashMap<String, String>,
}

#[derive(Debug, thiserror::Error)]
pub enum EntryError {
    #[error("reading {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: no [Desktop Entry] group")]
    NoGroup { path: PathBuf },
    #[error("{path}: no Exec line")]
    NoExec { path: PathBuf },
    #[error("{path}: Exec line {exec:?}: {reason}")]
    BadExec {
        path: PathBuf,
        exec: String,
        reason: &'static str,
    },
    #[error("starting {program:?} for {path}: {source}")]
    Spawn {
        path: PathBuf,
        program: OsString,
        source: std::io::Error,
    },
}

impl DesktopEntry {
    pub fn load(path: &Path) -> Result<Self, EntryError> {
        let text = std::fs::read(path).map_err(|source| EntryError::Read {
            path: path.to_owned(),
            source,
        })?;
        Self::parse(path, &String::from_utf8_lossy(&text))
    }

    /// Parses key-file text: the keys of the `[Desktop Entry]` group,
    /// without localised variants (`Name[de]`); the first of a repeated
    /// key wins, as GLib's key file keeps it.
    pub fn parse(path: &Path, text: &str) -> Result<Self, EntryError> {
        let mut keys = HashMap::new();
        let mut in_group = false;
        let mut seen_group = false;
        for line in text.lines() {
            let line = line.trim_start();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            if let Some(rest) = line.strip_prefix('[') {
                in_group = rest.trim_end().strip_suffix(']') == Some(GROUP);
                seen_group |= in_group;
                continue;
            }
            if !in_group {
                continue;
            }
            let Some((key, value)) = line.split_once('=') else {
                continue;
            };
            let key = key.trim_end();
            if key.contains('[') {
                continue;
            }
            keys.entry(key.to_owned())
                .or_insert_with(|| value.trim_start().to_owned());
        }
        if !seen_group {
            return Err(EntryError::NoGroup {
                path: path.to_owned(),
            });
        }
        Ok(Self {
            path: path.to_owned(),
            keys,
        })
    }

    /// A key's raw value.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.keys.get(key).map(String::as_str)
    }

    /// A string key, key-file escapes (`\s \n \t \r \\`) decoded.
    pub fn string(&self, key: &str) -> Option<String> {
        self.get(key).map(unescape_value)
    }

    pub fn boolean(&self, key: &str) -> bool {
        self.get(key).is_some_and(|v| v.trim() == "true")
    }

    /// A `;`-separated list key (`MimeType`), empty items dropped.
    pub fn list(&self, key: &str) -> Vec<String> {
        self.string(key)
            .map(|v| {
                v.split(';')
                    .map(str::trim)
                    .filter(|s| !s.is_empty())
                    .map(str::to_owned)
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Whether GIO would offer it as an app at all: `Type=Application`,
    /// not `Hidden`, and its `TryExec` program (if any) found.
    pub fn usable(&self) -> bool {
        if self.get("Type").map(str::trim) != Some("Application") || self.boolean("Hidden") {
            return false;
        }
        match self.string("TryExec") {
            Some(program) => find_program(&program).is_some(),
            None => true,
        }
    }

    /// Sandboxed by Flatpak (GIO's `X-Flatpak` key, upstream's
    /// `is_sandboxed`): a local file goes to it through the document store.
    pub fn sandboxed(&self) -> bool {
        self.get("X-Flatpak").is_some()
    }

    /// The command line that opens `target_uri`: `Exec` split into
    /// arguments, field codes expanded as GIO expands them for one URI
    /// (`%u %U` the URI, `%f %F` its local path when it is a `file://` URI,
    /// else the URI; `%i` `--icon ICON`, `%c` the name, `%k` this file,
    /// `%%` a percent sign; deprecated codes dropped). An `Exec` line without
    /// a file or URI code gets the file appended, as GIO does.
    pub fn command_line(&self, target_uri: &str) -> Result<Vec<OsString>, EntryError> {
        let exec = self.string("Exec").ok_or_else(|| EntryError::NoExec {
            path: self.path.clone(),
        })?;
        let bad = |reason| EntryError::BadExec {
            path: self.path.clone(),
            exec: exec.clone(),
            reason,
        };
        let words = split_exec(&exec).map_err(bad)?;
        let file_arg = || -> OsString {
            match uri::to_path(target_uri) {
                Ok(path) => path.into_os_string(),
                Err(_) => target_uri.into(),
            }
        };
        let mut argv: Vec<OsString> = Vec::new();
        let mut took_target = false;
        for word in words {
            // A word that is exactly one list code expands to its items
            // (here one, or none for %i without an icon).
            match word.as_str() {
                "%U" | "%u" => {
                    argv.push(target_uri.into());
                    took_target = true;
                    continue;
                }
                "%F" | "%f" => {
                    argv.push(file_arg());
                    took_target = true;
                    continue;
                }
                "%i" => {
                    if let Some(icon) = self.string("Icon").filter(|i| !i.is_empty()) {
                        argv.push("--icon".into());
                        argv.push(icon.into());
                    }
                    continue;
                }
                _ => {}
            }
            let mut out = OsString::new();
            let mut chars = word.chars();
            while let Some(c) = chars.next() {
                if c != '%' {
                    out.push(c.to_string());
                    continue;
                }
                match chars.next() {
                    Some('%') => out.push("%"),
                    Some('u' | 'U') => {
                        out.push(target_uri);
                        took_target = true;
                    }
                    Some('f' | 'F') => {
                        out.push(file_arg());
                        took_target = true;
                    }
                    Some('c') => out.push(self.string("Name").unwrap_or_default()),
                    Some('k') => out.push(self.path.as_os_str()),
                    Some('i') => {}
                    // %d %D %n %N %v %m: deprecated, dropped.
                    Some('d' | 'D' | 'n' | 'N' | 'v' | 'm') => {}
                    _ => return Err(bad("an unknown field code")),
                }
            }
            argv.push(out);
        }
        if argv.is_empty() {
            return Err(bad("no program"));
        }
        if !took_target {
            argv.push(file_arg());
        }
        Ok(argv)
    }
}

/// Decodes a key-file string value's escapes.
fn unescape_value(raw: &str) -> String {
    let mut out = String::with_capacity(raw.len());
    let mut chars = raw.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('s') => out.push(' '),
            Some('n') => out.push('\n'),
            Some('t') => out.push('\t'),
            Some('r') => out.push('\r'),
            Some('\\') => out.push('\\'),
            Some(other) => {
                out.push('\\');
                out.push(other);
            }
            None => out.push('\\'),
        }
    }
    out
}

/// Splits an `Exec` value into words by the specification's quoting:
/// words are separated by blanks; a double-quoted word may hold blanks and
/// escapes `\" \` \$ \\`. GLib's shell parser also takes single quotes and
/// backslashes outside quotes; so does this.
fn split_exec(exec: &str) -> Result<Vec<String>, &'static str> {
    let mut words = Vec::new();
    let mut word = String::new();
    let mut in_word = false;
    let mut chars = exec.chars();
    while let Some(c) = chars.next() {
        match c {
            ' ' | '\t' | '\n' => {
                if in_word {
                    words.push(std::mem::take(&mut word));
                    in_word = false;
                }
            }
            '"' => {
                in_word = true;
                loop {
                    match chars.next() {
                        None => return Err("an unterminated double quote"),
                        Some('"') => break,
                        Some('\\') => match chars.next() {
                            Some(e @ ('"' | '`' | '$' | '\\')) => word.push(e),
                            Some(other) => {
                                word.push('\\');
                                word.push(other);
                            }
                            None => return Err("an unterminated double quote"),
                        },
                        Some(other) => word.push(other),
                    }
                }
            }
            '\'' => {
                in_word = true;
                loop {
                    match chars.next() {
                        None => return Err("an unterminated single quote"),
                        Some('\'') => break,
                        Some(other) => word.push(other),
                    }
                }
            }
            '\\' => {
                in_word = true;
                match chars.next() {
                    Some(e) => word.push(e),
                    None => return Err("a trailing backslash"),
                }
            }
            other => {
                in_word = true;
                word.push(other);
            }
        }
    }
    if in_word {
        words.push(word);
    }
    Ok(words)
}

/// `program` as `execvp` would find it (GLib's `g_find_program_in_path`).
pub fn find_program(program: &str) -> Option<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    let executable = |p: &Path| {
        std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
    };
    if program.contains('/') {
        let p = PathBuf::from(program);
        return executable(&p).then_some(p);
    }
    let path = std::env::var_os("PATH").unwrap_or_else(|| "/usr/bin:/bin".into());
    std::env::split_paths(&path)
        .map(|dir| dir.join(program))
        .find(|p| executable(p))
}

/// How a handler is started.
#[derive(Debug, Clone, Default)]
pub struct Launch<'a> {
    /// The window the request came from (`PARENT_WINDOW_ID`).
    pub parent_window: &'a str,
    /// XDG activation / startup notification token.
    pub activation_token: Option<&'a str>,
}

impl DesktopEntry {
    /// Starts the handler on `target_uri` as GIO does for a spawned app:
    /// its own process group, standard input from /dev/null, the
    /// environment of the portal plus `PARENT_WINDOW_ID`, the activation
    /// token (`XDG_ACTIVATION_TOKEN`, `DESKTOP_STARTUP_ID`) and
    /// `GIO_LAUNCHED_DESKTOP_FILE`, in the entry's `Path` if it has one.
    /// Returns the child's pid; the child is reaped when it exits.
    pub fn launch(&self, target_uri: &str, how: &Launch<'_>) -> Result<u32, EntryError> {
        let argv = self.command_line(target_uri)?;
        if self.boolean("Terminal") {
            tracing::warn!(entry = %self.path.display(), "Terminal=true: started without a terminal");
        }
        let mut cmd = tokio::process::Command::new(&argv[0]);
        cmd.args(&argv[1..])
            .stdin(std::process::Stdio::null())
            .process_group(0)
            .env("PARENT_WINDOW_ID", how.parent_window)
            .env("GIO_LAUNCHED_DESKTOP_FILE", &self.path);
        if let Some(token) = how.activation_token {
            cmd.env("XDG_ACTIVATION_TOKEN", token)
                .env("DESKTOP_STARTUP_ID", token);
        }
        if let Some(dir) = self.string("Path").filter(|d| !d.is_empty()) {
            cmd.current_dir(dir);
        }
        let mut child = cmd.spawn().map_err(|source| EntryError::Spawn {
            path: self.path.clone(),
            program: argv[0].clone(),
            source,
        })?;
        let pid = child.id().unwrap_or_default();
        tokio::spawn(async move {
            match child.wait().await {
                Ok(status) => tracing::debug!(pid, %status, "handler exited"),
                Err(e) => tracing::debug!(pid, "waiting for the handler: {e}"),
            }
        });
        Ok(pid)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(text: &str) -> DesktopEntry {
        DesktopEntry::parse(Path::new("/apps/x.desktop"), text).unwrap()
    }

    #[test]
    fn keys_of_the_desktop_entry_group_only() {
        let e = entry(
            "# c\n[Desktop Entry]\nName=Viewer\nName[de]=Betrachter\nType=Application\n\
             MimeType=text/plain;image/png;;\nExec=view %U\n[Desktop Action new]\nExec=other\n",
        );
        assert_eq!(e.get("Name"), Some("Viewer"));
        assert_eq!(e.get("Exec"), Some("view %U"));
        assert_eq!(e.list("MimeType"), ["text/plain", "image/png"]);
        assert!(e.usable());
        assert!(!entry("[Desktop Entry]\nType=Link\n").usable());
        assert!(!entry("[Desktop Entry]\nType=Application\nHidden=true\n").usable());
        assert!(!entry("[Desktop Entry]\nType=Application\nTryExec=/no/such/program\n").usable());
        assert!(DesktopEntry::parse(Path::new("/x"), "[Other]\nA=b\n").is_err());
    }

    #[test]
    fn exec_lines_expand_as_gio_expands_them() {
        let e = entry(
            "[Desktop Entry]\nName=My App\nIcon=app\nExec=\"/opt/my app/run\" --name=%c %i -x %u\n",
        );
        assert_eq!(
            e.command_line("https://example.org/a b").unwrap(),
            [
                "/opt/my app/run",
                "--name=My App",
                "--icon",
                "app",
                "-x",
                "https://example.org/a b"
            ]
            .map(OsString::from)
        );
        let f = entry("[Desktop Entry]\nExec=edit %F %%\n");
        assert_eq!(
            f.command_line("file:///tmp/a%20b.txt").unwrap(),
            ["edit", "/tmp/a b.txt", "%"].map(OsString::from)
        );
        // No file code: the file is appended.
        let g = entry("[Desktop Entry]\nExec=sh -c \"echo \\\"\\$1\\\" > /tmp/m\" sh\n");
        assert_eq!(
            g.command_line("https://x/").unwrap(),
            ["sh", "-c", "echo \"$1\" > /tmp/m", "sh", "https://x/"].map(OsString::from)
        );
        // Key-file escapes come first.
        let h = entry("[Desktop Entry]\nExec=a\\sb %u\n");
        assert_eq!(
            h.command_line("x:y").unwrap(),
            ["a", "b", "x:y"].map(OsString::from)
        );
        for bad in ["\"open", "x %z", "", "a\\"] {
            let e = entry(&format!("[Desktop Entry]\nExec={bad}\n"));
            assert!(e.command_line("x:y").is_err(), "{bad:?}");
        }
        assert!(entry("[Desktop Entry]\n").command_line("x:y").is_err());
    }
}
