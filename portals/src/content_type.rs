//! A file's content type as GIO's local file info gives it
//! (`G_FILE_ATTRIBUTE_STANDARD_CONTENT_TYPE`): from the shared-mime-info
//! database (globs on the name, then magic on the first bytes; text that
//! matches no rule is `text/plain`, other data `application/octet-stream`;
//! directories `inode/directory`, other special files `inode/*`), and the
//! types' parents for the handler lookup.
//!
//! Also what we refuse to hand to a handler at all ([`dangerous`]): files
//! that are programs or launchers, since their handler would run them
//! outside the sandbox.

use std::io::Read;
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::path::Path;
use std::str::FromStr;
use std::sync::OnceLock;

use xdg_mime::SharedMimeInfo;

/// How much of a file is read to sniff it (GIO reads up to 4 KiB).
const SNIFF_LEN: u64 = 4096;

fn database() -> &'static SharedMimeInfo {
    static DB: OnceLock<SharedMimeInfo> = OnceLock::new();
    DB.get_or_init(|| {
        // SharedMimeInfo::new() needs a home (it panics without one).
        let has_home = std::env::var_os("XDG_DATA_HOME").is_some_and(|v| !v.is_empty())
            || std::env::var_os("HOME").is_some_and(|v| !v.is_empty());
        if has_home {
            SharedMimeInfo::new()
        } else {
            SharedMimeInfo::new_for_directory("/usr/share")
        }
    })
}

/// What was found about a file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sniffed {
    pub content_type: String,
    /// The first bytes are a compiled program's (ELF, or a DOS/PE
    /// executable: `MZ` and binary data), whatever the name says.
    pub binary_program: bool,
    /// The first bytes are a `#!` interpreter line.
    pub shebang: bool,
    /// Any execute bit is set on a regular file.
    pub executable_mode: bool,
}

/// Sniffs the file at `path` (reached through the caller's validated fd's
/// `/proc/self/fd` entry, so no other file can stand in). Never blocks on
/// a FIFO or a device: only regular files are read.
pub fn sniff(path: &Path, name: &str) -> std::io::Result<Sniffed> {
    let meta = std::fs::metadata(path)?;
    let ft = meta.file_type();
    let special = if ft.is_dir() {
        Some("inode/directory")
    } else if ft.is_fifo() {
        Some("inode/fifo")
    } else if ft.is_socket() {
        Some("inode/socket")
    } else if ft.is_char_device() {
        Some("inode/chardevice")
    } else if ft.is_block_device() {
        Some("inode/blockdevice")
    } else {
        None
    };
    if let Some(t) = special {
        return Ok(Sniffed {
            content_type: t.to_owned(),
            binary_program: false,
            shebang: false,
            executable_mode: false,
        });
    }
    let mut data = Vec::new();
    std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(path)?
        .take(SNIFF_LEN)
        .read_to_end(&mut data)?;
    let content_type = guess(name, &data);
    use std::os::unix::fs::PermissionsExt;
    Ok(Sniffed {
        content_type,
        binary_program: binary_program(&data),
        shebang: data.starts_with(b"#!"),
        executable_mode: meta.permissions().mode() & 0o111 != 0,
    })
}

/// The content type of a regular file named `name` starting with `data`.
pub fn guess(name: &str, data: &[u8]) -> String {
    if data.is_empty() {
        // GIO: an empty file is typed by its name alone, else text/plain.
        let by_name = database().get_mime_types_from_file_name(name);
        return match by_name.first() {
            Some(m) if *m != mime::APPLICATION_OCTET_STREAM => m.essence_str().to_owned(),
            _ => "text/plain".to_owned(),
        };
    }
    let guess = database()
        .guess_mime_type()
        .file_name(name)
        .data(data)
        .guess();
    let found = guess.mime_type().essence_str().to_owned();
    // No rule matched: text that looks like text is text/plain (GIO's
    // g_content_type_guess; the crate does this only when a glob matched).
    if found == "application/octet-stream" && looks_like_text(data) {
        return "text/plain".to_owned();
    }
    found
}

/// GIO's test: valid UTF-8 without control characters other than
/// whitespace in the sniffed bytes (a cut multi-byte character at the end
/// is allowed).
fn looks_like_text(data: &[u8]) -> bool {
    let text = match std::str::from_utf8(data) {
        Ok(t) => t,
        Err(e) if e.error_len().is_none() => {
            // Only an incomplete character at the very end.
            std::str::from_utf8(&data[..e.valid_up_to()]).unwrap_or_default()
        }
        Err(_) => return false,
    };
    !text
        .chars()
        .any(|c| c.is_control() && !matches!(c, '\n' | '\r' | '\t' | '\x0c'))
}

fn binary_program(data: &[u8]) -> bool {
    data.starts_with(b"\x7fELF") || (data.starts_with(b"MZ") && !looks_like_text(data))
}

/// The type followed by its parents, for handler lookups (GIO's
/// `get_list_of_mimetypes` with fallback): aliases resolved, the
/// shared-mime-info parents, `text/plain` under every `text/*`.
pub fn with_parents(content_type: &str) -> Vec<String> {
    let mut out = vec![content_type.to_owned()];
    if let Ok(m) = mime::Mime::from_str(content_type) {
        let db = database();
        let mut queue = vec![m];
        while let Some(m) = queue.pop() {
            for parent in db.get_parents(&m).unwrap_or_default() {
                let p = parent.essence_str().to_owned();
                if !out.contains(&p) {
                    out.push(p);
                    queue.push(parent);
                }
            }
        }
    }
    if content_type.starts_with("text/") && !out.iter().any(|t| t == "text/plain") {
        out.push("text/plain".to_owned());
    }
    out
}

/// Content types whose handlers run their files as programs or install
/// them: native and Windows executables, libraries, scripts, desktop
/// launchers, AppImages, installers.
const PROGRAM_TYPES: &[&str] = &[
    "application/x-executable",
    "application/x-pie-executable",
    "application/x-sharedlib",
    "application/x-shellscript",
    "application/x-desktop",
    "application/x-ms-dos-executable",
    "application/x-msdownload",
    "application/x-msi",
    "application/x-ms-shortcut",
    "application/vnd.microsoft.portable-executable",
    "application/x-dosexec",
    "application/vnd.appimage",
    "application/x-iso9660-appimage",
    "application/x-executable-script",
    "application/x-desktop-entry",
    "application/vnd.flatpak.ref",
    "application/vnd.flatpak.repo",
    "application/vnd.flatpak",
    "application/x-deb",
    "application/vnd.debian.binary-package",
    "application/x-rpm",
];

/// Why a file is refused, if it is: a type (or a parent type) from
/// [`PROGRAM_TYPES`]; compiled program bytes (ELF, PE) whatever its name
/// says; a `#!` script with an execute bit.
pub fn dangerous(sniffed: &Sniffed) -> Option<String> {
    if let Some(t) = with_parents(&sniffed.content_type)
        .into_iter()
        .find(|t| PROGRAM_TYPES.contains(&t.as_str()))
    {
        return Some(format!("its content type is {t}"));
    }
    if sniffed.binary_program {
        return Some("its first bytes are a program's".to_owned());
    }
    if sniffed.shebang && sniffed.executable_mode {
        return Some("it is an executable script".to_owned());
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn types_as_gio_gives_them() {
        assert_eq!(
            guess("openuri_mock_file_x1", b"openuri_mock_file"),
            "text/plain"
        );
        assert_eq!(guess("a.txt", b"hello"), "text/plain");
        assert_eq!(guess("a.png", b"\x89PNG\r\n\x1a\n0000"), "image/png");
        assert_eq!(
            guess("blob", &[0u8, 1, 2, 3, 0xff]),
            "application/octet-stream"
        );
        assert_eq!(guess("empty.txt", b""), "text/plain");
        assert!(with_parents("text/x-csrc").contains(&"text/plain".to_owned()));
    }

    #[test]
    fn programs_and_launchers_are_dangerous() {
        let s = |name: &str, data: &[u8], exec: bool| Sniffed {
            content_type: guess(name, data),
            binary_program: binary_program(data),
            shebang: data.starts_with(b"#!"),
            executable_mode: exec,
        };
        let elf = b"\x7fELF\x02\x01\x01\0\0\0\0\0\0\0\0\0\x02\0\x3e\0";
        for (what, sniffed) in [
            ("an ELF file", s("tool", elf, true)),
            ("ELF named .txt", s("notes.txt", elf, false)),
            ("a script", s("run.sh", b"#!/bin/sh\necho hi\n", false)),
            (
                "a launcher",
                s("x.desktop", b"[Desktop Entry]\nExec=sh\n", false),
            ),
            (
                "an executable script",
                s("notes.txt", b"#!/bin/sh\nrm -rf ~\n", true),
            ),
            (
                "a Windows program",
                s("setup.exe", b"MZ\x90\0\x03\0\0\0", false),
            ),
        ] {
            assert!(dangerous(&sniffed).is_some(), "{what}: {sniffed:?}");
        }
        for (what, sniffed) in [
            ("text", s("a.txt", b"hello", false)),
            ("a png", s("a.png", b"\x89PNG\r\n\x1a\n0000", false)),
            (
                "a shebang in plain text",
                s("readme", b"#! is a shebang", false),
            ),
            ("MZ in text", s("mz.txt", b"MZ is a state code", false)),
        ] {
            assert_eq!(dangerous(&sniffed), None, "{what}: {sniffed:?}");
        }
    }
}
