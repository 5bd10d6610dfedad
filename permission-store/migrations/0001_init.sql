-- The upstream model: table -> id -> {app -> [permission]} plus one data
-- value per id. One row per id in `entries`, one row per (id, app) grant in
-- `grants`, so a change touches a few rows instead of rewriting the table.

CREATE TABLE entries (
    tbl  TEXT NOT NULL,
    id   TEXT NOT NULL,
    -- The data value in D-Bus (little-endian) encoding of a variant: its
    -- signature followed by its body, so it round-trips exactly.
    data BLOB NOT NULL,
    PRIMARY KEY (tbl, id)
) WITHOUT ROWID;

CREATE TABLE grants (
    tbl     TEXT NOT NULL,
    id      TEXT NOT NULL,
    app     TEXT NOT NULL,
    -- JSON array of strings, in the order the caller gave them.
    perms   TEXT NOT NULL,
    -- Unix time in seconds after which the grant no longer exists; NULL: never.
    expires INTEGER,
    PRIMARY KEY (tbl, id, app),
    FOREIGN KEY (tbl, id) REFERENCES entries (tbl, id) ON DELETE CASCADE
) WITHOUT ROWID;

CREATE INDEX grants_by_app ON grants (app);
CREATE INDEX grants_by_expiry ON grants (expires) WHERE expires IS NOT NULL;

-- The audit history: one row per app whose grant changed, plus rows for data
-- changes and deleted ids (app NULL).
CREATE TABLE history (
    seq     INTEGER PRIMARY KEY,
    time_us INTEGER NOT NULL,
    action  TEXT NOT NULL,
    tbl     TEXT NOT NULL,
    id      TEXT NOT NULL,
    app     TEXT,
    old     TEXT,
    new     TEXT,
    caller  TEXT NOT NULL
);

CREATE INDEX history_by_app ON history (app);
CREATE INDEX history_by_table ON history (tbl);
