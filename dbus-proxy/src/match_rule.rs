//! Match rules (`AddMatch`/`RemoveMatch` arguments) read exactly as
//! dbus-daemon reads them (`bus/signals.c`: `find_key`, `find_value`,
//! `tokenize_rule`, `bus_match_rule_parse`), so that the proxy's decision
//! and the bus's meaning cannot differ.
//!
//! The daemon's grammar, with its sharp edges:
//!
//! - A key runs from the first non-blank byte to `=` or a blank (space,
//!   tab, CR, LF); blanks may stand between the key and `=`
//!   (`eavesdrop ='true'` is `eavesdrop`). Keys are compared byte for byte.
//! - A value runs to the first `,` outside quotes or the end. Blanks in a
//!   value are kept (`type= 'signal'` is the type ` signal`, invalid).
//!   `'` opens and closes quoting anywhere (`tr'u'e` is `true`); inside
//!   quotes a backslash is itself; outside, `\'` is a quote and any other
//!   `\` is itself. An unclosed quote makes the rule invalid.
//! - A key that is empty because the next byte is `=` ends the rule there:
//!   the daemon stops taking keys and ignores the rest (`type='signal',=x`
//!   is `type='signal'`). So does the end of the text.
//! - The daemon reads at most [`MAX_TOKENS`] keys and ignores the rest of
//!   the text, whatever it holds.
//! - Each key may appear once, except `eavesdrop`, where the last one wins;
//!   `path` and `path_namespace` exclude each other; `argN`, `argNpath` and
//!   `arg0namespace` share argument N's slot. The number after `arg` is
//!   read by C's `strtoul(…, 0)`: `arg+1`, `arg0x1` and `arg01` are all
//!   argument 1, and `arg-0` is argument 0.
//! - `eavesdrop` takes exactly `true` or `false`.
//! - Texts over [`MAX_RULE_LENGTH`] bytes are refused before parsing
//!   (`LimitsExceeded`); see [`check`].

use std::collections::BTreeMap;
use std::fmt;

use thiserror::Error;

/// dbus-daemon's `DBUS_MAXIMUM_MATCH_RULE_LENGTH`.
pub const MAX_RULE_LENGTH: usize = 1024;
/// dbus-daemon's `MAX_RULE_TOKENS`: keys past this many are ignored.
pub const MAX_TOKENS: usize = 16;
/// dbus-daemon's `DBUS_MAXIMUM_MATCH_RULE_ARG_NUMBER`.
pub const MAX_ARG: u32 = 63;
const MAX_NAME_LENGTH: usize = 255;

/// The error name the bus answers a rule it cannot parse with.
pub const ERR_MATCH_RULE_INVALID: &str = "org.freedesktop.DBus.Error.MatchRuleInvalid";
/// The error name the bus answers an over-long rule with.
pub const ERR_LIMITS_EXCEEDED: &str = "org.freedesktop.DBus.Error.LimitsExceeded";

/// Why the bus would refuse a rule.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum MatchRuleError {
    #[error("match rule text is {0} bytes, maximum is {MAX_RULE_LENGTH}")]
    TooLong(usize),
    #[error("match rule has a key with no subsequent '=' character")]
    NoEquals,
    #[error("unbalanced quotation marks in match rule")]
    UnbalancedQuotes,
    #[error("key {0} specified twice in match rule")]
    Duplicate(String),
    #[error("invalid value {value:?} for key {key} in match rule")]
    InvalidValue { key: String, value: String },
    #[error("invalid argument key {0:?} in match rule")]
    InvalidArgKey(String),
    #[error("unknown key {0:?} in match rule")]
    UnknownKey(String),
}

impl MatchRuleError {
    /// The D-Bus error name dbus-daemon answers this refusal with.
    pub fn dbus_name(&self) -> &'static str {
        match self {
            MatchRuleError::TooLong(_) => ERR_LIMITS_EXCEEDED,
            _ => ERR_MATCH_RULE_INVALID,
        }
    }
}

/// The message type a rule selects.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MessageType {
    MethodCall,
    MethodReturn,
    Signal,
    Error,
}

impl MessageType {
    fn from_name(s: &str) -> Option<Self> {
        Some(match s {
            "method_call" => MessageType::MethodCall,
            "method_return" => MessageType::MethodReturn,
            "signal" => MessageType::Signal,
            "error" => MessageType::Error,
            _ => return None,
        })
    }

    fn as_str(self) -> &'static str {
        match self {
            MessageType::MethodCall => "method_call",
            MessageType::MethodReturn => "method_return",
            MessageType::Signal => "signal",
            MessageType::Error => "error",
        }
    }
}

/// `path` or `path_namespace`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PathMatch {
    Exact(String),
    Namespace(String),
}

/// How an argument is compared: `argN`, `argNpath` or `arg0namespace`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ArgKind {
    Str,
    Path,
    Namespace,
}

/// A rule as the daemon holds it after parsing.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MatchRule {
    pub msg_type: Option<MessageType>,
    pub sender: Option<String>,
    pub interface: Option<String>,
    pub member: Option<String>,
    pub path: Option<PathMatch>,
    pub destination: Option<String>,
    /// Argument number -> (kind, value).
    pub args: BTreeMap<u32, (ArgKind, String)>,
    /// Whether the client asks to receive messages addressed to others.
    pub eavesdrop: bool,
}

/// What the proxy does with an `AddMatch` rule: the bus's own answer for a
/// rule the bus refuses, [`Verdict::Eavesdrop`] for one the bus would take
/// as eavesdropping, else pass it on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Forward,
    Eavesdrop,
    Invalid(MatchRuleError),
}

/// Decides about an `AddMatch` text. An eavesdropping rule is refused as
/// such whatever its length (the daemon does not read an over-long text at
/// all, so its meaning is taken from the same grammar without the limit);
/// otherwise the answer is the daemon's.
pub fn check(text: &str) -> Verdict {
    match parse_unlimited(text) {
        Ok(r) if r.eavesdrop => Verdict::Eavesdrop,
        _ if text.len() > MAX_RULE_LENGTH => Verdict::Invalid(MatchRuleError::TooLong(text.len())),
        Ok(_) => Verdict::Forward,
        Err(e) => Verdict::Invalid(e),
    }
}

/// Parses `text` as dbus-daemon's `bus_match_rule_parse` does.
pub fn parse(text: &str) -> Result<MatchRule, MatchRuleError> {
    if text.len() > MAX_RULE_LENGTH {
        return Err(MatchRuleError::TooLong(text.len()));
    }
    parse_unlimited(text)
}

pub(crate) fn parse_unlimited(text: &str) -> Result<MatchRule, MatchRuleError> {
    let mut rule = MatchRule::default();
    for (key, value) in tokenize(text.as_bytes())? {
        rule.apply(&key, value)?;
    }
    Ok(rule)
}

fn is_blank(c: u8) -> bool {
    matches!(c, b' ' | b'\t' | b'\n' | b'\r')
}

/// `tokenize_rule`: up to [`MAX_TOKENS`] key/value pairs; an empty key
/// ends the list. Keys and values are bytes of a UTF-8 text cut at ASCII
/// bytes, so they are UTF-8 themselves.
fn tokenize(s: &[u8]) -> Result<Vec<(String, String)>, MatchRuleError> {
    let mut out = Vec::new();
    let mut pos = 0;
    while out.len() < MAX_TOKENS && pos < s.len() {
        // find_key
        while pos < s.len() && is_blank(s[pos]) {
            pos += 1;
        }
        let key_start = pos;
        while pos < s.len() && s[pos] != b'=' && !is_blank(s[pos]) {
            pos += 1;
        }
        let key = &s[key_start..pos];
        while pos < s.len() && is_blank(s[pos]) {
            pos += 1;
        }
        if key.is_empty() {
            // At the end, or stuck before '=': the daemon's loop makes no
            // more progress and its key list ends here.
            break;
        }
        if pos == s.len() || s[pos] != b'=' {
            return Err(MatchRuleError::NoEquals);
        }
        pos += 1;
        // find_value
        let mut value = Vec::new();
        let mut in_quotes = false;
        let mut backslash = false;
        while pos < s.len() {
            let c = s[pos];
            pos += 1;
            if backslash {
                // `\` escapes only a quote.
                if c != b'\'' {
                    value.push(b'\\');
                }
                value.push(c);
                backslash = false;
            } else if in_quotes {
                if c == b'\'' {
                    in_quotes = false;
                } else {
                    value.push(c);
                }
            } else {
                match c {
                    b'\'' => in_quotes = true,
                    b',' => break,
                    b'\\' => backslash = true,
                    _ => value.push(c),
                }
            }
        }
        if backslash {
            value.push(b'\\');
        }
        if in_quotes {
            return Err(MatchRuleError::UnbalancedQuotes);
        }
        out.push((utf8(key), utf8(&value)));
    }
    Ok(out)
}

fn utf8(b: &[u8]) -> String {
    // Cut only at ASCII bytes of valid UTF-8, so this never replaces.
    String::from_utf8_lossy(b).into_owned()
}

impl MatchRule {
    fn apply(&mut self, key: &str, value: String) -> Result<(), MatchRuleError> {
        let invalid = |value: String| MatchRuleError::InvalidValue {
            key: key.to_owned(),
            value,
        };
        let dup = || MatchRuleError::Duplicate(key.to_owned());
        match key {
            "type" => {
                if self.msg_type.is_some() {
                    return Err(dup());
                }
                self.msg_type = Some(MessageType::from_name(&value).ok_or_else(|| invalid(value))?);
            }
            "sender" | "destination" => {
                let slot = if key == "sender" {
                    &mut self.sender
                } else {
                    &mut self.destination
                };
                if slot.is_some() {
                    return Err(dup());
                }
                if !valid_bus_name(value.as_bytes(), false) {
                    return Err(invalid(value));
                }
                *slot = Some(value);
            }
            "interface" => {
                if self.interface.is_some() {
                    return Err(dup());
                }
                if !valid_interface(value.as_bytes()) {
                    return Err(invalid(value));
                }
                self.interface = Some(value);
            }
            "member" => {
                if self.member.is_some() {
                    return Err(dup());
                }
                if !valid_member(value.as_bytes()) {
                    return Err(invalid(value));
                }
                self.member = Some(value);
            }
            "path" | "path_namespace" => {
                if self.path.is_some() {
                    return Err(dup());
                }
                if !valid_path(value.as_bytes()) {
                    return Err(invalid(value));
                }
                self.path = Some(if key == "path" {
                    PathMatch::Exact(value)
                } else {
                    PathMatch::Namespace(value)
                });
            }
            // No duplicate check: the last one wins (dbus-monitor relies on
            // adding eavesdrop='false' after its own).
            "eavesdrop" => match value.as_str() {
                "true" => self.eavesdrop = true,
                "false" => self.eavesdrop = false,
                _ => return Err(invalid(value)),
            },
            k if k.starts_with("arg") => {
                let (n, kind) = arg_key(k)?;
                if kind == ArgKind::Namespace && !valid_bus_name(value.as_bytes(), true) {
                    return Err(invalid(value));
                }
                if self.args.contains_key(&n) {
                    return Err(dup());
                }
                self.args.insert(n, (kind, value));
            }
            _ => return Err(MatchRuleError::UnknownKey(key.to_owned())),
        }
        Ok(())
    }
}

/// `bus_match_rule_parse_arg_match`'s reading of `argN`, `argNpath` and
/// `arg0namespace`.
fn arg_key(key: &str) -> Result<(u32, ArgKind), MatchRuleError> {
    let bad = || MatchRuleError::InvalidArgKey(key.to_owned());
    if key.len() < 4 {
        return Err(bad());
    }
    let (n, used) = strtoul0(&key.as_bytes()[3..]).ok_or_else(bad)?;
    let rest = &key[3 + used..];
    let kind = if rest.is_empty() {
        ArgKind::Str
    } else if rest == "path" {
        ArgKind::Path
    } else if key == "arg0namespace" {
        ArgKind::Namespace
    } else {
        return Err(bad());
    };
    if n > u64::from(MAX_ARG) {
        return Err(bad());
    }
    Ok((n as u32, kind))
}

/// C's `strtoul(s, &end, 0)` on text without leading blanks (keys have
/// none): optional sign, then `0x` hex, `0` octal or decimal. Returns the
/// value and the bytes used, or `None` where the daemon's
/// `_dbus_string_parse_uint` fails (no digits, or out of range).
fn strtoul0(s: &[u8]) -> Option<(u64, usize)> {
    let mut i = 0;
    let negative = match s.first() {
        Some(b'-') => {
            i += 1;
            true
        }
        Some(b'+') => {
            i += 1;
            false
        }
        _ => false,
    };
    let mut base = 10;
    if s.get(i) == Some(&b'0') {
        if matches!(s.get(i + 1), Some(b'x' | b'X'))
            && s.get(i + 2).is_some_and(|c| c.is_ascii_hexdigit())
        {
            base = 16;
            i += 2;
        } else {
            base = 8;
        }
    }
    let start = i;
    let mut v: u64 = 0;
    let mut overflow = false;
    while let Some(d) = s.get(i).and_then(|&c| (c as char).to_digit(base)) {
        match v
            .checked_mul(u64::from(base))
            .and_then(|v| v.checked_add(u64::from(d)))
        {
            Some(n) => v = n,
            None => overflow = true,
        }
        i += 1;
    }
    if i == start || overflow {
        return None;
    }
    // strtoul negates in unsigned arithmetic: "-0" is 0, "-1" is ULONG_MAX.
    Some((if negative { v.wrapping_neg() } else { v }, i))
}

fn name_initial(c: u8) -> bool {
    c.is_ascii_alphabetic() || c == b'_'
}

fn name_char(c: u8) -> bool {
    c.is_ascii_alphanumeric() || c == b'_'
}

fn bus_initial(c: u8) -> bool {
    name_initial(c) || c == b'-'
}

fn bus_char(c: u8) -> bool {
    name_char(c) || c == b'-'
}

/// `_dbus_validate_path`.
fn valid_path(s: &[u8]) -> bool {
    if s.first() != Some(&b'/') {
        return false;
    }
    if s.len() == 1 {
        return true;
    }
    s[1..]
        .split(|&c| c == b'/')
        .all(|el| !el.is_empty() && el.iter().all(|&c| name_char(c)))
}

/// `_dbus_validate_interface`: two or more dot-separated elements.
fn valid_interface(s: &[u8]) -> bool {
    if s.is_empty() || s.len() > MAX_NAME_LENGTH {
        return false;
    }
    let mut elements = 0;
    for el in s.split(|&c| c == b'.') {
        match el.split_first() {
            Some((&f, rest)) if name_initial(f) && rest.iter().all(|&c| name_char(c)) => {}
            _ => return false,
        }
        elements += 1;
    }
    elements >= 2
}

/// `_dbus_validate_member`.
fn valid_member(s: &[u8]) -> bool {
    match s.split_first() {
        Some((&f, rest)) => {
            s.len() <= MAX_NAME_LENGTH && name_initial(f) && rest.iter().all(|&c| name_char(c))
        }
        None => false,
    }
}

/// `_dbus_validate_bus_name_full`; a namespace may be a single element.
fn valid_bus_name(s: &[u8], namespace: bool) -> bool {
    if s.is_empty() || s.len() > MAX_NAME_LENGTH {
        return false;
    }
    if let Some(unique) = s.strip_prefix(b":") {
        // The daemon checks each byte after ':'; a '.' must be followed by
        // a name byte (so no empty element, except a leading one: ":.a").
        let mut i = 0;
        while i < unique.len() {
            if unique[i] == b'.' {
                if !unique.get(i + 1).is_some_and(|&c| bus_char(c)) {
                    return false;
                }
                i += 1;
            } else if !bus_char(unique[i]) {
                return false;
            }
            i += 1;
        }
        return true;
    }
    let mut elements = 0;
    for el in s.split(|&c| c == b'.') {
        match el.split_first() {
            Some((&f, rest)) if bus_initial(f) && rest.iter().all(|&c| bus_char(c)) => {}
            _ => return false,
        }
        elements += 1;
    }
    namespace || elements >= 2
}

/// Writes a value so that [`parse`] reads it back: quoted, with each `'`
/// written as `'\''`.
fn quoted(f: &mut fmt::Formatter<'_>, value: &str) -> fmt::Result {
    f.write_str("'")?;
    f.write_str(&value.replace('\'', "'\\''"))?;
    f.write_str("'")
}

impl fmt::Display for MatchRule {
    /// The canonical spelling, keys in the daemon's order
    /// (`match_rule_to_string`); [`parse`] of it gives the rule back.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut sep = "";
        let mut key = |f: &mut fmt::Formatter<'_>, k: &str, v: &str| -> fmt::Result {
            write!(f, "{sep}{k}=")?;
            sep = ",";
            quoted(f, v)
        };
        if let Some(t) = self.msg_type {
            key(f, "type", t.as_str())?;
        }
        if let Some(v) = &self.interface {
            key(f, "interface", v)?;
        }
        if let Some(v) = &self.member {
            key(f, "member", v)?;
        }
        match &self.path {
            Some(PathMatch::Exact(p)) => key(f, "path", p)?,
            Some(PathMatch::Namespace(p)) => key(f, "path_namespace", p)?,
            None => {}
        }
        if let Some(v) = &self.sender {
            key(f, "sender", v)?;
        }
        if let Some(v) = &self.destination {
            key(f, "destination", v)?;
        }
        for (n, (kind, v)) in &self.args {
            let k = match kind {
                ArgKind::Str => format!("arg{n}"),
                ArgKind::Path => format!("arg{n}path"),
                ArgKind::Namespace => "arg0namespace".to_owned(),
            };
            key(f, &k, v)?;
        }
        if self.eavesdrop {
            key(f, "eavesdrop", "true")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn eavesdrops(text: &str) -> bool {
        parse(text).expect(text).eavesdrop
    }

    fn invalid(text: &str) -> bool {
        parse(text).is_err()
    }

    #[test]
    fn eavesdrop_in_every_spelling_the_daemon_takes_as_true() {
        for text in [
            "eavesdrop=true",
            "eavesdrop='true'",
            "eavesdrop=tr'u'e",
            "eavesdrop='t''r''u''e'",
            "eavesdrop=''true",
            "eavesdrop=true''",
            "eavesdrop ='true'",
            "eavesdrop\t=true",
            " \r\n eavesdrop\n=true",
            "type='signal',eavesdrop=true",
            "type='signal', eavesdrop ='true',",
            "eavesdrop=false,eavesdrop=true",
            "eavesdrop=true,=ignored,junk",
            "eavesdrop=true,   ",
        ] {
            assert!(eavesdrops(text), "{text:?}");
            assert_eq!(check(text), Verdict::Eavesdrop, "{text:?}");
        }
    }

    #[test]
    fn spellings_that_do_not_eavesdrop_or_are_invalid() {
        // Valid, not eavesdropping.
        for text in [
            "",
            "   ",
            "eavesdrop=false",
            "eavesdrop=true,eavesdrop=false",
            "type='signal',=eavesdrop=true",
            "=eavesdrop=true",
            "type='signal',",
        ] {
            assert!(!eavesdrops(text), "{text:?}");
            assert_eq!(check(text), Verdict::Forward, "{text:?}");
        }
        // Invalid: the daemon refuses them, so does the proxy.
        for text in [
            "eavesdrop= true",
            "eavesdrop=true ",
            "eavesdrop=TRUE",
            "eavesdrop=1",
            "eavesdrop=t\\rue",
            "eavesdrop='true",
            "eavesdrop=\\'true\\'",
            "Eavesdrop=true",
            "eavesdrop",
            "eavesdrop true",
            "type='signal',,eavesdrop=true",
            ",eavesdrop=true",
        ] {
            assert!(invalid(text), "{text:?}");
            assert!(matches!(check(text), Verdict::Invalid(_)), "{text:?}");
        }
    }

    #[test]
    fn quotes_and_backslashes() {
        let arg0 = |text: &str| parse(text).expect(text).args[&0].1.clone();
        assert_eq!(arg0("arg0='a,b'"), "a,b");
        assert_eq!(arg0("arg0=a'b,c'd"), "ab,cd");
        assert_eq!(arg0(r"arg0='a\b'"), r"a\b", "backslash inside quotes");
        assert_eq!(arg0(r"arg0=a\b"), r"a\b", "backslash before a non-quote");
        assert_eq!(arg0(r"arg0=\'"), "'");
        assert_eq!(arg0(r"arg0='it'\''s'"), "it's");
        assert_eq!(
            arg0(r"arg0=a\\'b'"),
            r"a\\b",
            "an escaped backslash stays doubled"
        );
        assert_eq!(arg0(r"arg0=a\"), r"a\", "trailing backslash");
        assert_eq!(arg0("arg0= x y "), " x y ", "blanks kept in values");
        assert_eq!(arg0("arg0="), "");
        assert!(invalid(r"arg0='\''"), "no escape inside quotes");
    }

    #[test]
    fn keys_duplicates_and_limits() {
        assert!(invalid("type='signal',type='signal'"));
        assert!(invalid("path='/a',path_namespace='/b'"));
        assert!(invalid("arg0='a',arg0path='/a'"));
        assert!(invalid("arg0='a',arg0namespace='a'"));
        assert!(invalid("arg64='a'"));
        assert!(invalid("arg='a'"));
        assert!(invalid("arg1namespace='a'"));
        assert!(invalid("arg-1='a'"));
        assert!(invalid("arg0x='a'"));
        assert!(invalid("bogus='a'"));
        assert!(invalid("type=' signal'"));
        assert!(invalid("sender='org'"), "one element");
        assert!(invalid("path='/a/'"));
        assert!(invalid("interface='a..b'"));
        assert!(invalid("member='1a'"));
        let r = parse("arg+1='a',arg0x2path='/p',arg03='c',arg-0='z'").unwrap();
        assert_eq!(r.args[&1], (ArgKind::Str, "a".into()));
        assert_eq!(r.args[&2], (ArgKind::Path, "/p".into()));
        assert_eq!(r.args[&3], (ArgKind::Str, "c".into()));
        assert_eq!(r.args[&0], (ArgKind::Str, "z".into()));
        assert!(
            parse("arg0namespace='org'").is_ok(),
            "a namespace may be one element"
        );
        assert!(parse("sender=':1.7',destination=':.x'").is_ok());
        // Past the 16th key the daemon reads nothing, eavesdrop included.
        let many = "eavesdrop=false,".repeat(MAX_TOKENS);
        assert_eq!(check(&format!("{many}eavesdrop=true")), Verdict::Forward);
        assert_eq!(check(&format!("{many}junk")), Verdict::Forward);
        let fifteen = "eavesdrop=false,".repeat(MAX_TOKENS - 1);
        assert_eq!(
            check(&format!("{fifteen}eavesdrop=true")),
            Verdict::Eavesdrop
        );
        // Length: the bus's LimitsExceeded, unless the rule eavesdrops.
        let long = format!("arg0='{}'", "z".repeat(MAX_RULE_LENGTH));
        assert_eq!(
            check(&long),
            Verdict::Invalid(MatchRuleError::TooLong(long.len()))
        );
        assert_eq!(check(&format!("eavesdrop=true,{long}")), Verdict::Eavesdrop);
        let exact = format!("arg0='{}'", "z".repeat(MAX_RULE_LENGTH - 7));
        assert_eq!(exact.len(), MAX_RULE_LENGTH);
        assert_eq!(check(&exact), Verdict::Forward);
    }

    #[test]
    fn print_then_parse_is_the_same_rule() {
        for text in [
            "type='signal',sender='org.a.B',interface='a.b',member='M',path_namespace='/',destination=':1.2',arg0namespace='org',arg3path='/x',arg5='it'\\''s, \\\\ ok',eavesdrop=true",
            "path='/',arg63=''",
            "",
        ] {
            let r = parse(text).unwrap();
            let printed = r.to_string();
            assert_eq!(parse(&printed).unwrap(), r, "{printed}");
        }
    }

    #[test]
    fn strtoul_like_c() {
        assert_eq!(strtoul0(b"0"), Some((0, 1)));
        assert_eq!(strtoul0(b"08"), Some((0, 1)));
        assert_eq!(strtoul0(b"0x1f"), Some((31, 4)));
        assert_eq!(strtoul0(b"0xg"), Some((0, 1)));
        assert_eq!(strtoul0(b"+7path"), Some((7, 2)));
        assert_eq!(strtoul0(b"-0"), Some((0, 2)));
        assert_eq!(strtoul0(b"x"), None);
        assert_eq!(strtoul0(b"99999999999999999999999"), None);
    }
}
