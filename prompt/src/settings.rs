//! `org.freedesktop.impl.portal.Settings`: the appearance settings every
//! GTK 4, libadwaita and Qt app reads at start-up, from a key file.
//!
//! ```text
//! [org.freedesktop.appearance]
//! color-scheme=prefer-dark      # no-preference | prefer-dark | prefer-light | 0 | 1 | 2
//! contrast=high                 # no-preference | high | 0 | 1
//! accent-color=0.2,0.4,0.8      # r,g,b in [0,1]; left out: unset
//! reduced-motion=reduce         # no-preference | reduce | 0 | 1; left out: not served
//! ```
//!
//! Without a file the backend serves `color-scheme` and `contrast` as 0
//! (no preference). SIGUSR1 re-reads the file and emits `SettingChanged`
//! for each key whose value changed.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use porthole_identity::KeyFile;
use porthole_service::PortalError;
use zbus::object_server::SignalEmitter;
use zvariant::{OwnedValue, Value};

pub const APPEARANCE: &str = "org.freedesktop.appearance";

/// One setting's value.
#[derive(Debug, Clone, PartialEq)]
pub enum Setting {
    U32(u32),
    Color(f64, f64, f64),
}

impl Setting {
    pub fn to_value(&self) -> OwnedValue {
        match self {
            Setting::U32(n) => OwnedValue::from(*n),
            Setting::Color(r, g, b) => OwnedValue::try_from(Value::from((*r, *g, *b)))
                .expect("a structure of doubles holds no fd"),
        }
    }
}

/// Namespace -> key -> value.
pub type Table = BTreeMap<String, BTreeMap<String, Setting>>;

#[derive(Debug, thiserror::Error)]
pub enum SettingsError {
    #[error("reading {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Invalid { path: PathBuf, message: String },
}

/// The settings served without a file.
pub fn defaults() -> Table {
    let mut appearance = BTreeMap::new();
    appearance.insert("color-scheme".to_owned(), Setting::U32(0));
    appearance.insert("contrast".to_owned(), Setting::U32(0));
    Table::from([(APPEARANCE.to_owned(), appearance)])
}

/// Reads the settings file.
pub fn load(path: &Path) -> Result<Table, SettingsError> {
    let text = std::fs::read_to_string(path).map_err(|source| SettingsError::Read {
        path: path.to_owned(),
        source,
    })?;
    parse(&text).map_err(|message| SettingsError::Invalid {
        path: path.to_owned(),
        message,
    })
}

fn parse(text: &str) -> Result<Table, String> {
    let kf = KeyFile::parse(text).map_err(|e| e.to_string())?;
    let mut table = defaults();
    let appearance = table.entry(APPEARANCE.to_owned()).or_default();
    for key in kf.keys(APPEARANCE) {
        let raw = kf.get(APPEARANCE, key).unwrap_or_default();
        let raw = raw.trim();
        let named = |names: &[&str]| -> Result<Setting, String> {
            names
                .iter()
                .position(|n| *n == raw)
                .map(|i| i as u32)
                .or_else(|| {
                    raw.parse::<u32>()
                        .ok()
                        .filter(|n| (*n as usize) < names.len())
                })
                .map(Setting::U32)
                .ok_or_else(|| format!("{key}={raw}: expected one of {}", names.join(", ")))
        };
        let value = match key {
            "color-scheme" => named(&["no-preference", "prefer-dark", "prefer-light"])?,
            "contrast" => named(&["no-preference", "high"])?,
            "reduced-motion" => named(&["no-preference", "reduce"])?,
            "accent-color" => {
                let parts: Vec<f64> = raw
                    .split(',')
                    .map(|p| p.trim().parse::<f64>())
                    .collect::<Result<_, _>>()
                    .map_err(|e| format!("accent-color={raw}: {e}"))?;
                match parts[..] {
                    [r, g, b] => Setting::Color(r, g, b),
                    _ => return Err(format!("accent-color={raw}: expected r,g,b")),
                }
            }
            other => return Err(format!("unknown key {other} in [{APPEARANCE}]")),
        };
        appearance.insert(key.to_owned(), value);
    }
    Ok(table)
}

/// Upstream's namespace patterns: an empty list or an empty pattern match
/// everything; `prefix*` matches by prefix; otherwise exact.
pub fn namespace_matches(namespace: &str, patterns: &[String]) -> bool {
    patterns.is_empty()
        || patterns.iter().any(|p| {
            p.is_empty()
                || p == namespace
                || p.strip_suffix('*')
                    .is_some_and(|prefix| namespace.starts_with(prefix))
        })
}

/// The interface, with the file it re-reads.
pub struct Settings {
    file: Option<PathBuf>,
    table: Mutex<Table>,
}

impl Settings {
    pub fn new(file: Option<PathBuf>) -> Result<Self, SettingsError> {
        let table = match &file {
            Some(path) => load(path)?,
            None => defaults(),
        };
        Ok(Self {
            file,
            table: Mutex::new(table),
        })
    }

    /// Re-reads the file; returns the (namespace, key, value) that changed.
    /// A file that no longer parses keeps the old settings.
    pub fn reload(&self) -> Vec<(String, String, Setting)> {
        let Some(path) = &self.file else {
            return Vec::new();
        };
        let new = match load(path) {
            Ok(t) => t,
            Err(e) => {
                tracing::warn!("keeping the old settings: {e}");
                return Vec::new();
            }
        };
        let mut table = self.table.lock().expect("settings lock");
        let mut changed = Vec::new();
        for (ns, keys) in &new {
            for (key, value) in keys {
                if table.get(ns).and_then(|k| k.get(key)) != Some(value) {
                    changed.push((ns.clone(), key.clone(), value.clone()));
                }
            }
        }
        *table = new;
        changed
    }
}

#[zbus::interface(name = "org.freedesktop.impl.portal.Settings")]
impl Settings {
    fn read_all(&self, namespaces: Vec<String>) -> HashMap<String, HashMap<String, OwnedValue>> {
        let table = self.table.lock().expect("settings lock");
        table
            .iter()
            .filter(|(ns, _)| namespace_matches(ns, &namespaces))
            .map(|(ns, keys)| {
                let values = keys
                    .iter()
                    .map(|(k, v)| (k.clone(), v.to_value()))
                    .collect();
                (ns.clone(), values)
            })
            .collect()
    }

    fn read(&self, namespace: &str, key: &str) -> Result<OwnedValue, PortalError> {
        let table = self.table.lock().expect("settings lock");
        table
            .get(namespace)
            .and_then(|keys| keys.get(key))
            .map(Setting::to_value)
            .ok_or_else(|| PortalError::NotFound("Requested setting not found".into()))
    }

    #[zbus(signal)]
    pub async fn setting_changed(
        emitter: &SignalEmitter<'_>,
        namespace: &str,
        key: &str,
        value: Value<'_>,
    ) -> zbus::Result<()>;

    #[zbus(property(emits_changed_signal = "const"), name = "version")]
    fn version(&self) -> u32 {
        1
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_file_names_values_as_the_spec_numbers_them() {
        let t = parse(
            "[org.freedesktop.appearance]\ncolor-scheme=prefer-dark\ncontrast=1\naccent-color=0.2, 0.4,0.8\n",
        )
        .unwrap();
        let a = &t[APPEARANCE];
        assert_eq!(a["color-scheme"], Setting::U32(1));
        assert_eq!(a["contrast"], Setting::U32(1));
        assert_eq!(a["accent-color"], Setting::Color(0.2, 0.4, 0.8));
        assert!(!a.contains_key("reduced-motion"));
        assert_eq!(parse("").unwrap(), defaults());
        for bad in [
            "[org.freedesktop.appearance]\ncolor-scheme=purple\n",
            "[org.freedesktop.appearance]\ncolor-scheme=3\n",
            "[org.freedesktop.appearance]\naccent-color=1,2\n",
            "[org.freedesktop.appearance]\nfont=Sans\n",
        ] {
            assert!(parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn namespace_patterns_as_upstream() {
        let p = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert!(namespace_matches(APPEARANCE, &p(&[])));
        assert!(namespace_matches(APPEARANCE, &p(&[""])));
        assert!(namespace_matches(APPEARANCE, &p(&["org.freedesktop.*"])));
        assert!(namespace_matches(
            APPEARANCE,
            &p(&["org.gnome.x", APPEARANCE])
        ));
        assert!(!namespace_matches(APPEARANCE, &p(&["org.gnome.*"])));
        assert!(!namespace_matches(APPEARANCE, &p(&["org.freedesktop"])));
    }
}
