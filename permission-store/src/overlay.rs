//! The rows one batch of writes touches, held in memory while the batch's
//! writes apply, then written back with a handful of statements.
//!
//! Every statement sqlx runs is a round trip to its SQLite thread (two
//! context switches). Applied row by row, a `Set` cost seven of them, and
//! under a pipelined load the store spent its time switching threads, not
//! in SQLite. Here a batch costs a fixed number of round trips whatever its
//! size: one query reads every id the batch names, the writes change that
//! copy, and [`Overlay::flush`] writes the ids that changed back, each
//! statement taking all its rows at once as one JSON array (`json_each`), so
//! its text, and its prepared statement, stay the same.
//!
//! The copy holds an id as the database does, expired grants included, so
//! writing an id back rewrites exactly what the database held plus the
//! batch's changes: a grant past its expiry that no write touched stays for
//! the pruner to remove (and record) as before.

use std::collections::HashMap;

use sqlx::{Row, SqliteConnection};

use crate::data::Data;
use crate::error::StoreError;
use crate::model::Entry;

/// (table, id).
pub(crate) type Key = (String, String);

/// One id as the database holds it after the batch's writes so far.
pub(crate) struct Slot {
    /// `None`: no such id.
    pub stored: Option<Entry>,
    /// Changed since it was read or last written back.
    dirty: bool,
}

/// One row for the `history` table.
pub(crate) struct HistoryRow {
    pub time_us: i64,
    pub action: &'static str,
    pub table: String,
    pub id: String,
    pub app: Option<String>,
    /// JSON text of the permission lists, as the table stores them.
    pub old: Option<String>,
    pub new: Option<String>,
    pub caller: String,
}

#[derive(Default)]
pub(crate) struct Overlay {
    slots: HashMap<Key, Slot>,
    history: Vec<HistoryRow>,
}

/// Every stored row of the ids in the JSON array `?1` of `[table, id]`.
const READ: &str = "SELECT e.tbl, e.id, e.data, g.app, g.perms, g.expires \
     FROM json_each(?1) k \
     JOIN entries e ON e.tbl = k.value ->> 0 AND e.id = k.value ->> 1 \
     LEFT JOIN grants g ON g.tbl = e.tbl AND g.id = e.id";

const DELETE_ENTRIES: &str = "DELETE FROM entries \
     WHERE (tbl, id) IN (SELECT value ->> 0, value ->> 1 FROM json_each(?1))";

// `WHERE true` tells SQLite's parser that ON CONFLICT belongs to the
// INSERT, not to a join in the SELECT.
const UPSERT_ENTRIES: &str = "INSERT INTO entries (tbl, id, data) \
     SELECT value ->> 0, value ->> 1, unhex(value ->> 2) FROM json_each(?1) WHERE true \
     ON CONFLICT (tbl, id) DO UPDATE SET data = excluded.data";

const DELETE_GRANTS: &str = "DELETE FROM grants \
     WHERE (tbl, id) IN (SELECT value ->> 0, value ->> 1 FROM json_each(?1))";

const INSERT_GRANTS: &str = "INSERT INTO grants (tbl, id, app, perms, expires) \
     SELECT value ->> 0, value ->> 1, value ->> 2, value ->> 3, value ->> 4 FROM json_each(?1)";

// ORDER BY key: the rows get their `seq` in the order the writes made them.
const INSERT_HISTORY: &str = "INSERT INTO history (time_us, action, tbl, id, app, old, new, caller) \
     SELECT value ->> 0, value ->> 1, value ->> 2, value ->> 3, value ->> 4, value ->> 5, value ->> 6, value ->> 7 \
     FROM json_each(?1) ORDER BY key";

impl Overlay {
    /// Reads the ids in `keys` that are not held yet, in one query.
    pub async fn read(
        &mut self,
        conn: &mut SqliteConnection,
        keys: impl IntoIterator<Item = (&str, &str)>,
    ) -> Result<(), StoreError> {
        let mut wanted: Vec<(&str, &str)> = keys
            .into_iter()
            .filter(|&(t, i)| !self.slots.contains_key(&(t.to_owned(), i.to_owned())))
            .collect();
        wanted.sort_unstable();
        wanted.dedup();
        if wanted.is_empty() {
            return Ok(());
        }
        let keys = serde_json::to_string(&wanted).expect("strings serialise");
        let rows = sqlx::query(READ).bind(keys).fetch_all(&mut *conn).await?;
        for (t, i) in wanted {
            self.slots.insert(
                (t.to_owned(), i.to_owned()),
                Slot {
                    stored: None,
                    dirty: false,
                },
            );
        }
        for row in &rows {
            let key: Key = (row.get(0), row.get(1));
            let slot = self
                .slots
                .get_mut(&key)
                .expect("the query returns only ids it was given");
            let entry = slot
                .stored
                .get_or_insert_with(|| Entry::new(Data::from_bytes(row.get(2))));
            if let Some(app) = row.get::<Option<String>, _>(3) {
                entry
                    .apps
                    .insert(app, crate::store::grant_from(row.get(4), row.get(5))?);
            }
        }
        Ok(())
    }

    /// The id as stored, read first if not held yet.
    pub async fn slot(
        &mut self,
        conn: &mut SqliteConnection,
        table: &str,
        id: &str,
    ) -> Result<&mut Slot, StoreError> {
        let key = (table.to_owned(), id.to_owned());
        if !self.slots.contains_key(&key) {
            self.read(conn, [(table, id)]).await?;
        }
        Ok(self.slots.get_mut(&key).expect("read above"))
    }

    /// The id as a caller sees it at `now` (Unix seconds): expired grants
    /// are absent.
    pub async fn visible(
        &mut self,
        conn: &mut SqliteConnection,
        table: &str,
        id: &str,
        now: i64,
    ) -> Result<Option<Entry>, StoreError> {
        let slot = self.slot(conn, table, id).await?;
        Ok(slot.stored.as_ref().map(|e| {
            let mut e = e.clone();
            e.apps.retain(|_, g| g.expires.is_none_or(|at| at > now));
            e
        }))
    }

    pub fn record(&mut self, row: HistoryRow) {
        self.history.push(row);
    }

    /// Writes every changed id and the pending history rows back, inside
    /// the caller's transaction. Afterwards the copy still matches the
    /// database. On an error the transaction holds part of the batch and
    /// must be rolled back.
    pub async fn flush(&mut self, conn: &mut SqliteConnection) -> Result<(), sqlx::Error> {
        let mut gone: Vec<(&str, &str)> = Vec::new();
        let mut live: Vec<(&str, &str, String)> = Vec::new();
        let mut grants: Vec<(&str, &str, &str, String, Option<i64>)> = Vec::new();
        for ((table, id), slot) in self.slots.iter().filter(|(_, s)| s.dirty) {
            let Some(entry) = &slot.stored else {
                gone.push((table, id));
                continue;
            };
            live.push((table, id, hex(entry.data.as_bytes())));
            for (app, g) in &entry.apps {
                grants.push((table, id, app, perms_json(&g.permissions), g.expires));
            }
        }
        if !gone.is_empty() {
            // Their grants go with them (ON DELETE CASCADE).
            sqlx::query(DELETE_ENTRIES)
                .bind(json(&gone))
                .execute(&mut *conn)
                .await?;
        }
        if !live.is_empty() {
            sqlx::query(UPSERT_ENTRIES)
                .bind(json(&live))
                .execute(&mut *conn)
                .await?;
            let keys: Vec<(&str, &str)> = live.iter().map(|(t, i, _)| (*t, *i)).collect();
            sqlx::query(DELETE_GRANTS)
                .bind(json(&keys))
                .execute(&mut *conn)
                .await?;
        }
        if !grants.is_empty() {
            sqlx::query(INSERT_GRANTS)
                .bind(json(&grants))
                .execute(&mut *conn)
                .await?;
        }
        if !self.history.is_empty() {
            let rows: Vec<_> = self
                .history
                .iter()
                .map(|h| {
                    (
                        h.time_us, h.action, &h.table, &h.id, &h.app, &h.old, &h.new, &h.caller,
                    )
                })
                .collect();
            sqlx::query(INSERT_HISTORY)
                .bind(json(&rows))
                .execute(&mut *conn)
                .await?;
        }
        self.history.clear();
        for slot in self.slots.values_mut() {
            slot.dirty = false;
        }
        Ok(())
    }
}

impl Slot {
    /// The stored entry, to be changed: the id is written back at the next
    /// flush.
    pub fn change(&mut self) -> &mut Option<Entry> {
        self.dirty = true;
        &mut self.stored
    }
}

/// How the `grants` and `history` tables store a permission list.
pub(crate) fn perms_json(perms: &[String]) -> String {
    serde_json::to_string(perms).expect("strings serialise")
}

/// Lower-case hex, for SQLite's `unhex()`: JSON has no bytes.
fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(DIGITS[usize::from(b >> 4)] as char);
        s.push(DIGITS[usize::from(b & 0xf)] as char);
    }
    s
}

/// The JSON array a statement binds as `?1`.
fn json<T: serde::Serialize>(rows: &[T]) -> String {
    serde_json::to_string(rows).expect("strings and integers serialise")
}

#[cfg(test)]
mod tests {
    #[test]
    fn hex_is_what_unhex_reads() {
        assert_eq!(super::hex(&[0x00, 0x0f, 0xa5, 0xff]), "000fa5ff");
        assert_eq!(super::hex(&[]), "");
    }
}
