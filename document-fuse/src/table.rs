//! Every document, in memory: what the FUSE threads read on every request
//! and the D-Bus side changes. One lock; nobody holds it across I/O or a
//! D-Bus call.

use std::collections::{BTreeSet, HashMap};
use std::io::Read;
use std::path::PathBuf;
use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard};

use crate::document::Document;

/// The table shared by the D-Bus side and the FUSE threads.
#[derive(Clone, Default)]
pub struct SharedTable(Arc<RwLock<Table>>);

impl SharedTable {
    pub fn new(table: Table) -> Self {
        Self(Arc::new(RwLock::new(table)))
    }

    pub fn read(&self) -> RwLockReadGuard<'_, Table> {
        // A panic while holding the lock leaves the table as it was before
        // the panicking change began (every change is one insert or
        // remove), so a poisoned lock is still usable.
        self.0.read().unwrap_or_else(|p| p.into_inner())
    }

    pub fn write(&self) -> RwLockWriteGuard<'_, Table> {
        self.0.write().unwrap_or_else(|p| p.into_inner())
    }
}

/// Documents by id, with an index by host path (for reuse-existing and
/// Lookup, which upstream answers by the whole stored value).
#[derive(Debug, Default)]
pub struct Table {
    docs: HashMap<String, Document>,
    by_path: HashMap<PathBuf, BTreeSet<String>>,
}

impl Table {
    pub fn get(&self, id: &str) -> Option<&Document> {
        self.docs.get(id)
    }

    pub fn get_mut(&mut self, id: &str) -> Option<&mut Document> {
        self.docs.get_mut(id)
    }

    pub fn len(&self) -> usize {
        self.docs.len()
    }

    pub fn is_empty(&self) -> bool {
        self.docs.is_empty()
    }

    /// Inserts or replaces `id`; returns the previous document.
    pub fn insert(&mut self, id: String, doc: Document) -> Option<Document> {
        self.by_path
            .entry(doc.path.clone())
            .or_default()
            .insert(id.clone());
        let old = self.docs.insert(id.clone(), doc);
        if let Some(old) = &old {
            self.unindex(&id, old);
            let new_path = &self.docs[&id].path;
            self.by_path.entry(new_path.clone()).or_default().insert(id);
        }
        old
    }

    pub fn remove(&mut self, id: &str) -> Option<Document> {
        let old = self.docs.remove(id)?;
        self.unindex(id, &old);
        Some(old)
    }

    fn unindex(&mut self, id: &str, doc: &Document) {
        if let Some(ids) = self.by_path.get_mut(&doc.path) {
            ids.remove(id);
            if ids.is_empty() {
                self.by_path.remove(&doc.path);
            }
        }
    }

    /// The id of a document with the same stored value as `doc` (path,
    /// device, inode and flags), the lowest first.
    pub fn find_same(&self, doc: &Document) -> Option<String> {
        self.by_path
            .get(&doc.path)?
            .iter()
            .find(|id| self.docs.get(*id).is_some_and(|d| d.same_value(doc)))
            .cloned()
    }

    /// Every id, sorted.
    pub fn ids(&self) -> Vec<String> {
        let mut ids: Vec<String> = self.docs.keys().cloned().collect();
        ids.sort();
        ids
    }

    /// The ids `app` has an entry in, sorted (upstream's
    /// `permission_db_list_ids_by_app`).
    pub fn ids_of_app(&self, app: &str) -> Vec<String> {
        let mut ids: Vec<String> = self
            .docs
            .iter()
            .filter(|(_, d)| d.apps.contains_key(app))
            .map(|(id, _)| id.clone())
            .collect();
        ids.sort();
        ids
    }

    /// Every app holding a permission on some document.
    pub fn apps(&self) -> BTreeSet<String> {
        self.docs
            .values()
            .flat_map(|d| d.apps.keys().cloned())
            .collect()
    }

    pub fn iter(&self) -> impl Iterator<Item = (&String, &Document)> {
        self.docs.iter()
    }

    /// A new id as upstream makes them: a random 32-bit number in lower-case
    /// hex, not yet taken.
    pub fn new_id(&self) -> String {
        loop {
            let id = format!("{:x}", random_u32());
            if !self.docs.contains_key(&id) {
                return id;
            }
        }
    }
}

/// 32 random bits from the kernel's generator. `/dev/urandom` never blocks
/// once the system is up; should it be unreadable, the clock's nanoseconds
/// mixed with the pid still give distinct ids (the caller skips taken ones).
fn random_u32() -> u32 {
    let mut buf = [0u8; 4];
    if std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut buf))
        .is_ok()
    {
        return u32::from_ne_bytes(buf);
    }
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    nanos ^ std::process::id().rotate_left(16)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::document::DocFlags;
    use crate::permissions::Perms;

    fn doc(path: &str, flags: u32) -> Document {
        Document {
            path: path.into(),
            dev: 1,
            ino: 2,
            flags: DocFlags(flags),
            apps: Default::default(),
        }
    }

    #[test]
    fn reuse_matches_the_whole_value() {
        let mut t = Table::default();
        t.insert("a".into(), doc("/x/f", 0));
        t.insert("b".into(), doc("/x/f", DocFlags::UNIQUE));
        assert_eq!(t.find_same(&doc("/x/f", 0)).as_deref(), Some("a"));
        assert_eq!(
            t.find_same(&doc("/x/f", DocFlags::UNIQUE)).as_deref(),
            Some("b")
        );
        assert_eq!(t.find_same(&doc("/x/f", DocFlags::TRANSIENT)), None);
        assert_eq!(t.find_same(&doc("/x/g", 0)), None);
        t.remove("a");
        assert_eq!(t.find_same(&doc("/x/f", 0)), None);
        // Replacing a document re-indexes it under its new path.
        t.insert("b".into(), doc("/y/f", DocFlags::UNIQUE));
        assert_eq!(t.find_same(&doc("/x/f", DocFlags::UNIQUE)), None);
        assert_eq!(
            t.find_same(&doc("/y/f", DocFlags::UNIQUE)).as_deref(),
            Some("b")
        );
    }

    #[test]
    fn ids_are_hex_and_fresh() {
        let t = Table::default();
        let id = t.new_id();
        assert!(!id.is_empty() && id.len() <= 8);
        assert!(
            id.chars()
                .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase())
        );
    }

    #[test]
    fn per_app_listing() {
        let mut t = Table::default();
        let mut d = doc("/x/f", 0);
        d.set_perms("org.example.A", Perms::READ);
        t.insert("2".into(), d);
        t.insert("1".into(), doc("/x/g", 0));
        assert_eq!(t.ids(), ["1", "2"]);
        assert_eq!(t.ids_of_app("org.example.A"), ["2"]);
        assert!(t.ids_of_app("org.example.B").is_empty());
        assert_eq!(t.apps().into_iter().collect::<Vec<_>>(), ["org.example.A"]);
    }
}
