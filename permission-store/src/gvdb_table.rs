//! One table in xdg-permission-store's on-disk format: a GLib GVDB file
//! (`$XDG_DATA_HOME/flatpak/db/TABLE`) whose root holds two hash tables,
//! as upstream's `permission-db.c` writes them:
//!
//! - `main`: id -> `(va{sas})`, the id's data value and its apps'
//!   permissions, apps sorted by `strcmp`;
//! - `apps`: app -> `as`, the sorted ids on which the app has a grant (a
//!   reverse index upstream keeps; it carries nothing `main` does not).
//!
//! Parsing never panics on bad bytes: a file that is not GVDB, lacks a
//! table or holds a value of another type is a [`GvdbError`] naming it.

use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet};

use zvariant::{Dict, StructureBuilder, Value};

use crate::data::Data;
use crate::model::{Entry, Grant};

#[derive(Debug, thiserror::Error)]
pub enum GvdbError {
    #[error("not a GVDB file: {0}")]
    Format(String),
    #[error("no `{0}` table in the file")]
    MissingTable(&'static str),
    #[error("id {id:?}: {reason}")]
    BadEntry { id: String, reason: String },
    #[error("writing GVDB: {0}")]
    Write(String),
}

/// Reads every id of one table file. Grants in upstream's files never
/// expire. An app whose permission list is empty is no grant: upstream
/// never lists it (`permission_db_entry_list_apps`), so neither do we.
pub fn parse(bytes: &[u8]) -> Result<Vec<(String, Entry)>, GvdbError> {
    let file = gvdb::read::File::from_bytes(Cow::Borrowed(bytes))
        .map_err(|e| GvdbError::Format(e.to_string()))?;
    let root = file
        .hash_table()
        .map_err(|e| GvdbError::Format(e.to_string()))?;
    let main = root
        .get_hash_table("main")
        .map_err(|_| GvdbError::MissingTable("main"))?;
    // Upstream refuses a file without `apps` too (permission-db.c,
    // initable_init), so such a file is not one it wrote.
    root.get_hash_table("apps")
        .map_err(|_| GvdbError::MissingTable("apps"))?;
    let mut out = Vec::new();
    for key in main.keys() {
        let id = key.map_err(|e| GvdbError::Format(e.to_string()))?;
        let bad = |reason: String| GvdbError::BadEntry {
            id: id.clone(),
            reason,
        };
        let value = main.get_value(&id).map_err(|e| bad(e.to_string()))?;
        let entry = entry_from_value(value).map_err(bad)?;
        out.push((id, entry));
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(out)
}

fn entry_from_value(value: Value<'_>) -> Result<Entry, String> {
    let value = match value {
        Value::Value(inner) => *inner,
        other => other,
    };
    let Value::Structure(s) = value else {
        return Err(format!(
            "expected (va{{sas}}), found {}",
            value.value_signature()
        ));
    };
    let mut fields = s.into_fields().into_iter();
    let (Some(Value::Value(data)), Some(Value::Dict(apps)), None) =
        (fields.next(), fields.next(), fields.next())
    else {
        return Err("expected (va{sas})".into());
    };
    let data = Data::from_value(&data).map_err(|e| e.to_string())?;
    let mut entry = Entry::new(data);
    for (app, perms) in apps.iter() {
        let (Value::Str(app), Value::Array(perms)) = (app, perms) else {
            return Err("expected a{sas}".into());
        };
        let permissions = perms
            .iter()
            .map(|p| match p {
                Value::Str(p) => Ok(p.to_string()),
                _ => Err("expected as".to_string()),
            })
            .collect::<Result<Vec<_>, _>>()?;
        if permissions.is_empty() {
            continue;
        }
        entry.apps.insert(
            app.to_string(),
            Grant {
                permissions,
                expires: None,
            },
        );
    }
    Ok(entry)
}

/// A table file's bytes and the ids that could not go into it.
#[derive(Debug)]
pub struct Built {
    pub bytes: Vec<u8>,
    /// Ids left out: the empty id (the gvdb crate's writer refuses empty
    /// keys, which GLib's accepts).
    pub left_out: Vec<String>,
}

/// Builds one table file in upstream's layout. Grants with an expiry are
/// written as they stand (upstream has no expiry; the caller decides
/// whether they belong). Fails only for a data value GVariant cannot hold.
///
/// The `apps` index has no entry for the host app `""` (the gvdb crate
/// cannot write an empty key): its grants are in `main`, which is what
/// upstream's Lookup and List read.
pub fn build<'e>(
    entries: impl IntoIterator<Item = (&'e str, &'e Entry)>,
) -> Result<Built, GvdbError> {
    // No path separator: upstream's tables are flat, and ids may hold '/'.
    let flat = || gvdb::write::HashTableBuilder::with_path_separator(None);
    let mut main = flat();
    let mut left_out = Vec::new();
    let mut by_app: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
    for (id, entry) in entries {
        if id.is_empty() {
            left_out.push(String::new());
            continue;
        }
        let data = entry.data.to_value().map_err(|e| GvdbError::BadEntry {
            id: id.to_owned(),
            reason: e.to_string(),
        })?;
        let apps: BTreeMap<String, Vec<String>> = entry.permissions();
        for app in entry.apps.keys().filter(|a| !a.is_empty()) {
            by_app.entry(app).or_default().insert(id);
        }
        let value = StructureBuilder::new()
            .append_field(Value::Value(Box::new(Value::from(data))))
            .append_field(Value::Dict(Dict::from(apps)))
            .build()
            .map_err(|e| GvdbError::Write(e.to_string()))?;
        main.insert_value(id, Value::Structure(value))
            .map_err(|e| GvdbError::Write(e.to_string()))?;
    }
    let mut apps = flat();
    for (app, ids) in by_app {
        let ids: Vec<&str> = ids.into_iter().collect();
        apps.insert_value(app, Value::from(ids))
            .map_err(|e| GvdbError::Write(e.to_string()))?;
    }
    let mut root = flat();
    root.insert_table("main", main)
        .map_err(|e| GvdbError::Write(e.to_string()))?;
    root.insert_table("apps", apps)
        .map_err(|e| GvdbError::Write(e.to_string()))?;
    let bytes = gvdb::write::FileWriter::new()
        .write_to_vec_with_table(root)
        .map_err(|e| GvdbError::Write(e.to_string()))?;
    Ok(Built { bytes, left_out })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(data: Value<'_>, apps: &[(&str, &[&str])]) -> Entry {
        let mut e = Entry::new(Data::from_value(&data).unwrap());
        for (app, perms) in apps {
            e.apps.insert(
                app.to_string(),
                Grant {
                    permissions: perms.iter().map(|p| p.to_string()).collect(),
                    expires: None,
                },
            );
        }
        e
    }

    #[test]
    fn build_then_parse_gives_the_same_entries() {
        let entries = vec![
            (
                "/path/with/slashes".to_string(),
                entry(Value::U8(1), &[("org.x.A", &["r"])]),
            ),
            ("a".to_string(), entry(Value::U8(0), &[])),
            (
                "b".to_string(),
                entry(
                    Value::from("text"),
                    &[("org.x.A", &["yes"]), ("", &["no", "x"])],
                ),
            ),
            (
                "c".to_string(),
                entry(
                    Value::from((1u32, "s", vec![1u8, 2])),
                    &[("org.y.B", &["p"])],
                ),
            ),
        ];
        let built = build(entries.iter().map(|(i, e)| (i.as_str(), e))).unwrap();
        assert!(built.left_out.is_empty());
        assert_eq!(parse(&built.bytes).unwrap(), entries);
    }

    #[test]
    fn damaged_and_truncated_files_are_errors() {
        let e = vec![("x".to_string(), entry(Value::U8(0), &[("a", &["p"])]))];
        let bytes = build(e.iter().map(|(i, e)| (i.as_str(), e))).unwrap().bytes;
        for cut in [0, 3, 16, 24, bytes.len() / 2] {
            assert!(parse(&bytes[..cut]).is_err(), "cut at {cut} parsed");
        }
        assert!(parse(b"GVariant\0\0\0\0garbage").is_err());
        let mut flipped = bytes.clone();
        for b in flipped.iter_mut().skip(24) {
            *b ^= 0xa5;
        }
        let _ = parse(&flipped);
    }
}
