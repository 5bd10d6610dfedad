//! A document's per-app permissions: `read`, `write`, `grant-permissions`
//! and `delete`, as upstream's `DocumentPermissionFlags` and their strings
//! in the permission store (`document-store.c`).

use std::fmt;

/// A set of document permissions.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct Perms(u8);

/// A permission string upstream does not know.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("No such permission: {0:?}")]
pub struct UnknownPermission(pub String);

const NAMES: [(Perms, &str); 4] = [
    (Perms::READ, "read"),
    (Perms::WRITE, "write"),
    (Perms::GRANT, "grant-permissions"),
    (Perms::DELETE, "delete"),
];

impl Perms {
    pub const NONE: Perms = Perms(0);
    pub const READ: Perms = Perms(1);
    pub const WRITE: Perms = Perms(2);
    pub const GRANT: Perms = Perms(4);
    pub const DELETE: Perms = Perms(8);
    pub const ALL: Perms = Perms(15);

    /// Parses permission strings; any unknown one is an error, as upstream's
    /// `xdp_parse_permissions`.
    pub fn parse<S: AsRef<str>>(strings: &[S]) -> Result<Perms, UnknownPermission> {
        strings.iter().try_fold(Perms::NONE, |acc, s| {
            let s = s.as_ref();
            NAMES
                .iter()
                .find(|(_, name)| *name == s)
                .map(|(p, _)| acc | *p)
                .ok_or_else(|| UnknownPermission(s.to_owned()))
        })
    }

    /// Parses what the store holds: like upstream (which parses without an
    /// error out), a list with an unknown string grants nothing.
    pub fn from_stored<S: AsRef<str>>(strings: &[S]) -> Perms {
        Self::parse(strings).unwrap_or(Perms::NONE)
    }

    /// The strings in upstream's order.
    pub fn to_strings(self) -> Vec<String> {
        NAMES
            .iter()
            .filter(|(p, _)| self.contains(*p))
            .map(|(_, n)| (*n).to_owned())
            .collect()
    }

    pub fn contains(self, other: Perms) -> bool {
        self.0 & other.0 == other.0
    }

    pub fn is_empty(self) -> bool {
        self.0 == 0
    }

    pub fn without(self, other: Perms) -> Perms {
        Perms(self.0 & !other.0)
    }
}

impl std::ops::BitOr for Perms {
    type Output = Perms;
    fn bitor(self, rhs: Perms) -> Perms {
        Perms(self.0 | rhs.0)
    }
}

impl std::ops::BitOrAssign for Perms {
    fn bitor_assign(&mut self, rhs: Perms) {
        self.0 |= rhs.0;
    }
}

impl fmt::Display for Perms {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_strings().join(","))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strings_round_trip_in_upstreams_order() {
        let p = Perms::parse(&["delete", "read", "grant-permissions", "write"]).unwrap();
        assert_eq!(p, Perms::ALL);
        assert_eq!(
            p.to_strings(),
            ["read", "write", "grant-permissions", "delete"]
        );
        assert_eq!(Perms::parse::<&str>(&[]).unwrap(), Perms::NONE);
    }

    #[test]
    fn an_unknown_string_is_an_error_and_grants_nothing_when_stored() {
        assert_eq!(
            Perms::parse(&["read", "execute"]).unwrap_err(),
            UnknownPermission("execute".into())
        );
        assert_eq!(Perms::from_stored(&["read", "execute"]), Perms::NONE);
        assert_eq!(Perms::from_stored(&["read"]), Perms::READ);
    }

    #[test]
    fn set_operations() {
        let rw = Perms::READ | Perms::WRITE;
        assert!(rw.contains(Perms::READ) && !rw.contains(Perms::GRANT));
        assert_eq!(rw.without(Perms::WRITE), Perms::READ);
        assert!(Perms::READ.without(Perms::READ).is_empty());
    }
}
