//! Flatpak refs (`app/ID/ARCH/BRANCH`, `runtime/ID/ARCH/BRANCH`) and the
//! partial forms `flatpak run` accepts (`--runtime=ID`, `ID//BRANCH`,
//! `ID/ARCH/BRANCH`). Every part is checked before it becomes a path
//! component below an installation: a part like `..` or one holding `/`
//! never reaches the file system.

use std::fmt;

use porthole_identity::AppId;

/// What kind of thing a ref names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    App,
    Runtime,
}

impl Kind {
    pub fn dir(self) -> &'static str {
        match self {
            Kind::App => "app",
            Kind::Runtime => "runtime",
        }
    }
}

/// A complete, validated ref.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ref {
    pub kind: Kind,
    pub id: String,
    pub arch: String,
    pub branch: String,
}

impl fmt::Display for Ref {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}/{}/{}/{}",
            self.kind.dir(),
            self.id,
            self.arch,
            self.branch
        )
    }
}

/// A ref part that cannot be one.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{what} {value:?} is not valid: {reason}")]
pub struct RefError {
    pub what: &'static str,
    pub value: String,
    pub reason: String,
}

fn bad(what: &'static str, value: &str, reason: impl Into<String>) -> RefError {
    RefError {
        what,
        value: value.to_owned(),
        reason: reason.into(),
    }
}

/// An id: Flatpak's name rules ([`AppId`]), which never allow `/` or `..`.
pub fn check_id(what: &'static str, s: &str) -> Result<(), RefError> {
    AppId::parse(s)
        .map(|_| ())
        .map_err(|e| bad(what, s, e.to_string()))
}

/// An architecture: letters, digits and `_` (x86_64, aarch64, i386).
pub fn check_arch(s: &str) -> Result<(), RefError> {
    if s.is_empty() {
        return Err(bad("arch", s, "empty"));
    }
    if let Some(c) = s
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || *c == '_'))
    {
        return Err(bad("arch", s, format!("character {c:?} is not allowed")));
    }
    Ok(())
}

/// A branch, as Flatpak's `flatpak_is_valid_branch`: letters, digits, `_`,
/// `-` and `.`, not starting with `-` or `.` (so never `.` or `..`).
pub fn check_branch(s: &str) -> Result<(), RefError> {
    if s.is_empty() {
        return Err(bad("branch", s, "empty"));
    }
    if s.starts_with('.') || s.starts_with('-') {
        return Err(bad("branch", s, "must not start with '.' or '-'"));
    }
    if let Some(c) = s
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.')))
    {
        return Err(bad("branch", s, format!("character {c:?} is not allowed")));
    }
    Ok(())
}

impl Ref {
    /// A ref from its parts, each checked.
    pub fn new(kind: Kind, id: &str, arch: &str, branch: &str) -> Result<Ref, RefError> {
        check_id(
            match kind {
                Kind::App => "app id",
                Kind::Runtime => "runtime id",
            },
            id,
        )?;
        check_arch(arch)?;
        check_branch(branch)?;
        Ok(Ref {
            kind,
            id: id.to_owned(),
            arch: arch.to_owned(),
            branch: branch.to_owned(),
        })
    }

    /// A runtime as an app's metadata names it: `ID/ARCH/BRANCH`.
    pub fn runtime_pref(s: &str) -> Result<Ref, RefError> {
        let parts: Vec<&str> = s.split('/').collect();
        match parts.as_slice() {
            [id, arch, branch] => Ref::new(Kind::Runtime, id, arch, branch),
            _ => Err(bad("runtime", s, "expected ID/ARCH/BRANCH")),
        }
    }

    /// `--runtime=` as `flatpak run` reads it: `ID`, `ID/ARCH`,
    /// `ID/ARCH/BRANCH` or with empty parts (`ID//BRANCH`); an empty part
    /// keeps the default's.
    pub fn runtime_override(default: &Ref, s: &str) -> Result<Ref, RefError> {
        let parts: Vec<&str> = s.split('/').collect();
        if parts.len() > 3 {
            return Err(bad("--runtime", s, "expected ID[/ARCH[/BRANCH]]"));
        }
        let pick = |i: usize, d: &str| -> String {
            parts
                .get(i)
                .filter(|p| !p.is_empty())
                .map(|p| p.to_string())
                .unwrap_or_else(|| d.to_owned())
        };
        Ref::new(
            Kind::Runtime,
            &pick(0, &default.id),
            &pick(1, &default.arch),
            &pick(2, &default.branch),
        )
    }
}

/// The architecture Flatpak calls this machine (`flatpak --default-arch`).
pub fn host_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86" => "i386",
        "arm" => "arm",
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parts_that_could_leave_the_installation_are_refused() {
        for b in ["..", ".", "../x", "a/b", "", "-x", "a\0b", "a b"] {
            assert!(check_branch(b).is_err(), "{b:?}");
        }
        for a in ["..", "x86/64", "", "x-86"] {
            assert!(check_arch(a).is_err(), "{a:?}");
        }
        for id in ["..", "org.x..y", "org/x/y", "org.x.y/..", "org.x"] {
            assert!(check_id("app id", id).is_err(), "{id:?}");
        }
        assert!(check_branch("stable").is_ok());
        assert!(check_branch("23.08").is_ok());
        assert!(check_arch("x86_64").is_ok());
    }

    #[test]
    fn runtime_forms() {
        let d = Ref::runtime_pref("org.freedesktop.Platform/x86_64/23.08").unwrap();
        assert_eq!(
            d.to_string(),
            "runtime/org.freedesktop.Platform/x86_64/23.08"
        );
        assert!(Ref::runtime_pref("org.freedesktop.Platform/x86_64").is_err());
        assert!(Ref::runtime_pref("org.freedesktop.Platform/x86_64/../..").is_err());
        let o = Ref::runtime_override(&d, "org.gnome.Platform").unwrap();
        assert_eq!(o.to_string(), "runtime/org.gnome.Platform/x86_64/23.08");
        let o = Ref::runtime_override(&d, "org.gnome.Platform//45").unwrap();
        assert_eq!(o.to_string(), "runtime/org.gnome.Platform/x86_64/45");
        let o = Ref::runtime_override(&d, "//24.08").unwrap();
        assert_eq!(o.id, "org.freedesktop.Platform");
        assert_eq!(o.branch, "24.08");
        assert!(Ref::runtime_override(&d, "org.gnome.Platform//..").is_err());
        assert!(Ref::runtime_override(&d, "a/b/c/d").is_err());
    }
}
