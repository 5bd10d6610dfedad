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
    // Keys and values in item order, never looked up by key: the gvdb
    // crate hashes bytes as unsigned where GLib hashes them as signed
    // chars, so a non-ASCII id written by GLib is not found by name.
    // One value decoded at a time: a decoded value costs far more than
    // its bytes.
    let mut ids = main.keys();
    let mut values = main.values();
    let mut out = Vec::with_capacity(ids.len());
    loop {
        let (id, value) = match (ids.next(), values.next()) {
            (None, None) => break,
            (Some(id), Some(value)) => (id, value),
            _ => {
                return Err(GvdbError::Format(
                    "the main table holds items that are not values".into(),
                ));
            }
        };
        let id = id.map_err(|e| GvdbError::Format(e.to_string()))?;
        let value = value.map_err(|e| GvdbError::BadEntry {
            id: id.clone(),
            reason: e.to_string(),
        })?;
        match entry_from_value(value) {
            Ok(entry) => out.push((id, entry)),
            Err(reason) => return Err(GvdbError::BadEntry { id, reason }),
        }
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
    /// Ids left out: none GLib could not hold either (a key longer than
    /// 65535 bytes).
    pub left_out: Vec<String>,
}

/// Builds one table file in upstream's layout, as GLib's gvdb-builder does
/// (little-endian, no bloom filter, one bucket per item). Grants with an
/// expiry are written as they stand (upstream has no expiry; the caller
/// decides whether they belong). Each value is encoded and appended at
/// once, so memory stays near the file's size.
///
/// Written here rather than with the gvdb crate's writer, which refuses
/// empty keys (the host app `""`), hashes non-ASCII keys differently from
/// GLib (so GLib would not find such an id) and took about 8 KiB per item.
pub fn build<'e>(
    entries: impl IntoIterator<Item = (&'e str, &'e Entry)>,
) -> Result<Built, GvdbError> {
    let mut out = vec![0u8; HEADER_LEN];
    let mut main_items = Vec::new();
    let mut left_out = Vec::new();
    let mut by_app: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
    for (id, entry) in entries {
        if id.len() > usize::from(u16::MAX) {
            left_out.push(id.to_owned());
            continue;
        }
        let data = entry.data.to_value().map_err(|e| GvdbError::BadEntry {
            id: id.to_owned(),
            reason: e.to_string(),
        })?;
        // Upstream never stores an app with no permissions.
        let apps: BTreeMap<String, Vec<String>> = entry
            .permissions()
            .into_iter()
            .filter(|(_, p)| !p.is_empty())
            .collect();
        for (app, grant) in &entry.apps {
            if !grant.permissions.is_empty() {
                by_app.entry(app).or_default().insert(id);
            }
        }
        let value = StructureBuilder::new()
            .append_field(Value::Value(Box::new(Value::from(data))))
            .append_field(Value::Dict(Dict::from(apps)))
            .build()
            .map_err(|e| GvdbError::Write(e.to_string()))?;
        let ptr = append_value(&mut out, &Value::Structure(value))?;
        main_items.push(Item::new(id, b'v', ptr));
    }
    let mut apps_items = Vec::new();
    for (app, ids) in by_app {
        if app.len() > usize::from(u16::MAX) {
            continue;
        }
        let ids: Vec<&str> = ids.into_iter().collect();
        let ptr = append_value(&mut out, &Value::from(ids))?;
        apps_items.push(Item::new(app, b'v', ptr));
    }
    let main = append_table(&mut out, main_items)?;
    let apps = append_table(&mut out, apps_items)?;
    let root = append_table(
        &mut out,
        vec![Item::new("main", b'H', main), Item::new("apps", b'H', apps)],
    )?;
    // The header: signature, version 0, options 0, the root table.
    out[0..8].copy_from_slice(b"GVariant");
    out[8..16].fill(0);
    out[16..20].copy_from_slice(&root.0.to_le_bytes());
    out[20..24].copy_from_slice(&root.1.to_le_bytes());
    Ok(Built {
        bytes: out,
        left_out,
    })
}

const HEADER_LEN: usize = 24;

/// A region of the file: start and end offsets.
type Pointer = (u32, u32);

struct Item<'k> {
    key: &'k str,
    kind: u8,
    value: Pointer,
}

impl<'k> Item<'k> {
    fn new(key: &'k str, kind: u8, value: Pointer) -> Self {
        Self { key, kind, value }
    }
}

/// GLib's key hash (gvdb-builder.c `djb_hash`): bytes as *signed* chars.
fn djb_hash(key: &str) -> u32 {
    key.bytes().fold(5381u32, |h, b| {
        h.wrapping_mul(33).wrapping_add(b as i8 as i32 as u32)
    })
}

fn offset(out: &[u8]) -> Result<u32, GvdbError> {
    u32::try_from(out.len()).map_err(|_| GvdbError::Write("the file would exceed 4 GiB".into()))
}

fn pad_to(out: &mut Vec<u8>, align: usize) {
    out.resize(out.len().next_multiple_of(align), 0);
}

/// Appends `value` serialised as a GVariant `v`, 8-aligned.
// zvariant 5's GVariant encoding is deprecated in favour of a crate of its
// own; the gvdb crate reads with it too. Moving both is one change.
#[allow(deprecated)]
fn append_value(out: &mut Vec<u8>, value: &Value<'_>) -> Result<Pointer, GvdbError> {
    let ctxt = zvariant::serialized::Context::new_gvariant(zvariant::LE, 0);
    let encoded = zvariant::to_bytes(ctxt, value).map_err(|e| GvdbError::Write(e.to_string()))?;
    pad_to(out, 8);
    let start = offset(out)?;
    out.extend_from_slice(&encoded);
    Ok((start, offset(out)?))
}

/// Appends the keys, then the hash table (header with no bloom filter,
/// buckets, items sorted by bucket), 4-aligned.
fn append_table(out: &mut Vec<u8>, items: Vec<Item<'_>>) -> Result<Pointer, GvdbError> {
    let n = u32::try_from(items.len()).map_err(|_| GvdbError::Write("too many items".into()))?;
    let mut rows = Vec::with_capacity(items.len());
    for item in items {
        let key_start = offset(out)?;
        out.extend_from_slice(item.key.as_bytes());
        let hash = djb_hash(item.key);
        let bucket = if n == 0 { 0 } else { hash % n };
        rows.push((bucket, hash, key_start, item));
    }
    rows.sort_by_key(|r| r.0);
    pad_to(out, 4);
    let start = offset(out)?;
    out.extend_from_slice(&0u32.to_le_bytes()); // no bloom words, shift 0
    out.extend_from_slice(&n.to_le_bytes()); // buckets
    let mut next = 0usize;
    for bucket in 0..n {
        while next < rows.len() && rows[next].0 < bucket {
            next += 1;
        }
        out.extend_from_slice(&(next as u32).to_le_bytes());
    }
    for (_, hash, key_start, item) in &rows {
        out.extend_from_slice(&hash.to_le_bytes());
        out.extend_from_slice(&u32::MAX.to_le_bytes()); // no parent
        out.extend_from_slice(&key_start.to_le_bytes());
        out.extend_from_slice(&(item.key.len() as u16).to_le_bytes());
        out.push(item.kind);
        out.push(0);
        out.extend_from_slice(&item.value.0.to_le_bytes());
        out.extend_from_slice(&item.value.1.to_le_bytes());
    }
    Ok((start, offset(out)?))
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
            ("".to_string(), entry(Value::U8(2), &[("", &["h"])])),
            (
                "/path/with/slashes".to_string(),
                entry(Value::U8(1), &[("org.x.A", &["r"])]),
            ),
            ("a".to_string(), entry(Value::U8(0), &[])),
            (
                "b ünïcode".to_string(),
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
        let e = [("x".to_string(), entry(Value::U8(0), &[("a", &["p"])]))];
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

    /// Every byte of a real file changed to each of a few values: parsing
    /// returns (an error or entries), never panics.
    #[test]
    fn no_single_byte_change_makes_parsing_panic() {
        let e = [
            (
                "id".to_string(),
                entry(Value::from("data"), &[("org.a.A", &["p", "q"])]),
            ),
            ("ü".to_string(), entry(Value::U8(0), &[("", &["h"])])),
        ];
        let bytes = build(e.iter().map(|(i, e)| (i.as_str(), e))).unwrap().bytes;
        for pos in 0..bytes.len() {
            for v in [0x00, 0x01, 0x7f, 0x80, 0xff, bytes[pos] ^ 0x10] {
                let mut b = bytes.clone();
                b[pos] = v;
                let r = std::panic::catch_unwind(|| parse(&b).is_ok());
                assert!(r.is_ok(), "parsing panicked with byte {pos} set to {v:#x}");
            }
        }
    }
}
