//! A Flatpak permission context (`[Context]`, `[Session Bus Policy]`,
//! `[System Bus Policy]`, `[Environment]`, `[Policy X]`) with Flatpak's own
//! semantics (flatpak-context.c): each layer (runtime metadata, app
//! metadata, overrides, command line) is read on its own and merged over
//! the ones before it. Flags carry a "valid" mask so that a later `!network`
//! takes away what an earlier layer gave; filesystems, bus names and
//! variables are maps where the later layer's entry wins (`!PATH`, `none`,
//! `unset-environment` remove).
//!
//! [`Context::save`] writes the merged context the way `flatpak run` writes
//! it into `/.flatpak-info` (flattened: only what is granted). What the
//! sandbox then provides is computed by [`super::grants`].

use porthole_identity::KeyFile;

/// Flag names, in Flatpak's enum order (the bit is the index).
pub const SHARES: &[&str] = &["network", "ipc"];
pub const SOCKETS: &[&str] = &[
    "x11",
    "wayland",
    "pulseaudio",
    "session-bus",
    "system-bus",
    "fallback-x11",
    "ssh-auth",
    "pcsc",
    "cups",
    "gpg-agent",
];
pub const DEVICES: &[&str] = &["dri", "all", "kvm", "shm"];
pub const FEATURES: &[&str] = &[
    "devel",
    "multiarch",
    "bluetooth",
    "canbus",
    "per-app-dev-shm",
];
/// Filesystem names that are not paths.
pub const SPECIAL_FILESYSTEMS: &[&str] = &["home", "host", "host-etc", "host-os", "host-reset"];
const XDG_PREFIXES: &[&str] = &[
    "xdg-desktop",
    "xdg-documents",
    "xdg-download",
    "xdg-music",
    "xdg-pictures",
    "xdg-public-share",
    "xdg-templates",
    "xdg-videos",
    "xdg-run",
    "xdg-config",
    "xdg-cache",
    "xdg-data",
];

/// Access to a filesystem entry; the order is Flatpak's (`MAX` of two modes
/// is the wider one).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum FsMode {
    None,
    ReadOnly,
    ReadWrite,
    Create,
}

/// A bus-name policy, in Flatpak's order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Policy {
    None,
    See,
    Talk,
    Own,
}

impl Policy {
    fn parse(s: &str) -> Option<Policy> {
        Some(match s {
            "none" => Policy::None,
            "see" => Policy::See,
            "talk" => Policy::Talk,
            "own" => Policy::Own,
            _ => return None,
        })
    }

    pub fn name(self) -> &'static str {
        match self {
            Policy::None => "none",
            Policy::See => "see",
            Policy::Talk => "talk",
            Policy::Own => "own",
        }
    }
}

/// A set of named flags with the mask of those this layer decides.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Flags {
    pub set: u32,
    pub valid: u32,
}

impl Flags {
    fn apply(&mut self, bit: u32, on: bool) {
        if on {
            self.set |= bit;
        } else {
            self.set &= !bit;
        }
        self.valid |= bit;
    }

    fn merge(&mut self, other: Flags) {
        self.set &= !other.valid;
        self.set |= other.set;
        self.valid |= other.valid;
    }

    pub fn has(&self, names: &[&str], name: &str) -> bool {
        names
            .iter()
            .position(|n| *n == name)
            .is_some_and(|i| self.set & (1 << i) != 0)
    }

    /// The granted names, in Flatpak's order.
    pub fn names(&self, names: &'static [&'static str]) -> Vec<&'static str> {
        names
            .iter()
            .enumerate()
            .filter(|(i, _)| self.set & self.valid & (1 << i) != 0)
            .map(|(_, n)| *n)
            .collect()
    }
}

/// An ordered map where setting a key again replaces its value in place
/// (Flatpak's hash tables, with a stable order for us).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Map<V>(pub Vec<(String, V)>);

impl<V> Default for Map<V> {
    fn default() -> Self {
        Map(Vec::new())
    }
}

impl<V: Clone> Map<V> {
    pub fn insert(&mut self, k: &str, v: V) {
        match self.0.iter_mut().find(|(key, _)| key == k) {
            Some(slot) => slot.1 = v,
            None => self.0.push((k.to_owned(), v)),
        }
    }

    pub fn get(&self, k: &str) -> Option<&V> {
        self.0.iter().find(|(key, _)| key == k).map(|(_, v)| v)
    }

    pub fn iter(&self) -> impl Iterator<Item = (&str, &V)> {
        self.0.iter().map(|(k, v)| (k.as_str(), v))
    }
}

/// One layer, or the merge of several.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Context {
    pub shares: Flags,
    pub sockets: Flags,
    pub devices: Flags,
    pub features: Flags,
    pub filesystems: Map<FsMode>,
    pub persistent: Vec<String>,
    pub session_bus: Map<Policy>,
    pub system_bus: Map<Policy>,
    /// `None`: unset (`unset-environment`).
    pub env: Map<Option<String>>,
    /// `[Policy SUBSYSTEM]` keys as `SUBSYSTEM.KEY` with their values.
    pub generic_policy: Map<Vec<String>>,
}

/// A context that cannot be read: the metadata (or override) is damaged.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ContextError(pub String);

fn negated(s: &str) -> (&str, bool) {
    match s.strip_prefix('!') {
        Some(rest) => (rest, true),
        None => (s, false),
    }
}

fn flag_list(
    kf: &KeyFile,
    key: &str,
    names: &[&str],
    flags: &mut Flags,
) -> Result<(), ContextError> {
    if kf.get_raw("Context", key).is_none() {
        return Ok(());
    }
    let items = kf
        .get_list("Context", key)
        .ok_or_else(|| ContextError(format!("[Context] {key}: invalid escape in the list")))?;
    for item in items {
        let (name, remove) = negated(&item);
        match names.iter().position(|n| *n == name) {
            // Unknown names are skipped, as Flatpak skips them (newer
            // metadata on an older reader).
            None => tracing::debug!(key, name, "unknown name in metadata; ignored"),
            Some(i) => flags.apply(1 << i, !remove),
        }
    }
    Ok(())
}

/// A D-Bus name as Flatpak's `flatpak_verify_dbus_name`: a well-known
/// name, optionally ending in `.*`.
pub fn valid_bus_name(name: &str) -> bool {
    let base = name.strip_suffix(".*").unwrap_or(name);
    if base.is_empty() || base.len() > 255 || base.starts_with(':') {
        return false;
    }
    let elements: Vec<&str> = base.split('.').collect();
    elements.len() >= 2
        && elements.iter().all(|e| {
            !e.is_empty()
                && !e.starts_with(|c: char| c.is_ascii_digit())
                && e.chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
        })
}

/// `parse_filesystem_flags` + `flatpak_context_parse_filesystem`: the
/// location and its mode, or None when Flatpak would skip the entry.
pub fn parse_filesystem(item: &str, remove: bool) -> Option<(String, FsMode)> {
    let mut loc = String::new();
    let mut chars = item.chars();
    let mut suffix = None;
    while let Some(c) = chars.next() {
        match c {
            '\\' => {
                if let Some(n) = chars.next() {
                    loc.push(n);
                }
            }
            ':' => {
                suffix = Some(chars.as_str().to_owned());
                break;
            }
            c => loc.push(c),
        }
    }
    let mut mode = if remove {
        FsMode::None
    } else {
        FsMode::ReadWrite
    };
    if loc == "host-reset" && (!remove || suffix.is_some()) {
        return None;
    }
    if let Some(s) = suffix.as_deref() {
        match s {
            "ro" if !remove => mode = FsMode::ReadOnly,
            "rw" if !remove => mode = FsMode::ReadWrite,
            "create" if !remove => mode = FsMode::Create,
            "reset" => {
                if !remove || loc != "host" {
                    return None;
                }
                loc.push_str("-reset");
            }
            _ => {}
        }
    }
    if let Some(slash) = loc.find('/') {
        let rest = &loc[slash + 1..];
        if rest.starts_with("../") || rest.ends_with("/..") || rest.contains("/../") || rest == ".."
        {
            return None;
        }
        // "//" and "/./" become "/"; a trailing "/" or "/." goes.
        let mut out = String::with_capacity(loc.len());
        for (i, part) in loc.split('/').enumerate() {
            if i > 0 && (part.is_empty() || part == ".") {
                continue;
            }
            if i > 0 {
                out.push('/');
            }
            out.push_str(part);
        }
        if out.is_empty() && loc.starts_with('/') {
            out.push('/');
        }
        loc = out;
        if loc == "/" {
            return None;
        }
    }
    let xdg = XDG_PREFIXES
        .iter()
        .any(|p| loc == *p || loc.strip_prefix(p).is_some_and(|r| r.starts_with('/')));
    if SPECIAL_FILESYSTEMS.contains(&loc.as_str())
        || xdg
        || loc.starts_with("~/")
        || loc.starts_with('/')
    {
        return Some((loc, mode));
    }
    if loc == "~" {
        return Some(("home".into(), mode));
    }
    if let Some(rest) = loc.strip_prefix("home/") {
        return Some((format!("~/{rest}"), mode));
    }
    None
}

impl Context {
    /// Reads one layer from a metadata or override key file
    /// (`flatpak_context_load_metadata`).
    pub fn load(kf: &KeyFile) -> Result<Context, ContextError> {
        let mut c = Context::default();
        flag_list(kf, "shared", SHARES, &mut c.shares)?;
        flag_list(kf, "sockets", SOCKETS, &mut c.sockets)?;
        flag_list(kf, "devices", DEVICES, &mut c.devices)?;
        flag_list(kf, "features", FEATURES, &mut c.features)?;
        if kf.get_raw("Context", "filesystems").is_some() {
            let items = kf.get_list("Context", "filesystems").ok_or_else(|| {
                ContextError("[Context] filesystems: invalid escape in the list".into())
            })?;
            for item in items {
                if item.chars().any(|ch| ch.is_control()) {
                    return Err(ContextError(format!(
                        "[Context] filesystems: {item:?} holds a control character"
                    )));
                }
                let (rest, remove) = negated(&item);
                match parse_filesystem(rest, remove) {
                    Some((loc, mode)) => {
                        if loc == "host-reset" {
                            c.filesystems.insert("host", mode);
                        }
                        c.filesystems.insert(&loc, mode);
                    }
                    None => tracing::debug!(item, "unknown filesystem location; ignored"),
                }
            }
        }
        if kf.get_raw("Context", "persistent").is_some() {
            let items = kf.get_list("Context", "persistent").ok_or_else(|| {
                ContextError("[Context] persistent: invalid escape in the list".into())
            })?;
            for p in items {
                let ok = !p.is_empty()
                    && !p.starts_with('/')
                    && p.split('/').all(|s| s != ".." && s != ".");
                if !ok {
                    return Err(ContextError(format!(
                        "[Context] persistent: {p:?} must be a relative path without . or .."
                    )));
                }
                if !c.persistent.contains(&p) {
                    c.persistent.push(p);
                }
            }
        }
        for (group, map) in [
            ("Session Bus Policy", &mut c.session_bus),
            ("System Bus Policy", &mut c.system_bus),
        ] {
            for key in kf.keys(group) {
                if !valid_bus_name(key) {
                    return Err(ContextError(format!(
                        "[{group}] {key:?} is not a valid D-Bus name"
                    )));
                }
                if let Some(p) = kf.get(group, key).as_deref().and_then(Policy::parse) {
                    map.insert(key, p);
                }
            }
        }
        for key in kf.keys("Environment") {
            let v = kf.get("Environment", key).ok_or_else(|| {
                ContextError(format!("[Environment] {key}: invalid escape in the value"))
            })?;
            c.env.insert(key, Some(v));
        }
        if kf.get_raw("Context", "unset-environment").is_some() {
            let items = kf.get_list("Context", "unset-environment").ok_or_else(|| {
                ContextError("[Context] unset-environment: invalid escape in the list".into())
            })?;
            for k in items {
                c.env.insert(&k, None);
            }
        }
        for group in kf.groups() {
            if let Some(sub) = group.strip_prefix("Policy ") {
                for key in kf.keys(group) {
                    let values = kf.get_list(group, key).unwrap_or_default();
                    c.generic_policy.insert(&format!("{sub}.{key}"), values);
                }
            }
        }
        Ok(c)
    }

    /// `other` over `self` (`flatpak_context_merge`).
    pub fn merge(&mut self, other: &Context) {
        self.shares.merge(other.shares);
        self.sockets.merge(other.sockets);
        self.devices.merge(other.devices);
        self.features.merge(other.features);
        for (k, v) in other.env.iter() {
            self.env.insert(k, v.clone());
        }
        for p in &other.persistent {
            if !self.persistent.contains(p) {
                self.persistent.push(p.clone());
            }
        }
        if other.filesystems.get("host-reset").is_some() {
            self.filesystems.0.clear();
        }
        for (k, v) in other.filesystems.iter() {
            self.filesystems.insert(k, *v);
        }
        for (k, v) in other.session_bus.iter() {
            self.session_bus.insert(k, *v);
        }
        for (k, v) in other.system_bus.iter() {
            self.system_bus.insert(k, *v);
        }
        for (k, v) in other.generic_policy.iter() {
            self.generic_policy.insert(k, v.clone());
        }
    }

    /// Writes the context as `flatpak run` writes it into `/.flatpak-info`
    /// (`flatpak_context_save_metadata` flattened): granted flags, the
    /// filesystems that are not removed, persistent, the bus policies that
    /// are not `none`, the environment (an unset variable as an empty value
    /// plus `unset-environment`).
    pub fn save(&self, kf: &mut KeyFile) {
        for (key, flags, names) in [
            ("shared", self.shares, SHARES),
            ("sockets", self.sockets, SOCKETS),
            ("devices", self.devices, DEVICES),
            ("features", self.features, FEATURES),
        ] {
            let n = flags.names(names);
            if !n.is_empty() {
                kf.set_list("Context", key, &n);
            }
        }
        let fs: Vec<String> = self
            .filesystems
            .iter()
            .filter(|(k, m)| **m != FsMode::None && *k != "host-reset")
            .map(|(k, m)| {
                let escaped = k.replace('\\', "\\\\").replace(':', "\\:");
                match m {
                    FsMode::ReadOnly => format!("{escaped}:ro"),
                    FsMode::Create => format!("{escaped}:create"),
                    _ => escaped,
                }
            })
            .collect();
        if !self.filesystems.0.is_empty() {
            kf.set_list("Context", "filesystems", &fs);
        }
        if !self.persistent.is_empty() {
            kf.set_list("Context", "persistent", &self.persistent);
        }
        for (group, map) in [
            ("Session Bus Policy", &self.session_bus),
            ("System Bus Policy", &self.system_bus),
        ] {
            for (k, p) in map.iter() {
                if *p != Policy::None {
                    kf.set(group, k, p.name());
                }
            }
        }
        let mut unset = Vec::new();
        for (k, v) in self.env.iter() {
            match v {
                Some(v) => kf.set("Environment", k, v),
                None => {
                    kf.set("Environment", k, "");
                    unset.push(k.to_owned());
                }
            }
        }
        if !unset.is_empty() {
            kf.set_list("Context", "unset-environment", &unset);
        }
    }

    /// The policy of `name` on the session bus (for tests and messages).
    pub fn session_policy(&self, name: &str) -> Option<Policy> {
        self.session_bus.get(name).copied()
    }

    /// Adds `name`'s flag as granted (a command-line layer).
    pub fn grant(flags: &mut Flags, names: &[&str], name: &str) {
        if let Some(i) = names.iter().position(|n| *n == name) {
            flags.apply(1 << i, true);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ctx(text: &str) -> Context {
        Context::load(&KeyFile::parse(text).unwrap()).unwrap()
    }

    #[test]
    fn layers_merge_as_flatpak_merges_them() {
        let mut c = ctx(
            "[Context]\nshared=network;ipc;\nsockets=x11;wayland;\nfilesystems=home;/srv/a:ro;xdg-documents;\n\n[Session Bus Policy]\norg.a.B=talk\norg.c.D=own\n\n[Environment]\nA=1\nB=2\n",
        );
        let o = ctx(
            "[Context]\nshared=!network;\nsockets=!x11;pulseaudio;\nfilesystems=!home;/srv/a;\nunset-environment=B;\n\n[Session Bus Policy]\norg.a.B=none\n",
        );
        c.merge(&o);
        assert_eq!(c.shares.names(SHARES), ["ipc"]);
        assert_eq!(c.sockets.names(SOCKETS), ["wayland", "pulseaudio"]);
        assert_eq!(c.filesystems.get("home"), Some(&FsMode::None));
        assert_eq!(c.filesystems.get("/srv/a"), Some(&FsMode::ReadWrite));
        assert_eq!(c.session_policy("org.a.B"), Some(Policy::None));
        assert_eq!(c.env.get("B"), Some(&None));
        let mut kf = KeyFile::new();
        c.save(&mut kf);
        assert_eq!(
            kf.get_list("Context", "filesystems").unwrap(),
            ["/srv/a", "xdg-documents"]
        );
        assert_eq!(kf.get("Session Bus Policy", "org.a.B"), None);
        assert_eq!(
            kf.get("Session Bus Policy", "org.c.D").as_deref(),
            Some("own")
        );
        assert_eq!(kf.get_list("Context", "unset-environment").unwrap(), ["B"]);
        assert_eq!(kf.get_list("Context", "shared").unwrap(), ["ipc"]);
    }

    #[test]
    fn filesystem_syntax() {
        assert_eq!(
            parse_filesystem("/srv//x/./y/", false),
            Some(("/srv/x/y".into(), FsMode::ReadWrite))
        );
        assert_eq!(
            parse_filesystem("~/Music:ro", false),
            Some(("~/Music".into(), FsMode::ReadOnly))
        );
        assert_eq!(
            parse_filesystem("xdg-download/sub:create", false),
            Some(("xdg-download/sub".into(), FsMode::Create))
        );
        assert_eq!(
            parse_filesystem("~", false),
            Some(("home".into(), FsMode::ReadWrite))
        );
        assert_eq!(parse_filesystem("/srv/../etc", false), None);
        assert_eq!(parse_filesystem("/", false), None);
        assert_eq!(parse_filesystem("nonsense", false), None);
        assert_eq!(
            parse_filesystem("host:reset", true),
            Some(("host-reset".into(), FsMode::None))
        );
        assert_eq!(parse_filesystem("host:reset", false), None);
        assert_eq!(
            parse_filesystem("/a\\:b:ro", false),
            Some(("/a:b".into(), FsMode::ReadOnly))
        );
    }

    #[test]
    fn damaged_layers_are_errors() {
        let bad = |t: &str| Context::load(&KeyFile::parse(t).unwrap()).is_err();
        assert!(bad("[Session Bus Policy]\nnot a name=talk\n"));
        assert!(bad("[Context]\npersistent=../x;\n"));
        assert!(bad("[Context]\nsockets=a\\qb;\n"));
        assert!(!bad("[Context]\nsockets=future-socket;\n"));
    }
}
