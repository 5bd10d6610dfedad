//! The per-client filter: decides, message by message, what passes between
//! the client and the bus, with xdg-dbus-proxy's semantics
//! (`flatpak-proxy.c`):
//!
//! - Outgoing calls and signals are checked against the destination's level
//!   and call rules; a destination the client cannot see yields
//!   `ServiceUnknown` (or `NameHasNoOwner` for unique names and
//!   NO_AUTO_START), a visible one it may not use yields `AccessDenied`.
//! - Calls to org.freedesktop.DBus are allow-listed per method; AddMatch
//!   and RemoveMatch rules are read with dbus-daemon's grammar
//!   ([`crate::match_rule`]), eavesdropping ones refused.
//! - Replies pass only for calls that were let through, in both directions.
//! - Incoming broadcasts pass only from names the client may talk to and
//!   whose broadcast rules match.
//! - Unique names become visible when they own a visible name, when they
//!   send us something, and our own after Hello.
//!
//! A made-up reply (an error, or NameHasOwner's `false`) keeps the bus's
//! ordering as upstream does: the call is replaced by a Ping to the bus
//! with the same serial, and the Ping's reply by the made-up one.

use std::collections::HashMap;
use std::sync::Arc;

use thiserror::Error;

use crate::match_rule::{self, Verdict as RuleVerdict};
use crate::policy::{Kind, Level, Policy, Rule};
use porthole_dbus_wire::{self as wire, Arg, Builder, Header, WireError};

const BUS_NAME: &str = "org.freedesktop.DBus";
const BUS_PATH: &str = "/org/freedesktop/DBus";
/// Client serials above this are refused: the range above is where the
/// proxy numbers the calls it makes itself on the client's connection.
pub const MAX_CLIENT_SERIAL: u32 = u32::MAX - 65536;

const ERR_ACCESS_DENIED: &str = "org.freedesktop.DBus.Error.AccessDenied";
const ERR_SERVICE_UNKNOWN: &str = "org.freedesktop.DBus.Error.ServiceUnknown";
const ERR_NAME_HAS_NO_OWNER: &str = "org.freedesktop.DBus.Error.NameHasNoOwner";
const ERR_INVALID_ARGS: &str = "org.freedesktop.DBus.Error.InvalidArgs";

#[derive(Debug, Error)]
pub enum FilterError {
    #[error("malformed message: {0}")]
    Wire(#[from] WireError),
    #[error("client serial {0} out of range")]
    Serial(u32),
}

/// What the client may receive in reply to one of its (or our) calls.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Expect {
    Normal,
    Hello,
    ListNames,
    FakeFilter,
    FakeGetNameOwner(String),
    FakeListNames,
    /// The made-up reply to send when the Ping standing in for the call
    /// returns.
    Rewrite(Vec<u8>),
}

/// The outcome for a message from the client.
#[derive(Debug, Default)]
pub struct FromClient {
    /// Send the message on to the bus.
    pub forward: bool,
    /// Messages of our own for the bus (after the forwarded one): the
    /// Ping standing in for a refused call, or the calls after Hello.
    pub to_bus: Vec<Vec<u8>>,
    /// Stop reading from the client until a later [`FromBus::resume_client`].
    pub pause_client: bool,
}

/// The outcome for a message from the bus.
#[derive(Debug, Default)]
pub struct FromBus {
    pub verdict: Verdict,
    pub to_bus: Vec<Vec<u8>>,
    pub resume_client: bool,
}

#[derive(Debug, Default, PartialEq, Eq)]
pub enum Verdict {
    #[default]
    Forward,
    Replace(Vec<u8>),
    Drop,
}

enum Handler {
    Pass,
    Deny,
    Hide,
    NameListReply,
    HasOwnerReply,
    GetOwnerReply,
    ValidateOwn,
    ValidateSee,
    ValidateTalk,
    ValidateMatch,
    ValidateRemoveMatch,
}

static MATCH_ALL: [Rule; 4] = [
    Rule::level(Level::None, false),
    Rule::level(Level::See, false),
    Rule::level(Level::Talk, false),
    Rule::level(Level::Own, false),
];

/// Filtering state of one client connection.
#[derive(Debug)]
pub struct ClientFilter {
    policy: Arc<Policy>,
    enabled: bool,
    log: bool,
    sloppy_names: bool,
    id: u64,
    /// Replies the client may receive, by the serial of its call.
    expected_from_bus: HashMap<u32, Expect>,
    /// Replies the client may send: serial of a forwarded call -> callers.
    expected_from_client: HashMap<u32, Vec<String>>,
    unique_level: HashMap<String, Level>,
    unique_owned: HashMap<String, Vec<String>>,
    unique_name: Option<String>,
    hello_seen: bool,
    last_fake_serial: u32,
    made_up_serial: u32,
}

impl ClientFilter {
    pub fn new(policy: Arc<Policy>, enabled: bool, log: bool, id: u64) -> Self {
        ClientFilter {
            policy,
            enabled,
            log,
            sloppy_names: false,
            id,
            expected_from_bus: HashMap::new(),
            expected_from_client: HashMap::new(),
            unique_level: HashMap::new(),
            unique_owned: HashMap::new(),
            unique_name: None,
            hello_seen: false,
            last_fake_serial: MAX_CLIENT_SERIAL,
            made_up_serial: 0x4000_0000,
        }
    }

    /// `--sloppy-names`: every unique name's NameOwnerChanged is shown
    /// (upstream uses it for the accessibility bus).
    pub fn with_sloppy_names(mut self, sloppy: bool) -> Self {
        self.sloppy_names = sloppy;
        self
    }

    /// The highest level for a destination or sender, with the rules that
    /// matched (upstream `flatpak_proxy_client_get_max_policy_and_matched`).
    fn level_of<'s>(&'s self, name: Option<&str>, matched: &mut Vec<&'s Rule>) -> Level {
        let Some(name) = name else {
            matched.push(&MATCH_ALL[Level::Talk as usize]);
            return Level::Talk;
        };
        if name.starts_with(':') {
            let mut max = self.unique_level.get(name).copied().unwrap_or_default();
            if max > Level::None {
                matched.push(&MATCH_ALL[max as usize]);
            }
            if let Some(owned) = self.unique_owned.get(name) {
                for n in owned {
                    max = max.max(self.policy.lookup(n, matched));
                }
            }
            return max;
        }
        self.policy.lookup(name, matched)
    }

    fn level(&self, name: &str) -> Level {
        self.level_of(Some(name), &mut Vec::new())
    }

    fn raise_unique(&mut self, unique: &str, level: Level) {
        if level == Level::None {
            return;
        }
        let e = self.unique_level.entry(unique.to_owned()).or_default();
        if level > *e {
            *e = level;
        }
    }

    fn add_owned(&mut self, unique: &str, name: &str) {
        self.unique_owned
            .entry(unique.to_owned())
            .or_default()
            .push(name.to_owned());
    }

    fn handler(&mut self, h: &Header<'_>) -> Handler {
        // Only replies are matched against outstanding calls; a call or
        // signal carrying a REPLY_SERIAL field is judged like any other.
        if let Some(rs) = h.reply_serial.filter(|_| is_reply(h)) {
            let ok = match (h.destination, self.expected_from_client.get_mut(&rs)) {
                (Some(dest), Some(callers)) => match callers.iter().position(|c| c == dest) {
                    Some(i) => {
                        callers.swap_remove(i);
                        if callers.is_empty() {
                            self.expected_from_client.remove(&rs);
                        }
                        true
                    }
                    None => false,
                },
                _ => false,
            };
            return if ok { Handler::Pass } else { Handler::Deny };
        }
        let mut matched = Vec::new();
        let level = self.level_of(h.destination, &mut matched);
        if level < Level::See {
            return Handler::Hide;
        }
        if level < Level::Talk {
            return Handler::Deny;
        }
        if h.destination != Some(BUS_NAME) {
            if level == Level::Own
                || matched
                    .iter()
                    .any(|r| r.matches(Kind::Call, h.path, h.interface, h.member))
            {
                return Handler::Pass;
            }
            return Handler::Deny;
        }
        if h.msg_type == wire::METHOD_CALL
            && h.interface == Some("org.freedesktop.DBus.Introspectable")
        {
            return Handler::Pass;
        }
        if h.msg_type != wire::METHOD_CALL || h.interface != Some(BUS_NAME) {
            return Handler::Deny;
        }
        match h.member.unwrap_or("") {
            "AddMatch" => Handler::ValidateMatch,
            "RemoveMatch" => Handler::ValidateRemoveMatch,
            "Hello" | "GetId" => Handler::Pass,
            "UpdateActivationEnvironment" | "BecomeMonitor" => Handler::Deny,
            "RequestName" | "ReleaseName" | "ListQueuedOwners" => Handler::ValidateOwn,
            "NameHasOwner" => Handler::HasOwnerReply,
            "GetNameOwner" => Handler::GetOwnerReply,
            "GetConnectionUnixProcessID"
            | "GetConnectionCredentials"
            | "GetAdtAuditSessionData"
            | "GetConnectionSELinuxSecurityContext"
            | "GetConnectionUnixUser" => Handler::ValidateSee,
            "StartServiceByName" => Handler::ValidateTalk,
            "ListNames" | "ListActivatableNames" => Handler::NameListReply,
            other => {
                tracing::debug!(client = self.id, method = other, "unknown bus method");
                Handler::Deny
            }
        }
    }

    fn made_up(&mut self, h: &Header<'_>, error: Option<&str>, value: Option<bool>) -> Vec<u8> {
        self.made_up_serial = self.made_up_serial.wrapping_add(1).max(1);
        let args: Vec<Arg<'_>> = match (error, value) {
            (Some(e), _) => vec![Arg::Str(e)],
            (None, Some(b)) => vec![Arg::Bool(b)],
            _ => Vec::new(),
        };
        Builder {
            msg_type: if error.is_some() {
                wire::ERROR
            } else {
                wire::METHOD_RETURN
            },
            flags: wire::FLAG_NO_REPLY_EXPECTED,
            serial: self.made_up_serial,
            error_name: error,
            reply_serial: Some(h.serial),
            destination: self.unique_name.as_deref(),
            sender: Some(BUS_NAME),
            args: &args,
            ..Default::default()
        }
        .build()
    }

    /// Replaces the call by a Ping with its serial; the Ping's reply will
    /// be swapped for the made-up one (upstream `get_error_for_roundtrip`).
    fn refuse(
        &mut self,
        h: &Header<'_>,
        error: Option<&str>,
        value: Option<bool>,
        out: &mut FromClient,
    ) {
        let reply = self.made_up(h, error, value);
        let ping = Builder {
            msg_type: wire::METHOD_CALL,
            flags: h.flags,
            serial: h.serial,
            path: Some(BUS_PATH),
            interface: Some("org.freedesktop.DBus.Peer"),
            member: Some("Ping"),
            destination: Some(BUS_NAME),
            ..Default::default()
        }
        .build();
        out.to_bus.push(ping);
        self.expected_from_bus
            .insert(h.serial, Expect::Rewrite(reply));
    }

    fn fake_call(&mut self, member: &str, arg: Option<&str>, expect: Expect) -> Vec<u8> {
        self.last_fake_serial = self
            .last_fake_serial
            .wrapping_add(1)
            .max(MAX_CLIENT_SERIAL + 1);
        let args: Vec<Arg<'_>> = arg.map(Arg::Str).into_iter().collect();
        let m = Builder {
            msg_type: wire::METHOD_CALL,
            serial: self.last_fake_serial,
            path: Some(BUS_PATH),
            interface: Some(BUS_NAME),
            member: Some(member),
            destination: Some(BUS_NAME),
            args: &args,
            ..Default::default()
        }
        .build();
        self.expected_from_bus.insert(self.last_fake_serial, expect);
        m
    }

    /// After Hello: learn who owns the names in the policy and subscribe to
    /// their ownership changes (upstream `queue_initial_name_ops`).
    fn initial_name_ops(&mut self, out: &mut FromClient) {
        let policy = Arc::clone(&self.policy);
        let mut names: Vec<(&str, bool)> = policy.names().collect();
        names.sort_unstable();
        let mut wildcards = false;
        for (name, subtree) in names {
            if name == BUS_NAME {
                continue;
            }
            let rule = format!(
                "type='signal',sender='org.freedesktop.DBus',interface='org.freedesktop.DBus',member='NameOwnerChanged',{}='{}'",
                if subtree { "arg0namespace" } else { "arg0" },
                name
            );
            let m = self.fake_call("AddMatch", Some(&rule), Expect::FakeFilter);
            out.to_bus.push(m);
            if subtree {
                wildcards = true;
            } else {
                let m = self.fake_call(
                    "GetNameOwner",
                    Some(name),
                    Expect::FakeGetNameOwner(name.to_owned()),
                );
                out.to_bus.push(m);
            }
        }
        if wildcards {
            let m = self.fake_call("ListNames", None, Expect::FakeListNames);
            out.to_bus.push(m);
            out.pause_client = true;
        }
    }

    /// Whether deciding about this message needs its body; if not, a large
    /// message can be decided on from its header and passed on as it
    /// arrives.
    pub fn needs_body(&self, h: &Header<'_>, from_bus: bool) -> bool {
        if !self.enabled {
            return false;
        }
        if !from_bus {
            return h.destination == Some(BUS_NAME);
        }
        if let Some(rs) = h.reply_serial.filter(|_| is_reply(h)) {
            return !matches!(self.expected_from_bus.get(&rs), None | Some(Expect::Normal));
        }
        h.msg_type == wire::SIGNAL && h.sender == Some(BUS_NAME)
    }

    /// Decides about one complete message from the client.
    pub fn from_client(&mut self, msg: &[u8]) -> Result<FromClient, FilterError> {
        let h = Header::parse(msg)?;
        self.from_client_parsed(msg, &h)
    }

    /// [`Self::from_client`] for a message whose header is already parsed.
    pub fn from_client_parsed(
        &mut self,
        msg: &[u8],
        h: &Header<'_>,
    ) -> Result<FromClient, FilterError> {
        let h = h.clone();
        let mut out = FromClient::default();
        if !self.enabled {
            out.forward = true;
            return Ok(out);
        }
        if h.serial > MAX_CLIENT_SERIAL {
            return Err(FilterError::Serial(h.serial));
        }
        if self.log {
            log_header("C", self.id, &h, "->");
        }
        let mut expect = None;
        let is_hello = h.destination == Some(BUS_NAME)
            && h.msg_type == wire::METHOD_CALL
            && h.interface == Some(BUS_NAME)
            && h.member == Some("Hello");
        if is_hello {
            expect = Some(Expect::Hello);
        }
        enum Act {
            Pass,
            Deny,
            Hide,
            Reply(Option<&'static str>, Option<bool>),
        }
        let act = match self.handler(&h) {
            Handler::Pass => Act::Pass,
            Handler::Deny => Act::Deny,
            Handler::Hide => Act::Hide,
            Handler::HasOwnerReply | Handler::GetOwnerReply
                if !self.arg0_has(&h, msg, Level::See) =>
            {
                if h.member == Some("GetNameOwner") {
                    Act::Reply(Some(ERR_NAME_HAS_NO_OWNER), None)
                } else {
                    Act::Reply(None, Some(false))
                }
            }
            Handler::HasOwnerReply | Handler::GetOwnerReply => Act::Pass,
            // The rule is read as dbus-daemon reads it: what the bus would
            // refuse gets the bus's own error, an eavesdropping rule
            // AccessDenied; a body without a string gets the bus's
            // InvalidArgs rather than passing unread.
            Handler::ValidateMatch => match h.arg0_str(msg).map(match_rule::check) {
                None => Act::Reply(Some(ERR_INVALID_ARGS), None),
                Some(RuleVerdict::Forward) => Act::Pass,
                Some(RuleVerdict::Eavesdrop) => {
                    tracing::debug!(client = self.id, "eavesdropping match rule refused");
                    Act::Reply(Some(ERR_ACCESS_DENIED), None)
                }
                Some(RuleVerdict::Invalid(e)) => Act::Reply(Some(e.dbus_name()), None),
            },
            // Removing cannot widen what the client receives: only rules
            // the bus would refuse are answered here.
            Handler::ValidateRemoveMatch => match h.arg0_str(msg).map(match_rule::parse) {
                None => Act::Reply(Some(ERR_INVALID_ARGS), None),
                Some(Ok(_)) => Act::Pass,
                Some(Err(e)) => Act::Reply(Some(e.dbus_name()), None),
            },
            Handler::ValidateOwn | Handler::ValidateSee | Handler::ValidateTalk => {
                let need = match self.handler_level(&h) {
                    Some(l) => l,
                    None => Level::Own,
                };
                match h.arg0_str(msg) {
                    Some(name) => {
                        let have = self.level(name);
                        if have >= need {
                            Act::Pass
                        } else if have < Level::See {
                            Act::Hide
                        } else {
                            Act::Deny
                        }
                    }
                    None => Act::Hide,
                }
            }
            Handler::NameListReply => {
                expect = Some(Expect::ListNames);
                Act::Pass
            }
        };
        match act {
            Act::Pass => {
                out.forward = true;
                if h.expects_reply() {
                    self.expected_from_bus
                        .insert(h.serial, expect.take().unwrap_or(Expect::Normal));
                }
            }
            Act::Hide => {
                if h.expects_reply() {
                    let err = if h.destination.is_some_and(|d| d.starts_with(':'))
                        || h.flags & wire::FLAG_NO_AUTO_START != 0
                    {
                        ERR_NAME_HAS_NO_OWNER
                    } else {
                        ERR_SERVICE_UNKNOWN
                    };
                    self.note("*HIDDEN*");
                    self.refuse(&h, Some(err), None, &mut out);
                }
            }
            Act::Deny => {
                if h.expects_reply() {
                    self.note("*DENIED*");
                    self.refuse(&h, Some(ERR_ACCESS_DENIED), None, &mut out);
                }
            }
            Act::Reply(err, val) => {
                if h.expects_reply() {
                    self.note("*REWRITTEN*");
                    self.refuse(&h, err, val, &mut out);
                }
            }
        }
        if out.forward && is_hello && !self.hello_seen {
            self.hello_seen = true;
            self.initial_name_ops(&mut out);
        }
        Ok(out)
    }

    fn handler_level(&self, h: &Header<'_>) -> Option<Level> {
        match h.member? {
            "RequestName" | "ReleaseName" | "ListQueuedOwners" => Some(Level::Own),
            "StartServiceByName" => Some(Level::Talk),
            _ => Some(Level::See),
        }
    }

    fn arg0_has(&self, h: &Header<'_>, msg: &[u8], need: Level) -> bool {
        h.arg0_str(msg).is_some_and(|n| self.level(n) >= need)
    }

    fn note(&self, what: &str) {
        if self.log {
            println!("{what}");
        }
    }

    /// Decides about one complete message from the bus.
    pub fn from_bus(&mut self, msg: &[u8]) -> Result<FromBus, FilterError> {
        let h = Header::parse(msg)?;
        self.from_bus_parsed(msg, &h)
    }

    /// [`Self::from_bus`] for a message whose header is already parsed.
    pub fn from_bus_parsed(&mut self, msg: &[u8], h: &Header<'_>) -> Result<FromBus, FilterError> {
        let h = h.clone();
        let mut out = FromBus::default();
        if !self.enabled {
            return Ok(out);
        }
        if self.log {
            log_header("B", self.id, &h, "<-");
        }
        if let Some(rs) = h.reply_serial.filter(|_| is_reply(&h)) {
            let is_return = h.msg_type == wire::METHOD_RETURN;
            match self.expected_from_bus.remove(&rs) {
                None => {
                    self.note("*Unexpected reply*");
                    out.verdict = Verdict::Drop;
                    return Ok(out);
                }
                Some(Expect::Normal) => {}
                Some(Expect::Hello) => {
                    if is_return && let Some(id) = h.arg0_str(msg) {
                        self.raise_unique(id, Level::Talk);
                        self.unique_name = Some(id.to_owned());
                    }
                }
                Some(Expect::ListNames) => {
                    if is_return {
                        match h.body_strv(msg) {
                            Some(names) => {
                                let keep: Vec<&str> = names
                                    .into_iter()
                                    .filter(|n| self.level(n) >= Level::See)
                                    .collect();
                                out.verdict =
                                    Verdict::Replace(wire::rewrite_strv_body(msg, &h, &keep));
                            }
                            None => out.verdict = Verdict::Drop,
                        }
                    }
                }
                Some(Expect::FakeFilter) => out.verdict = Verdict::Drop,
                Some(Expect::Rewrite(mut reply)) => {
                    // Our replies are little-endian; take the bus's serial.
                    reply[8..12].copy_from_slice(&h.serial.to_le_bytes());
                    out.verdict = Verdict::Replace(reply);
                }
                Some(Expect::FakeGetNameOwner(name)) => {
                    if is_return && let Some(owner) = h.arg0_str(msg) {
                        self.add_owned(owner, &name);
                    }
                    out.verdict = Verdict::Drop;
                }
                Some(Expect::FakeListNames) => {
                    if is_return && let Some(names) = h.body_strv(msg) {
                        let wanted: Vec<String> = names
                            .into_iter()
                            .filter(|n| !n.starts_with(':') && self.level(n) != Level::None)
                            .map(str::to_owned)
                            .collect();
                        for n in wanted {
                            let m = self.fake_call(
                                "GetNameOwner",
                                Some(&n),
                                Expect::FakeGetNameOwner(n.clone()),
                            );
                            out.to_bus.push(m);
                        }
                    }
                    out.verdict = Verdict::Drop;
                    out.resume_client = true;
                }
            }
        } else if h.msg_type == wire::SIGNAL
            && h.sender == Some(BUS_NAME)
            && h.interface == Some(BUS_NAME)
            && h.member == Some("NameOwnerChanged")
            && self.filter_name_owner_changed(&h, msg)
        {
            out.verdict = Verdict::Drop;
        }
        if out.verdict != Verdict::Drop && h.msg_type == wire::SIGNAL && h.destination.is_none() {
            let mut matched = Vec::new();
            let level = self.level_of(h.sender, &mut matched);
            let ok = level == Level::Own
                || (level == Level::Talk
                    && matched
                        .iter()
                        .any(|r| r.matches(Kind::Broadcast, h.path, h.interface, h.member)));
            if !ok {
                self.note("*FILTERED IN*");
                out.verdict = Verdict::Drop;
            }
        }
        if out.verdict != Verdict::Drop {
            if let Some(s) = h.sender.filter(|s| s.starts_with(':')) {
                self.raise_unique(s, Level::See);
            }
            if h.expects_reply() {
                let sender = h.sender.unwrap_or("").to_owned();
                self.expected_from_client
                    .entry(h.serial)
                    .or_default()
                    .push(sender);
            }
        }
        Ok(out)
    }

    /// Whether a NameOwnerChanged signal must be hidden; also records new
    /// owners of visible names (upstream `should_filter_name_owner_changed`).
    fn filter_name_owner_changed(&mut self, h: &Header<'_>, msg: &[u8]) -> bool {
        let Some([name, _old, new]) = h.args_sss(msg) else {
            return true;
        };
        if self.level(name) >= Level::See || (self.sloppy_names && name.starts_with(':')) {
            if !name.starts_with(':') && !new.is_empty() {
                self.add_owned(new, name);
            }
            return false;
        }
        true
    }
}

fn is_reply(h: &Header<'_>) -> bool {
    h.msg_type == wire::METHOD_RETURN || h.msg_type == wire::ERROR
}

fn log_header(side: &str, id: u64, h: &Header<'_>, arrow: &str) {
    let kind = match h.msg_type {
        wire::METHOD_CALL => "call",
        wire::METHOD_RETURN => "return",
        wire::ERROR => "error",
        _ => "signal",
    };
    println!(
        "{side}{id}:{serial} {arrow} {dest} {kind} {iface}.{member} at {path} reply_serial={rs:?} {err}",
        serial = h.serial,
        dest = h.destination.or(h.sender).unwrap_or("(none)"),
        iface = h.interface.unwrap_or(""),
        member = h.member.unwrap_or(""),
        path = h.path.unwrap_or(""),
        rs = h.reply_serial,
        err = h.error_name.unwrap_or(""),
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> Arc<Policy> {
        let mut p = Policy::default();
        p.add_level("org.example.Talk", Level::Talk).unwrap();
        p.add_level("org.example.Seen", Level::See).unwrap();
        p.add_level("org.example.Wild.*", Level::Talk).unwrap();
        p.add_rule("org.example.B", Kind::Broadcast, "org.example.I.Sig@/o")
            .unwrap();
        Arc::new(p)
    }

    fn bus_call(serial: u32, member: &str, arg: Option<&str>) -> Vec<u8> {
        let args: Vec<Arg<'_>> = arg.map(Arg::Str).into_iter().collect();
        Builder {
            msg_type: wire::METHOD_CALL,
            serial,
            path: Some(BUS_PATH),
            interface: Some(BUS_NAME),
            member: Some(member),
            destination: Some(BUS_NAME),
            args: &args,
            ..Default::default()
        }
        .build()
    }

    fn reply(serial: u32, reply_serial: u32, sender: &str, arg: Option<&str>) -> Vec<u8> {
        let args: Vec<Arg<'_>> = arg.map(Arg::Str).into_iter().collect();
        Builder {
            msg_type: wire::METHOD_RETURN,
            serial,
            reply_serial: Some(reply_serial),
            sender: Some(sender),
            destination: Some(":1.9"),
            args: &args,
            ..Default::default()
        }
        .build()
    }

    fn signal(sender: &str, path: &str, member: &str, args: &[Arg<'_>]) -> Vec<u8> {
        Builder {
            msg_type: wire::SIGNAL,
            serial: 50,
            path: Some(path),
            interface: Some(if sender == BUS_NAME {
                BUS_NAME
            } else {
                "org.example.I"
            }),
            member: Some(member),
            sender: Some(sender),
            args,
            ..Default::default()
        }
        .build()
    }

    /// Hello, then the proxy's own AddMatch/GetNameOwner/ListNames calls;
    /// their replies teach it the owners and never reach the client.
    fn hello(f: &mut ClientFilter) -> Vec<Vec<u8>> {
        let d = f.from_client(&bus_call(1, "Hello", None)).unwrap();
        assert!(d.forward);
        assert!(d.pause_client, "wildcard rules pause the client");
        let b = f.from_bus(&reply(1, 1, BUS_NAME, Some(":1.9"))).unwrap();
        assert_eq!(b.verdict, Verdict::Forward);
        d.to_bus
    }

    #[test]
    fn hello_and_owner_tracking() {
        let mut f = ClientFilter::new(policy(), true, false, 1);
        let fakes = hello(&mut f);
        // Answer the fake GetNameOwner for org.example.Talk.
        let mut owner_serial = None;
        for m in &fakes {
            let h = Header::parse(m).unwrap();
            assert!(h.serial > MAX_CLIENT_SERIAL);
            if h.member == Some("GetNameOwner") && h.arg0_str(m) == Some("org.example.Talk") {
                owner_serial = Some(h.serial);
            }
        }
        let b = f
            .from_bus(&reply(2, owner_serial.unwrap(), BUS_NAME, Some(":1.3")))
            .unwrap();
        assert_eq!(b.verdict, Verdict::Drop, "fake replies are not forwarded");
        assert_eq!(f.level(":1.3"), Level::Talk);
        assert_eq!(f.level(":1.9"), Level::Talk, "own unique name");
        assert_eq!(f.level(":1.4"), Level::None);
        // A NameOwnerChanged for a hidden name is dropped; for a wildcard
        // name it passes and records the owner.
        let noc = |name: &str, new: &str| {
            signal(
                BUS_NAME,
                BUS_PATH,
                "NameOwnerChanged",
                &[Arg::Str(name), Arg::Str(""), Arg::Str(new)],
            )
        };
        let b = f.from_bus(&noc("org.example.Hidden", ":1.5")).unwrap();
        assert_eq!(b.verdict, Verdict::Drop);
        assert_eq!(f.level(":1.5"), Level::None);
        let b = f.from_bus(&noc("org.example.Wild.X", ":1.6")).unwrap();
        assert_eq!(b.verdict, Verdict::Forward);
        assert_eq!(f.level(":1.6"), Level::Talk);
    }

    #[test]
    fn replies_only_for_calls_let_through() {
        let mut f = ClientFilter::new(policy(), true, false, 1);
        hello(&mut f);
        // Spoofed: no call with serial 77 was made.
        let b = f.from_bus(&reply(3, 77, ":1.3", Some("x"))).unwrap();
        assert_eq!(b.verdict, Verdict::Drop);
        // A denied call's reply never comes from the bus either.
        let call = Builder {
            msg_type: wire::METHOD_CALL,
            serial: 5,
            path: Some("/"),
            member: Some("M"),
            destination: Some("org.example.Seen"),
            ..Default::default()
        }
        .build();
        let d = f.from_client(&call).unwrap();
        assert!(!d.forward);
        let ping = Header::parse(&d.to_bus[0]).unwrap().clone();
        assert_eq!((ping.member, ping.serial), (Some("Ping"), 5));
        // The Ping's reply becomes the made-up error, with the bus's serial.
        let b = f.from_bus(&reply(4, 5, BUS_NAME, None)).unwrap();
        let Verdict::Replace(r) = b.verdict else {
            panic!("not rewritten")
        };
        let h = Header::parse(&r).unwrap();
        assert_eq!(h.error_name, Some(ERR_ACCESS_DENIED));
        assert_eq!((h.reply_serial, h.serial), (Some(5), 4));
        assert_eq!(
            f.from_bus(&reply(5, 5, ":1.3", None)).unwrap().verdict,
            Verdict::Drop,
            "only once"
        );
        // The client may only reply to calls it received.
        let client_reply = |rs: u32| {
            Builder {
                msg_type: wire::METHOD_RETURN,
                serial: 9,
                reply_serial: Some(rs),
                destination: Some(":1.3"),
                ..Default::default()
            }
            .build()
        };
        assert!(!f.from_client(&client_reply(40)).unwrap().forward);
        let incoming = Builder {
            msg_type: wire::METHOD_CALL,
            serial: 40,
            path: Some("/"),
            member: Some("Q"),
            sender: Some(":1.3"),
            destination: Some(":1.9"),
            ..Default::default()
        }
        .build();
        assert_eq!(f.from_bus(&incoming).unwrap().verdict, Verdict::Forward);
        assert!(f.from_client(&client_reply(40)).unwrap().forward);
        assert!(
            !f.from_client(&client_reply(40)).unwrap().forward,
            "only once"
        );
    }

    #[test]
    fn broadcast_rules() {
        let mut f = ClientFilter::new(policy(), true, false, 1);
        let fakes = hello(&mut f);
        let gno = fakes
            .iter()
            .map(|m| (Header::parse(m).unwrap().serial, m))
            .find(|(_, m)| Header::parse(m).unwrap().arg0_str(m) == Some("org.example.B"))
            .unwrap()
            .0;
        f.from_bus(&reply(2, gno, BUS_NAME, Some(":1.20"))).unwrap();
        let ok = signal(":1.20", "/o", "Sig", &[]);
        assert_eq!(f.from_bus(&ok).unwrap().verdict, Verdict::Forward);
        let wrong_path = signal(":1.20", "/p", "Sig", &[]);
        assert_eq!(f.from_bus(&wrong_path).unwrap().verdict, Verdict::Drop);
        let stranger = signal(":1.21", "/o", "Sig", &[]);
        assert_eq!(f.from_bus(&stranger).unwrap().verdict, Verdict::Drop);
    }

    /// AddMatch/RemoveMatch: the rule is read with dbus-daemon's grammar;
    /// the refusal is the Ping trick with the bus's error name.
    #[test]
    fn match_rules_read_as_the_bus_reads_them() {
        let mut f = ClientFilter::new(policy(), true, false, 1);
        hello(&mut f);
        let mut serial = 10;
        let mut answer = |f: &mut ClientFilter, member: &str, rule: Option<&str>| {
            serial += 1;
            let d = f.from_client(&bus_call(serial, member, rule)).unwrap();
            if d.forward {
                return None;
            }
            let b = f
                .from_bus(&reply(100 + serial, serial, BUS_NAME, None))
                .unwrap();
            let Verdict::Replace(r) = b.verdict else {
                panic!("{member} {rule:?} neither forwarded nor answered")
            };
            Some(Header::parse(&r).unwrap().error_name.unwrap().to_owned())
        };
        let denied = Some(ERR_ACCESS_DENIED.to_owned());
        let invalid = Some(match_rule::ERR_MATCH_RULE_INVALID.to_owned());
        for rule in ["eavesdrop ='true'", "type='signal',eavesdrop=tr'u'e"] {
            assert_eq!(answer(&mut f, "AddMatch", Some(rule)), denied, "{rule}");
            assert_eq!(answer(&mut f, "RemoveMatch", Some(rule)), None, "{rule}");
        }
        for rule in [
            "eavesdrop='false'",
            "type='signal'",
            "type='signal',=,eavesdrop=true",
        ] {
            assert_eq!(answer(&mut f, "AddMatch", Some(rule)), None, "{rule}");
        }
        for rule in [
            "eavesdrop= true",
            "type='signal',,eavesdrop=true",
            "type='sig",
        ] {
            assert_eq!(answer(&mut f, "AddMatch", Some(rule)), invalid, "{rule}");
            assert_eq!(answer(&mut f, "RemoveMatch", Some(rule)), invalid, "{rule}");
        }
        let long = format!("arg0='{}'", "z".repeat(2000));
        assert_eq!(
            answer(&mut f, "AddMatch", Some(&long)),
            Some(match_rule::ERR_LIMITS_EXCEEDED.to_owned())
        );
        assert_eq!(
            answer(&mut f, "AddMatch", None),
            Some(ERR_INVALID_ARGS.to_owned()),
            "no rule at all is not passed unread"
        );
    }

    #[test]
    fn client_serials_in_the_proxy_range_are_refused() {
        let mut f = ClientFilter::new(policy(), true, false, 1);
        assert!(matches!(
            f.from_client(&bus_call(MAX_CLIENT_SERIAL + 1, "GetId", None)),
            Err(FilterError::Serial(_))
        ));
    }

    #[test]
    fn call_with_reply_serial_is_still_a_call() {
        let mut f = ClientFilter::new(policy(), true, false, 1);
        hello(&mut f);
        let incoming = Builder {
            msg_type: wire::METHOD_CALL,
            serial: 40,
            path: Some("/"),
            member: Some("Q"),
            sender: Some(":1.30"),
            destination: Some(":1.9"),
            ..Default::default()
        }
        .build();
        f.from_bus(&incoming).unwrap();
        // :1.30 is now visible (SEE) but not talkable: a call to it that
        // smuggles a REPLY_SERIAL must still be denied.
        let smuggled = Builder {
            msg_type: wire::METHOD_CALL,
            serial: 41,
            path: Some("/"),
            member: Some("Evil"),
            reply_serial: Some(40),
            destination: Some(":1.30"),
            ..Default::default()
        }
        .build();
        let d = f.from_client(&smuggled).unwrap();
        assert!(!d.forward);
    }
}
