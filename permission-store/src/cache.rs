//! A bounded in-memory copy of recently read entries, so a repeated Lookup
//! does not wait on SQLite's thread (Lookup is the call portals make on every
//! request).
//!
//! Correctness rests on three rules:
//! - Our writer updates the cache after each commit, under the lock, and bumps
//!   a generation counter.
//! - A reader that missed inserts what it read only if the generation did not
//!   move while it read, so a read that raced a commit is never cached.
//! - Writes by another process (permctl `--db` on the live file) are noticed
//!   through SQLite's `PRAGMA data_version` by [`Cache::clear`] callers, at
//!   most a second later.
//!
//! Entries keep their grants' expiry; readers filter expired grants, so a
//! cached entry never shows a grant past its time.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use crate::model::{Change, Entry};

/// Most bytes of ids, data and permissions kept; the cache empties when a
/// new entry would pass this.
const MAX_BYTES: usize = 32 << 20;

#[derive(Default)]
struct Inner {
    map: HashMap<(String, String), Arc<Entry>>,
    bytes: usize,
    generation: u64,
}

#[derive(Default)]
pub(crate) struct Cache(Mutex<Inner>);

fn cost(table: &str, id: &str, e: &Entry) -> usize {
    let grants: usize = e
        .apps
        .iter()
        .map(|(a, g)| a.len() + g.permissions.iter().map(|p| p.len() + 24).sum::<usize>() + 64)
        .sum();
    table.len() + id.len() + e.data.as_bytes().len() + grants + 96
}

impl Cache {
    pub fn get(&self, table: &str, id: &str) -> Result<Arc<Entry>, u64> {
        let inner = self.0.lock().expect("cache lock");
        // The tuple key needs owned strings; lookups are by borrowed pair.
        match inner.map.get(&(table.to_owned(), id.to_owned())) {
            Some(e) => Ok(e.clone()),
            None => Err(inner.generation),
        }
    }

    /// Inserts what a reader read at `generation`, unless a write happened
    /// since.
    pub fn insert_if_current(&self, generation: u64, table: &str, id: &str, entry: Arc<Entry>) {
        let mut inner = self.0.lock().expect("cache lock");
        if inner.generation != generation {
            return;
        }
        let c = cost(table, id, &entry);
        if c > MAX_BYTES / 16 {
            return;
        }
        if inner.bytes + c > MAX_BYTES {
            inner.map.clear();
            inner.bytes = 0;
        }
        if let Some(old) = inner.map.insert((table.to_owned(), id.to_owned()), entry) {
            inner.bytes = inner.bytes.saturating_sub(cost(table, id, &old));
        }
        inner.bytes += c;
    }

    pub fn generation(&self) -> u64 {
        self.0.lock().expect("cache lock").generation
    }

    /// Inserts a page read at `generation`. `Err(true)`: a write happened
    /// meanwhile, read the page again; `Err(false)`: the cache is full.
    pub fn insert_page(
        &self,
        generation: u64,
        page: Vec<(String, String, Arc<Entry>)>,
    ) -> Result<(), bool> {
        let mut inner = self.0.lock().expect("cache lock");
        if inner.generation != generation {
            return Err(true);
        }
        for (table, id, entry) in page {
            let c = cost(&table, &id, &entry);
            if inner.bytes + c > MAX_BYTES {
                return Err(false);
            }
            let old = inner.map.insert((table.clone(), id.clone()), entry);
            if let Some(old) = old {
                inner.bytes = inner.bytes.saturating_sub(cost(&table, &id, &old));
            }
            inner.bytes += c;
        }
        Ok(())
    }

    /// Applies committed changes (write-through): each change carries the
    /// entry as a reader would now load it; a deleted id is dropped. The
    /// generation moves so that reads that raced the commit are not cached.
    pub fn apply(&self, changes: &[Change]) {
        let mut inner = self.0.lock().expect("cache lock");
        inner.generation += 1;
        for c in changes {
            let key = (c.table.clone(), c.id.clone());
            if let Some(old) = inner.map.remove(&key) {
                inner.bytes = inner.bytes.saturating_sub(cost(&key.0, &key.1, &old));
            }
            if c.deleted {
                continue;
            }
            let cost = cost(&key.0, &key.1, &c.entry);
            if cost > MAX_BYTES / 16 {
                continue;
            }
            if inner.bytes + cost > MAX_BYTES {
                inner.map.clear();
                inner.bytes = 0;
            }
            inner.map.insert(key, Arc::new(c.entry.clone()));
            inner.bytes += cost;
        }
    }

    /// Forgets everything (another process wrote to the database).
    pub fn clear(&self) {
        let mut inner = self.0.lock().expect("cache lock");
        inner.generation += 1;
        inner.map.clear();
        inner.bytes = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::Data;

    fn change(id: &str) -> Change {
        Change {
            table: "t".into(),
            id: id.into(),
            deleted: false,
            entry: Entry::new(Data::empty()),
        }
    }

    #[test]
    fn a_read_that_raced_a_write_is_not_cached() {
        let cache = Cache::default();
        let generation = cache.get("t", "a").unwrap_err();
        let mut c = change("a");
        c.entry.data = Data::from_value(&zvariant::Value::from("written")).unwrap();
        cache.apply(std::slice::from_ref(&c));
        // The stale read (old data) arrives after the commit: ignored.
        cache.insert_if_current(generation, "t", "a", Arc::new(Entry::new(Data::empty())));
        assert_eq!(cache.get("t", "a").unwrap().data, c.entry.data);
    }

    #[test]
    fn writes_go_through_and_deletes_evict() {
        let cache = Cache::default();
        let mut c = change("a");
        c.entry.data = Data::from_value(&zvariant::Value::from("new")).unwrap();
        cache.apply(std::slice::from_ref(&c));
        assert_eq!(cache.get("t", "a").unwrap().data, c.entry.data);
        c.deleted = true;
        cache.apply(&[c]);
        assert!(cache.get("t", "a").is_err());
    }
}
