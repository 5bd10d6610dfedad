//! The bus policy: which well-known names the client may see, talk to or
//! own, and the finer call/broadcast rules, with xdg-dbus-proxy's semantics.

use std::collections::HashMap;

use thiserror::Error;

/// Policy levels; each implies the ones before it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub enum Level {
    #[default]
    None,
    See,
    Talk,
    Own,
}

/// What a rule applies to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Call,
    Broadcast,
}

/// One policy entry for a name (upstream's `Filter`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    pub name_is_subtree: bool,
    pub level: Level,
    pub call: bool,
    pub broadcast: bool,
    pub path: Option<String>,
    pub path_is_subtree: bool,
    pub interface: Option<String>,
    pub member: Option<String>,
}

impl Rule {
    /// A rule granting `level` to every call and broadcast.
    pub(crate) const fn level(level: Level, subtree: bool) -> Rule {
        Rule {
            name_is_subtree: subtree,
            level,
            call: true,
            broadcast: true,
            path: None,
            path_is_subtree: false,
            interface: None,
            member: None,
        }
    }

    /// Whether this rule lets a message of `kind` through.
    pub fn matches(
        &self,
        kind: Kind,
        path: Option<&str>,
        interface: Option<&str>,
        member: Option<&str>,
    ) -> bool {
        if self.level < Level::Talk {
            return false;
        }
        let kind_ok = match kind {
            Kind::Call => self.call,
            Kind::Broadcast => self.broadcast,
        };
        if !kind_ok {
            return false;
        }
        if let Some(want) = &self.path {
            let Some(path) = path else { return false };
            if self.path_is_subtree {
                let Some(rest) = path.strip_prefix(want.as_str()) else {
                    return false;
                };
                if !(rest.is_empty() || rest.starts_with('/')) {
                    return false;
                }
            } else if path != want {
                return false;
            }
        }
        if let Some(want) = &self.interface
            && interface != Some(want.as_str())
        {
            return false;
        }
        if let Some(want) = &self.member
            && member != Some(want.as_str())
        {
            return false;
        }
        true
    }
}

/// A policy for a name the bus itself answers to, which every client may
/// talk to.
const BUS_NAME: &str = "org.freedesktop.DBus";

#[derive(Debug, Error, PartialEq, Eq)]
pub enum PolicyError {
    #[error("'{0}' is not a valid bus name")]
    Name(String),
    #[error("'{0}' is not a valid rule (expected [INTERFACE.METHOD|INTERFACE.*|*][@/PATH[/*]])")]
    Rule(String),
}

/// All rules, keyed by name (without the `.*` suffix).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    rules: HashMap<String, Vec<Rule>>,
}

impl Default for Policy {
    fn default() -> Self {
        let mut p = Policy {
            rules: HashMap::new(),
        };
        p.push(BUS_NAME.to_owned(), Rule::level(Level::Talk, false));
        p
    }
}

/// Splits `org.foo.*` into (`org.foo`, true); validates the name.
fn split_name(name: &str) -> Result<(String, bool), PolicyError> {
    let (base, subtree) = match name.strip_suffix(".*") {
        Some(b) => (b, true),
        None => (name, false),
    };
    if !valid_bus_name(base) || base.starts_with(':') {
        return Err(PolicyError::Name(name.to_owned()));
    }
    Ok((base.to_owned(), subtree))
}

/// Well-known bus name syntax (D-Bus spec, "Bus names").
pub fn valid_bus_name(name: &str) -> bool {
    if name.is_empty() || name.len() > 255 {
        return false;
    }
    let unique = name.starts_with(':');
    let body = if unique { &name[1..] } else { name };
    let mut parts = 0;
    for el in body.split('.') {
        parts += 1;
        let Some(first) = el.bytes().next() else {
            return false;
        };
        if !unique && first.is_ascii_digit() {
            return false;
        }
        if !el
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
        {
            return false;
        }
    }
    parts >= 2
}

impl Policy {
    fn push(&mut self, name: String, rule: Rule) {
        self.rules.entry(name).or_default().push(rule);
    }

    /// `--see`, `--talk`, `--own`.
    pub fn add_level(&mut self, name: &str, level: Level) -> Result<(), PolicyError> {
        let (base, subtree) = split_name(name)?;
        self.push(base, Rule::level(level, subtree));
        Ok(())
    }

    /// `--call=NAME=RULE` / `--broadcast=NAME=RULE`.
    pub fn add_rule(&mut self, name: &str, kind: Kind, rule: &str) -> Result<(), PolicyError> {
        let (base, subtree) = split_name(name)?;
        let mut r = parse_rule(rule).ok_or_else(|| PolicyError::Rule(rule.to_owned()))?;
        r.name_is_subtree = subtree;
        r.call = kind == Kind::Call;
        r.broadcast = kind == Kind::Broadcast;
        self.push(base, r);
        Ok(())
    }

    /// The names with rules, and whether any of their rules is a subtree.
    pub fn names(&self) -> impl Iterator<Item = (&str, bool)> {
        self.rules
            .iter()
            .map(|(n, rs)| (n.as_str(), rs.iter().any(|r| r.name_is_subtree)))
    }

    /// The highest level granted to the well-known `name`, and the rules
    /// that matched it (upstream's `get_max_policy_and_matched` for a
    /// well-known name): exact rules, then subtree rules of each parent.
    pub fn lookup<'p>(&'p self, name: &str, matched: &mut Vec<&'p Rule>) -> Level {
        let mut max = Level::None;
        let mut cur = name;
        let mut exact = true;
        loop {
            if let Some(rules) = self.rules.get(cur) {
                for r in rules {
                    if exact || r.name_is_subtree {
                        max = max.max(r.level);
                        matched.push(r);
                    }
                }
            }
            exact = false;
            match cur.rfind('.') {
                Some(i) => cur = &cur[..i],
                None => break,
            }
        }
        max
    }
}

/// Parses `[INTERFACE.METHOD|INTERFACE.*|*][@/PATH[/*]]`.
fn parse_rule(rule: &str) -> Option<Rule> {
    let (iface_part, path_part) = match rule.split_once('@') {
        Some((i, p)) => (i, Some(p)),
        None => (rule, None),
    };
    let mut r = Rule::level(Level::Talk, false);
    if let Some(p) = path_part {
        let (p, sub) = match p.strip_suffix("/*") {
            Some(base) => (base, true),
            None => (p, false),
        };
        if !(p.starts_with('/') || (sub && p.is_empty())) {
            return None;
        }
        r.path = Some(p.to_owned());
        r.path_is_subtree = sub;
    }
    if !iface_part.is_empty() && iface_part != "*" {
        match iface_part.rsplit_once('.') {
            Some((iface, member)) => {
                if iface.is_empty() {
                    return None;
                }
                r.interface = Some(iface.to_owned());
                if member != "*" {
                    r.member = Some(member.to_owned());
                }
            }
            None => r.interface = Some(iface_part.to_owned()),
        }
    }
    Some(r)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subtree_covers_name_and_children_only() {
        let mut p = Policy::default();
        p.add_level("org.foo.*", Level::Talk).unwrap();
        let mut m = Vec::new();
        assert_eq!(p.lookup("org.foo", &mut m), Level::Talk);
        assert_eq!(p.lookup("org.foo.bar.baz", &mut m), Level::Talk);
        assert_eq!(p.lookup("org.foobar", &mut m), Level::None);
        assert_eq!(p.lookup("org", &mut m), Level::None);
    }

    #[test]
    fn levels_take_the_max() {
        let mut p = Policy::default();
        p.add_level("org.a", Level::See).unwrap();
        p.add_level("org.a", Level::Own).unwrap();
        assert_eq!(p.lookup("org.a", &mut Vec::new()), Level::Own);
        assert_eq!(
            p.lookup("org.freedesktop.DBus", &mut Vec::new()),
            Level::Talk
        );
    }

    #[test]
    fn rules_parse_and_match() {
        let r = parse_rule("org.x.Iface.Method@/obj/*").unwrap();
        assert_eq!(r.interface.as_deref(), Some("org.x.Iface"));
        assert_eq!(r.member.as_deref(), Some("Method"));
        assert!(r.matches(
            Kind::Call,
            Some("/obj/a"),
            Some("org.x.Iface"),
            Some("Method")
        ));
        assert!(r.matches(
            Kind::Call,
            Some("/obj"),
            Some("org.x.Iface"),
            Some("Method")
        ));
        assert!(!r.matches(
            Kind::Call,
            Some("/objx"),
            Some("org.x.Iface"),
            Some("Method")
        ));
        assert!(!r.matches(Kind::Call, Some("/obj"), Some("org.x.Iface"), Some("Other")));
        let any = parse_rule("*").unwrap();
        assert!(any.matches(Kind::Call, Some("/"), None, Some("M")));
        let iface = parse_rule("org.x.Iface.*").unwrap();
        assert_eq!(iface.member, None);
        assert!(iface.matches(Kind::Call, Some("/"), Some("org.x.Iface"), Some("Q")));
        let path_only = parse_rule("@/a").unwrap();
        assert!(path_only.matches(Kind::Call, Some("/a"), Some("i.j"), Some("Q")));
        assert!(!path_only.matches(Kind::Call, Some("/a/b"), Some("i.j"), Some("Q")));
        assert!(parse_rule("x@nopath").is_none());
    }

    #[test]
    fn call_rule_is_talk_for_calls_only() {
        let mut p = Policy::default();
        p.add_rule("org.a", Kind::Call, "org.a.I.M").unwrap();
        let mut m = Vec::new();
        assert_eq!(p.lookup("org.a", &mut m), Level::Talk);
        assert!(
            m.iter()
                .any(|r| r.matches(Kind::Call, Some("/"), Some("org.a.I"), Some("M")))
        );
        assert!(!m.iter().any(|r| r.matches(
            Kind::Broadcast,
            Some("/"),
            Some("org.a.I"),
            Some("M")
        )));
    }

    #[test]
    fn invalid_names_rejected() {
        let mut p = Policy::default();
        assert!(p.add_level("nodots", Level::Talk).is_err());
        assert!(p.add_level(":1.2", Level::Talk).is_err());
        assert!(p.add_level("org.1a", Level::Talk).is_err());
        assert!(p.add_level("org..a", Level::Talk).is_err());
    }
}
