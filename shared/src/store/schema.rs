//! The store's schema as append-only numbered migrations. Migration N takes a store from
//! `user_version` N-1 to N; a released migration is never edited, only followed by a new one.
//!
//! Change tracking is *inline* (seed 004, "Inlinenachverfolgung: ... ein Trigger"): triggers on
//! the public tables give every local row change exactly one tick, shared by all the change units
//! that row change touches; an UPDATE that changes no value takes no tick. The collector applies
//! remote changes with `sync_state.applying = 1` inside its write transaction, which the tracking
//! triggers see and stand aside for, so an imported change keeps its *remote* version. The flag
//! is only ever 1 inside an uncommitted transaction (SQLite has one writer at a time), so no other
//! connection ever sees it set.
//!
//! Unit codes (`sync_units.unit`): 1 folder name, 2 folder parent, 3 message content, 4 read
//! status, 5 message location, 8 message tombstone, 9 folder tombstone. Phase codes
//! (`sync_units.phase`): 1 hierarchy, 2 contents, 3 read status, 4 message deletes, 5 folder
//! deletes. Replica index 0 is the store's own replica.

/// `PRAGMA application_id` of every icsync store ("icsy"): how a store is told from any other
/// SQLite file before anything is written to it.
pub const APPLICATION_ID: i64 = 0x6963_7379;

/// The page size of a new store. Messages are ~2 KiB: 8 KiB pages hold three of them (about 85%
/// full) where 4 KiB pages would hold one and waste half of every page.
pub const PAGE_SIZE: i64 = 8192;

/// The migrations, in order; `MIGRATIONS[i]` takes `user_version` i to i + 1.
pub const MIGRATIONS: &[&str] = &[
    MIGRATION_1,
    MIGRATION_2,
    MIGRATION_3,
    MIGRATION_4,
    MIGRATION_5,
    MIGRATION_6,
    MIGRATION_7,
    MIGRATION_8,
    MIGRATION_9,
];

/// The schema version this build writes and understands.
pub const SCHEMA_VERSION: i64 = MIGRATIONS.len() as i64;

/// Now in unix milliseconds, written with functions every SQLite an application may use has had
/// for decades (`unixepoch()` needs 3.38, which e.g. Debian 12's sqlite3 3.40 has, but not its
/// 'subsec' modifier).
const NOW_MS: &str = "CAST((julianday('now') - 2440587.5) * 86400000 AS INTEGER)";
/// Now in unix seconds, likewise.
const NOW_S: &str = "CAST(strftime('%s', 'now') AS INTEGER)";

const MIGRATION_1: &str = r#"
-- The public tables: the contract with applications (PRODUCT.md). `id` is the global id; a random
-- one is made when the application gives none.
CREATE TABLE folders (
    id        TEXT PRIMARY KEY NOT NULL DEFAULT (lower(hex(randomblob(16)))),
    parent_id TEXT NULL,
    name      TEXT NOT NULL
);
CREATE INDEX folders_by_parent ON folders(parent_id);

CREATE TABLE messages (
    id          TEXT PRIMARY KEY NOT NULL DEFAULT (lower(hex(randomblob(16)))),
    folder_id   TEXT NOT NULL,
    subject     TEXT NOT NULL DEFAULT '',
    sender      TEXT NOT NULL DEFAULT '',
    received_at INTEGER NOT NULL DEFAULT 0,
    headers     TEXT NOT NULL DEFAULT '',
    body        BLOB,
    is_read     INTEGER NOT NULL DEFAULT 0,
    -- Values of the wrong type are refused at the write, with a name saying what is wrong.
    CONSTRAINT received_at_must_be_unix_seconds CHECK (typeof(received_at) = 'integer'),
    CONSTRAINT is_read_must_be_0_or_1 CHECK (is_read IN (0, 1)),
    CONSTRAINT body_must_be_text_or_blob CHECK (typeof(body) IN ('text', 'blob', 'null'))
);
CREATE INDEX messages_by_folder ON messages(folder_id);

-- One row: the replica's identity, its tick counter and what it knows of other replicas.
CREATE TABLE sync_state (
    id        INTEGER PRIMARY KEY CHECK (id = 1),
    replica   TEXT NOT NULL,
    tick      INTEGER NOT NULL DEFAULT 0,
    applying  INTEGER NOT NULL DEFAULT 0,
    knowledge TEXT NOT NULL DEFAULT '[]',
    forgotten TEXT NOT NULL DEFAULT '[]'
);

-- Global replica ids and the small integers versions use inside this store.
CREATE TABLE sync_replicas (
    idx     INTEGER PRIMARY KEY,
    replica TEXT NOT NULL UNIQUE
);

-- Every item this store has seen, live or tombstone: its kind and creation version.
CREATE TABLE sync_items (
    id         TEXT PRIMARY KEY NOT NULL,
    kind       INTEGER NOT NULL,
    created_r  INTEGER NOT NULL REFERENCES sync_replicas(idx),
    created_t  INTEGER NOT NULL,
    deleted_at INTEGER
) WITHOUT ROWID;

-- The update version of each change unit of each item (a tombstone has one unit: its deletion).
CREATE TABLE sync_units (
    item  TEXT NOT NULL REFERENCES sync_items(id),
    unit  INTEGER NOT NULL,
    r     INTEGER NOT NULL REFERENCES sync_replicas(idx),
    t     INTEGER NOT NULL,
    at    INTEGER NOT NULL,
    phase INTEGER NOT NULL,
    PRIMARY KEY (item, unit)
) WITHOUT ROWID;
-- Enumeration walks this index: cost follows the changes returned, not the store's size.
CREATE INDEX sync_units_by_version ON sync_units(phase, r, t);

-- Integrity, for every writer (applications and the collector alike).
CREATE TRIGGER folders_parent_exists BEFORE INSERT ON folders
WHEN NEW.parent_id IS NOT NULL AND NOT EXISTS (SELECT 1 FROM folders WHERE id = NEW.parent_id)
BEGIN SELECT RAISE(ABORT, 'icsync: folders.parent_id names no folder'); END;

CREATE TRIGGER folders_reparent_exists BEFORE UPDATE OF parent_id ON folders
WHEN NEW.parent_id IS NOT NULL AND NOT EXISTS (SELECT 1 FROM folders WHERE id = NEW.parent_id)
BEGIN SELECT RAISE(ABORT, 'icsync: folders.parent_id names no folder'); END;

CREATE TRIGGER folders_not_own_parent BEFORE UPDATE OF parent_id ON folders
WHEN NEW.parent_id = NEW.id
BEGIN SELECT RAISE(ABORT, 'icsync: a folder cannot be its own parent'); END;

CREATE TRIGGER folders_id_fixed BEFORE UPDATE OF id ON folders WHEN NEW.id IS NOT OLD.id
BEGIN SELECT RAISE(ABORT, 'icsync: folders.id is a global id and cannot change'); END;

CREATE TRIGGER folders_delete_empty BEFORE DELETE ON folders
WHEN EXISTS (SELECT 1 FROM messages WHERE folder_id = OLD.id)
  OR EXISTS (SELECT 1 FROM folders WHERE parent_id = OLD.id)
BEGIN SELECT RAISE(ABORT, 'icsync: folder still holds messages or folders; delete or move them first'); END;

CREATE TRIGGER messages_folder_exists BEFORE INSERT ON messages
WHEN NOT EXISTS (SELECT 1 FROM folders WHERE id = NEW.folder_id)
BEGIN SELECT RAISE(ABORT, 'icsync: messages.folder_id names no folder'); END;

CREATE TRIGGER messages_move_exists BEFORE UPDATE OF folder_id ON messages
WHEN NOT EXISTS (SELECT 1 FROM folders WHERE id = NEW.folder_id)
BEGIN SELECT RAISE(ABORT, 'icsync: messages.folder_id names no folder'); END;

CREATE TRIGGER messages_id_fixed BEFORE UPDATE OF id ON messages WHEN NEW.id IS NOT OLD.id
BEGIN SELECT RAISE(ABORT, 'icsync: messages.id is a global id and cannot change'); END;

-- Tracking of local changes: one tick per row change.
CREATE TRIGGER folders_track_insert AFTER INSERT ON folders
WHEN (SELECT applying FROM sync_state WHERE id = 1) = 0
BEGIN
    UPDATE sync_state SET tick = tick + 1 WHERE id = 1;
    DELETE FROM sync_units WHERE item = NEW.id;
    INSERT OR REPLACE INTO sync_items (id, kind, created_r, created_t, deleted_at)
        SELECT NEW.id, 0, 0, tick, NULL FROM sync_state WHERE id = 1;
    INSERT INTO sync_units (item, unit, r, t, at, phase)
        SELECT NEW.id, 1, 0, tick, {NOW_MS}, 1 FROM sync_state WHERE id = 1
        UNION ALL SELECT NEW.id, 2, 0, tick, {NOW_MS}, 1 FROM sync_state WHERE id = 1;
END;

CREATE TRIGGER folders_track_update AFTER UPDATE ON folders
WHEN (SELECT applying FROM sync_state WHERE id = 1) = 0
 AND (OLD.name IS NOT NEW.name OR OLD.parent_id IS NOT NEW.parent_id)
BEGIN
    UPDATE sync_state SET tick = tick + 1 WHERE id = 1;
    UPDATE sync_units SET r = 0, t = (SELECT tick FROM sync_state WHERE id = 1), at = {NOW_MS}
     WHERE item = NEW.id
       AND ((unit = 1 AND OLD.name IS NOT NEW.name) OR (unit = 2 AND OLD.parent_id IS NOT NEW.parent_id));
END;

CREATE TRIGGER folders_track_delete AFTER DELETE ON folders
WHEN (SELECT applying FROM sync_state WHERE id = 1) = 0
BEGIN
    UPDATE sync_state SET tick = tick + 1 WHERE id = 1;
    DELETE FROM sync_units WHERE item = OLD.id;
    INSERT INTO sync_units (item, unit, r, t, at, phase)
        SELECT OLD.id, 9, 0, tick, {NOW_MS}, 5 FROM sync_state WHERE id = 1;
    UPDATE sync_items SET deleted_at = {NOW_S} WHERE id = OLD.id;
END;

CREATE TRIGGER messages_track_insert AFTER INSERT ON messages
WHEN (SELECT applying FROM sync_state WHERE id = 1) = 0
BEGIN
    UPDATE sync_state SET tick = tick + 1 WHERE id = 1;
    DELETE FROM sync_units WHERE item = NEW.id;
    INSERT OR REPLACE INTO sync_items (id, kind, created_r, created_t, deleted_at)
        SELECT NEW.id, 1, 0, tick, NULL FROM sync_state WHERE id = 1;
    INSERT INTO sync_units (item, unit, r, t, at, phase)
        SELECT NEW.id, 3, 0, tick, {NOW_MS}, 2 FROM sync_state WHERE id = 1
        UNION ALL SELECT NEW.id, 4, 0, tick, {NOW_MS}, 3 FROM sync_state WHERE id = 1
        UNION ALL SELECT NEW.id, 5, 0, tick, {NOW_MS}, 2 FROM sync_state WHERE id = 1;
END;

CREATE TRIGGER messages_track_update AFTER UPDATE ON messages
WHEN (SELECT applying FROM sync_state WHERE id = 1) = 0
 AND (OLD.subject IS NOT NEW.subject OR OLD.sender IS NOT NEW.sender
      OR OLD.received_at IS NOT NEW.received_at OR OLD.headers IS NOT NEW.headers
      OR OLD.body IS NOT NEW.body OR OLD.is_read IS NOT NEW.is_read
      OR OLD.folder_id IS NOT NEW.folder_id)
BEGIN
    UPDATE sync_state SET tick = tick + 1 WHERE id = 1;
    UPDATE sync_units SET r = 0, t = (SELECT tick FROM sync_state WHERE id = 1), at = {NOW_MS}
     WHERE item = NEW.id
       AND ((unit = 3 AND (OLD.subject IS NOT NEW.subject OR OLD.sender IS NOT NEW.sender
                           OR OLD.received_at IS NOT NEW.received_at
                           OR OLD.headers IS NOT NEW.headers OR OLD.body IS NOT NEW.body))
         OR (unit = 4 AND OLD.is_read IS NOT NEW.is_read)
         OR (unit = 5 AND OLD.folder_id IS NOT NEW.folder_id));
END;

CREATE TRIGGER messages_track_delete AFTER DELETE ON messages
WHEN (SELECT applying FROM sync_state WHERE id = 1) = 0
BEGIN
    UPDATE sync_state SET tick = tick + 1 WHERE id = 1;
    DELETE FROM sync_units WHERE item = OLD.id;
    INSERT INTO sync_units (item, unit, r, t, at, phase)
        SELECT OLD.id, 8, 0, tick, {NOW_MS}, 4 FROM sync_state WHERE id = 1;
    UPDATE sync_items SET deleted_at = {NOW_S} WHERE id = OLD.id;
END;
"#;

/// Tombstone cleanup and full enumeration (seed 001, "Cleaning Up Deleted Items", "Recovering an
/// Out-of-Date Replica").
const MIGRATION_2: &str = r#"
-- Cleanup asks for "tombstones deleted at or before T": this partial index holds tombstones only,
-- so a cleanup with nothing to do reads one index page, whatever the store's size.
CREATE INDEX sync_items_by_deletion ON sync_items(deleted_at) WHERE deleted_at IS NOT NULL;

-- A full enumeration from `source` into this store, in progress: how far it got (the pass and the
-- last item id done, written with each batch), the source knowledge it started with, and the
-- versions this store did not apply along the way. Removed when the enumeration ends.
CREATE TABLE sync_full_enumeration (
    source   TEXT PRIMARY KEY NOT NULL,
    kind     INTEGER NOT NULL,
    after    TEXT,
    base     TEXT NOT NULL,
    excluded TEXT NOT NULL DEFAULT '[]'
) WITHOUT ROWID;

-- Folders a full enumeration found deleted at the source; dropped at its end, once the messages
-- pass has emptied them.
CREATE TABLE sync_full_drops (
    source TEXT NOT NULL,
    item   TEXT NOT NULL,
    PRIMARY KEY (source, item)
) WITHOUT ROWID;
"#;

/// Filtered and header-only sync (seed 001's filter, seed 002's header download).
const MIGRATION_3: &str = r#"
-- What this store knows of a source *through a scope* (a partnership's folders and bodies): the
-- changes it was sent, and the ones it was told lie outside the scope. Read only by sessions of
-- that scope; the store's own knowledge claims only what it holds.
CREATE TABLE sync_scoped_knowledge (
    source    TEXT NOT NULL,
    scope     TEXT NOT NULL,
    knowledge TEXT NOT NULL,
    PRIMARY KEY (source, scope)
) WITHOUT ROWID;

-- Messages held without their body (header-only sync). Their content version is not part of the
-- store's knowledge, so a session with bodies sends it again, and the body with it.
CREATE TABLE sync_headers_only (
    item TEXT PRIMARY KEY NOT NULL
) WITHOUT ROWID;

-- A header-only copy has no body to edit: its content changes only by sync, so every content
-- version comes from a store that holds the body.
CREATE TRIGGER messages_headers_only_content BEFORE UPDATE ON messages
WHEN (SELECT applying FROM sync_state WHERE id = 1) = 0
 AND (OLD.subject IS NOT NEW.subject OR OLD.sender IS NOT NEW.sender
      OR OLD.received_at IS NOT NEW.received_at OR OLD.headers IS NOT NEW.headers
      OR OLD.body IS NOT NEW.body)
 AND EXISTS (SELECT 1 FROM sync_headers_only WHERE item = NEW.id)
BEGIN SELECT RAISE(ABORT, 'icsync: this message is a header-only copy (bodies = false); its content changes only where the body is held'); END;

CREATE TRIGGER messages_headers_only_gone AFTER DELETE ON messages
BEGIN DELETE FROM sync_headers_only WHERE item = OLD.id; END;
"#;

/// The sync metadata keyed in arrival order. Migrations 1 to 3 keyed `sync_items` and
/// `sync_units` by the random 32-hex global id: a batch of new items then rewrote most leaf pages
/// of both trees, most of an import's I/O, growing with the store. Now `sync_items` is a rowid
/// table (`rid`, handed out in arrival order) with one unique index on `id`, and `sync_units` is
/// keyed by `(item rid, unit)`, so the pages a batch writes are mostly appended. The tracking
/// triggers keep their semantics (one tick per row change) and address units by the item's rid;
/// an id created again over its tombstone keeps its rid.
const MIGRATION_4: &str = r#"
DROP TRIGGER folders_track_insert;
DROP TRIGGER folders_track_update;
DROP TRIGGER folders_track_delete;
DROP TRIGGER messages_track_insert;
DROP TRIGGER messages_track_update;
DROP TRIGGER messages_track_delete;

CREATE TABLE sync_items_v3 (
    rid        INTEGER PRIMARY KEY,
    id         TEXT NOT NULL,
    kind       INTEGER NOT NULL,
    created_r  INTEGER NOT NULL REFERENCES sync_replicas(idx),
    created_t  INTEGER NOT NULL,
    deleted_at INTEGER
);
-- Existing items in their order of first version (the nearest to arrival order there is).
INSERT INTO sync_items_v3 (id, kind, created_r, created_t, deleted_at)
    SELECT i.id, i.kind, i.created_r, i.created_t, i.deleted_at FROM sync_items i
    ORDER BY (SELECT min(u.at) FROM sync_units u WHERE u.item = i.id), i.id;

CREATE TABLE sync_units_v3 (
    item  INTEGER NOT NULL REFERENCES sync_items_v3(rid),
    unit  INTEGER NOT NULL,
    r     INTEGER NOT NULL REFERENCES sync_replicas(idx),
    t     INTEGER NOT NULL,
    at    INTEGER NOT NULL,
    phase INTEGER NOT NULL,
    PRIMARY KEY (item, unit)
) WITHOUT ROWID;
INSERT INTO sync_units_v3 (item, unit, r, t, at, phase)
    SELECT i.rid, u.unit, u.r, u.t, u.at, u.phase
    FROM sync_units u JOIN sync_items_v3 i ON i.id = u.item
    ORDER BY i.rid, u.unit;

DROP TABLE sync_units;
DROP TABLE sync_items;
ALTER TABLE sync_items_v3 RENAME TO sync_items;
ALTER TABLE sync_units_v3 RENAME TO sync_units;

-- The one random-key tree of the sync metadata: an item's rid by its global id.
CREATE UNIQUE INDEX sync_items_by_id ON sync_items(id);
CREATE INDEX sync_items_by_deletion ON sync_items(deleted_at) WHERE deleted_at IS NOT NULL;
-- Enumeration walks this index: cost follows the changes returned, not the store's size. It also
-- holds the primary key (item, unit), so it answers `item, t` without the table.
CREATE INDEX sync_units_by_version ON sync_units(phase, r, t);

-- Tracking of local changes: one tick per row change. An id inserted again (over its tombstone)
-- keeps its row and rid and becomes a new item: new creation version, live, new units.
CREATE TRIGGER folders_track_insert AFTER INSERT ON folders
WHEN (SELECT applying FROM sync_state WHERE id = 1) = 0
BEGIN
    UPDATE sync_state SET tick = tick + 1 WHERE id = 1;
    INSERT INTO sync_items (id, kind, created_r, created_t, deleted_at)
        SELECT NEW.id, 0, 0, tick, NULL FROM sync_state WHERE id = 1
        ON CONFLICT (id) DO UPDATE SET kind = excluded.kind, created_r = excluded.created_r,
            created_t = excluded.created_t, deleted_at = NULL;
    DELETE FROM sync_units WHERE item = (SELECT rid FROM sync_items WHERE id = NEW.id);
    INSERT INTO sync_units (item, unit, r, t, at, phase)
        SELECT i.rid, 1, 0, s.tick, {NOW_MS}, 1 FROM sync_state s, sync_items i
         WHERE s.id = 1 AND i.id = NEW.id
        UNION ALL SELECT i.rid, 2, 0, s.tick, {NOW_MS}, 1 FROM sync_state s, sync_items i
         WHERE s.id = 1 AND i.id = NEW.id;
END;

CREATE TRIGGER folders_track_update AFTER UPDATE ON folders
WHEN (SELECT applying FROM sync_state WHERE id = 1) = 0
 AND (OLD.name IS NOT NEW.name OR OLD.parent_id IS NOT NEW.parent_id)
BEGIN
    UPDATE sync_state SET tick = tick + 1 WHERE id = 1;
    UPDATE sync_units SET r = 0, t = (SELECT tick FROM sync_state WHERE id = 1), at = {NOW_MS}
     WHERE item = (SELECT rid FROM sync_items WHERE id = NEW.id)
       AND ((unit = 1 AND OLD.name IS NOT NEW.name) OR (unit = 2 AND OLD.parent_id IS NOT NEW.parent_id));
END;

CREATE TRIGGER folders_track_delete AFTER DELETE ON folders
WHEN (SELECT applying FROM sync_state WHERE id = 1) = 0
BEGIN
    UPDATE sync_state SET tick = tick + 1 WHERE id = 1;
    DELETE FROM sync_units WHERE item = (SELECT rid FROM sync_items WHERE id = OLD.id);
    INSERT INTO sync_units (item, unit, r, t, at, phase)
        SELECT i.rid, 9, 0, s.tick, {NOW_MS}, 5 FROM sync_state s, sync_items i
         WHERE s.id = 1 AND i.id = OLD.id;
    UPDATE sync_items SET deleted_at = {NOW_S} WHERE id = OLD.id;
END;

CREATE TRIGGER messages_track_insert AFTER INSERT ON messages
WHEN (SELECT applying FROM sync_state WHERE id = 1) = 0
BEGIN
    UPDATE sync_state SET tick = tick + 1 WHERE id = 1;
    INSERT INTO sync_items (id, kind, created_r, created_t, deleted_at)
        SELECT NEW.id, 1, 0, tick, NULL FROM sync_state WHERE id = 1
        ON CONFLICT (id) DO UPDATE SET kind = excluded.kind, created_r = excluded.created_r,
            created_t = excluded.created_t, deleted_at = NULL;
    DELETE FROM sync_units WHERE item = (SELECT rid FROM sync_items WHERE id = NEW.id);
    INSERT INTO sync_units (item, unit, r, t, at, phase)
        SELECT i.rid, 3, 0, s.tick, {NOW_MS}, 2 FROM sync_state s, sync_items i
         WHERE s.id = 1 AND i.id = NEW.id
        UNION ALL SELECT i.rid, 4, 0, s.tick, {NOW_MS}, 3 FROM sync_state s, sync_items i
         WHERE s.id = 1 AND i.id = NEW.id
        UNION ALL SELECT i.rid, 5, 0, s.tick, {NOW_MS}, 2 FROM sync_state s, sync_items i
         WHERE s.id = 1 AND i.id = NEW.id;
END;

CREATE TRIGGER messages_track_update AFTER UPDATE ON messages
WHEN (SELECT applying FROM sync_state WHERE id = 1) = 0
 AND (OLD.subject IS NOT NEW.subject OR OLD.sender IS NOT NEW.sender
      OR OLD.received_at IS NOT NEW.received_at OR OLD.headers IS NOT NEW.headers
      OR OLD.body IS NOT NEW.body OR OLD.is_read IS NOT NEW.is_read
      OR OLD.folder_id IS NOT NEW.folder_id)
BEGIN
    UPDATE sync_state SET tick = tick + 1 WHERE id = 1;
    UPDATE sync_units SET r = 0, t = (SELECT tick FROM sync_state WHERE id = 1), at = {NOW_MS}
     WHERE item = (SELECT rid FROM sync_items WHERE id = NEW.id)
       AND ((unit = 3 AND (OLD.subject IS NOT NEW.subject OR OLD.sender IS NOT NEW.sender
                           OR OLD.received_at IS NOT NEW.received_at
                           OR OLD.headers IS NOT NEW.headers OR OLD.body IS NOT NEW.body))
         OR (unit = 4 AND OLD.is_read IS NOT NEW.is_read)
         OR (unit = 5 AND OLD.folder_id IS NOT NEW.folder_id));
END;

CREATE TRIGGER messages_track_delete AFTER DELETE ON messages
WHEN (SELECT applying FROM sync_state WHERE id = 1) = 0
BEGIN
    UPDATE sync_state SET tick = tick + 1 WHERE id = 1;
    DELETE FROM sync_units WHERE item = (SELECT rid FROM sync_items WHERE id = OLD.id);
    INSERT INTO sync_units (item, unit, r, t, at, phase)
        SELECT i.rid, 8, 0, s.tick, {NOW_MS}, 4 FROM sync_state s, sync_items i
         WHERE s.id = 1 AND i.id = OLD.id;
    UPDATE sync_items SET deleted_at = {NOW_S} WHERE id = OLD.id;
END;
"#;

/// Migration 5: the messages' body check without an IN list of three constants. SQLite codes an
/// IN list of more than two constants as a throwaway index, built at every execution of the
/// statement, so every INSERT into `messages` (an import's or an application's) built one and
/// dropped it: ~8 % of the collector's instructions in an initial sync (callgrind,
/// `bench/PROFILE.md`). The rule is the same, so every row stays valid and only the table's
/// schema text changes, in place, as SQLite documents for a change that does not touch what is
/// stored ("ALTER TABLE", making other kinds of table schema changes). `Store::migrate` then
/// checks the new text is there and bumps `schema_version`, so every connection reads it.
const MIGRATION_5: &str = r#"
PRAGMA writable_schema = ON;
UPDATE sqlite_schema
   SET sql = replace(sql,
       'CHECK (typeof(body) IN (''text'', ''blob'', ''null''))',
       'CHECK (body IS NULL OR typeof(body) IN (''text'', ''blob''))')
 WHERE type = 'table' AND name = 'messages';
PRAGMA writable_schema = OFF;
"#;

/// A live message linked to its item row through a private column, so an import writes one
/// tree keyed by random ids per message, not two. Up to migration 5 every item's id was in
/// `sync_items_by_id`, a second random-key tree beside `messages`' own id index: each batch
/// commit rewrote most leaves of both, and together they overflowed the import's page cache
/// (`bench/PROFILE.md`, round four: the index alone cost a quarter of an initial sync).
///
/// Now `messages.sync_rid` holds the rid of a live message's item row, and a live message is
/// found through the id index `messages` has anyway. `sync_items_by_id` holds folders and
/// tombstones only (a partial index, small: folders are few and tombstones are cleaned up), so a
/// lookup by id asks `messages` first, then that index. Keying the metadata by `messages`' rowid
/// instead would not be safe: `VACUUM` may renumber the rowids of a table without an INTEGER
/// PRIMARY KEY, and an `INSERT OR REPLACE` gives the row a new one; `sync_items.rid` is an
/// INTEGER PRIMARY KEY, which `VACUUM` keeps.
///
/// *Invariant:* every `messages` row has a `sync_rid`, naming a live message item with its id;
/// every other item (a folder, a tombstone) is in `sync_items_by_id`; an id has one item row.
///
/// Applications never write the column (PRODUCT.md allows more columns): an INSERT that gives
/// it, or an UPDATE that changes it, is refused. An application's `INSERT OR REPLACE` deletes the
/// row it replaces without firing delete triggers, so `messages_track_replace` notes that row's
/// item first (in `sync_replaced`, emptied by the next insert) and the insert keeps it: the id
/// stays one item, as before. Filling the column rewrites every message row once.
const MIGRATION_6: &str = r#"
DROP TRIGGER folders_track_insert;
DROP TRIGGER folders_track_update;
DROP TRIGGER folders_track_delete;
DROP TRIGGER messages_track_insert;
DROP TRIGGER messages_track_update;
DROP TRIGGER messages_track_delete;

ALTER TABLE messages ADD COLUMN sync_rid INTEGER;
UPDATE messages SET sync_rid = (SELECT i.rid FROM sync_items i WHERE i.id = messages.id);

DROP INDEX sync_items_by_id;
-- Folders and tombstones: a query uses it when its WHERE implies `kind = 0 OR deleted_at IS NOT
-- NULL` (e.g. `kind = 0`, `deleted_at IS NOT NULL`, or the whole condition).
CREATE UNIQUE INDEX sync_items_by_id ON sync_items(id) WHERE kind = 0 OR deleted_at IS NOT NULL;

-- The item of the live message an application's INSERT OR REPLACE is about to replace.
CREATE TABLE sync_replaced (
    id  TEXT PRIMARY KEY NOT NULL,
    rid INTEGER NOT NULL
) WITHOUT ROWID;

CREATE TRIGGER messages_sync_rid_private BEFORE INSERT ON messages
WHEN NEW.sync_rid IS NOT NULL AND (SELECT applying FROM sync_state WHERE id = 1) = 0
BEGIN SELECT RAISE(ABORT, 'icsync: messages.sync_rid is the store''s own column; leave it out of INSERTs'); END;

CREATE TRIGGER messages_sync_rid_fixed BEFORE UPDATE OF sync_rid ON messages
WHEN OLD.sync_rid IS NOT NULL AND NEW.sync_rid IS NOT OLD.sync_rid
 AND (SELECT applying FROM sync_state WHERE id = 1) = 0
BEGIN SELECT RAISE(ABORT, 'icsync: messages.sync_rid is the store''s own column and cannot change'); END;

CREATE TRIGGER messages_track_replace BEFORE INSERT ON messages
WHEN (SELECT applying FROM sync_state WHERE id = 1) = 0
BEGIN
    DELETE FROM sync_replaced;
    INSERT INTO sync_replaced (id, rid)
        SELECT id, sync_rid FROM messages WHERE id = NEW.id AND sync_rid IS NOT NULL;
END;

-- Tracking of local changes: one tick per row change. An id inserted again (over its tombstone,
-- or over its live row by INSERT OR REPLACE) keeps its item row and rid and becomes a new item:
-- new creation version, live, new units.
CREATE TRIGGER folders_track_insert AFTER INSERT ON folders
WHEN (SELECT applying FROM sync_state WHERE id = 1) = 0
BEGIN
    UPDATE sync_state SET tick = tick + 1 WHERE id = 1;
    INSERT INTO sync_items (id, kind, created_r, created_t, deleted_at)
        SELECT NEW.id, 0, 0, tick, NULL FROM sync_state WHERE id = 1
        ON CONFLICT (id) WHERE kind = 0 OR deleted_at IS NOT NULL
        DO UPDATE SET kind = excluded.kind, created_r = excluded.created_r,
            created_t = excluded.created_t, deleted_at = NULL;
    DELETE FROM sync_units WHERE item = (SELECT rid FROM sync_items WHERE id = NEW.id AND kind = 0);
    INSERT INTO sync_units (item, unit, r, t, at, phase)
        SELECT i.rid, 1, 0, s.tick, {NOW_MS}, 1 FROM sync_state s, sync_items i
         WHERE s.id = 1 AND i.id = NEW.id AND i.kind = 0
        UNION ALL SELECT i.rid, 2, 0, s.tick, {NOW_MS}, 1 FROM sync_state s, sync_items i
         WHERE s.id = 1 AND i.id = NEW.id AND i.kind = 0;
END;

CREATE TRIGGER folders_track_update AFTER UPDATE ON folders
WHEN (SELECT applying FROM sync_state WHERE id = 1) = 0
 AND (OLD.name IS NOT NEW.name OR OLD.parent_id IS NOT NEW.parent_id)
BEGIN
    UPDATE sync_state SET tick = tick + 1 WHERE id = 1;
    UPDATE sync_units SET r = 0, t = (SELECT tick FROM sync_state WHERE id = 1), at = {NOW_MS}
     WHERE item = (SELECT rid FROM sync_items WHERE id = NEW.id AND kind = 0)
       AND ((unit = 1 AND OLD.name IS NOT NEW.name) OR (unit = 2 AND OLD.parent_id IS NOT NEW.parent_id));
END;

CREATE TRIGGER folders_track_delete AFTER DELETE ON folders
WHEN (SELECT applying FROM sync_state WHERE id = 1) = 0
BEGIN
    UPDATE sync_state SET tick = tick + 1 WHERE id = 1;
    DELETE FROM sync_units WHERE item = (SELECT rid FROM sync_items WHERE id = OLD.id AND kind = 0);
    INSERT INTO sync_units (item, unit, r, t, at, phase)
        SELECT i.rid, 9, 0, s.tick, {NOW_MS}, 5 FROM sync_state s, sync_items i
         WHERE s.id = 1 AND i.id = OLD.id AND i.kind = 0;
    UPDATE sync_items SET deleted_at = {NOW_S} WHERE id = OLD.id AND kind = 0;
END;

CREATE TRIGGER messages_track_insert AFTER INSERT ON messages
WHEN (SELECT applying FROM sync_state WHERE id = 1) = 0
BEGIN
    UPDATE sync_state SET tick = tick + 1 WHERE id = 1;
    -- A new item row, unless the id has one: the one of the row an INSERT OR REPLACE replaced,
    -- or a tombstone.
    INSERT INTO sync_items (id, kind, created_r, created_t, deleted_at)
        SELECT NEW.id, 1, 0, s.tick, NULL FROM sync_state s
         WHERE s.id = 1
           AND NOT EXISTS (SELECT 1 FROM sync_replaced WHERE id = NEW.id)
           AND NOT EXISTS (SELECT 1 FROM sync_items WHERE id = NEW.id AND deleted_at IS NOT NULL);
    -- The row's link, in one write of the row: last_insert_rowid() is the INSERT's just above,
    -- and is taken only when it inserted (when the id had no item row).
    UPDATE messages SET sync_rid = coalesce(
            (SELECT rid FROM sync_replaced WHERE id = NEW.id),
            (SELECT rid FROM sync_items WHERE id = NEW.id AND deleted_at IS NOT NULL),
            last_insert_rowid())
     WHERE rowid = NEW.rowid;
    DELETE FROM sync_replaced;
    -- An item row the id had becomes the new item (a new item's row already is: no tick is
    -- given out twice, so only it has creation version (0, tick)).
    UPDATE sync_items SET kind = 1, created_r = 0,
           created_t = (SELECT tick FROM sync_state WHERE id = 1), deleted_at = NULL
     WHERE rid = (SELECT sync_rid FROM messages WHERE rowid = NEW.rowid)
       AND (created_r <> 0 OR created_t <> (SELECT tick FROM sync_state WHERE id = 1)
            OR deleted_at IS NOT NULL);
    DELETE FROM sync_units WHERE item = (SELECT sync_rid FROM messages WHERE rowid = NEW.rowid);
    INSERT INTO sync_units (item, unit, r, t, at, phase)
        SELECT m.sync_rid, 3, 0, s.tick, {NOW_MS}, 2 FROM sync_state s, messages m
         WHERE s.id = 1 AND m.rowid = NEW.rowid
        UNION ALL SELECT m.sync_rid, 4, 0, s.tick, {NOW_MS}, 3 FROM sync_state s, messages m
         WHERE s.id = 1 AND m.rowid = NEW.rowid
        UNION ALL SELECT m.sync_rid, 5, 0, s.tick, {NOW_MS}, 2 FROM sync_state s, messages m
         WHERE s.id = 1 AND m.rowid = NEW.rowid;
END;

CREATE TRIGGER messages_track_update AFTER UPDATE ON messages
WHEN (SELECT applying FROM sync_state WHERE id = 1) = 0
 AND (OLD.subject IS NOT NEW.subject OR OLD.sender IS NOT NEW.sender
      OR OLD.received_at IS NOT NEW.received_at OR OLD.headers IS NOT NEW.headers
      OR OLD.body IS NOT NEW.body OR OLD.is_read IS NOT NEW.is_read
      OR OLD.folder_id IS NOT NEW.folder_id)
BEGIN
    UPDATE sync_state SET tick = tick + 1 WHERE id = 1;
    UPDATE sync_units SET r = 0, t = (SELECT tick FROM sync_state WHERE id = 1), at = {NOW_MS}
     WHERE item = NEW.sync_rid
       AND ((unit = 3 AND (OLD.subject IS NOT NEW.subject OR OLD.sender IS NOT NEW.sender
                           OR OLD.received_at IS NOT NEW.received_at
                           OR OLD.headers IS NOT NEW.headers OR OLD.body IS NOT NEW.body))
         OR (unit = 4 AND OLD.is_read IS NOT NEW.is_read)
         OR (unit = 5 AND OLD.folder_id IS NOT NEW.folder_id));
END;

CREATE TRIGGER messages_track_delete AFTER DELETE ON messages
WHEN (SELECT applying FROM sync_state WHERE id = 1) = 0
BEGIN
    UPDATE sync_state SET tick = tick + 1 WHERE id = 1;
    DELETE FROM sync_units WHERE item = OLD.sync_rid;
    INSERT INTO sync_units (item, unit, r, t, at, phase)
        SELECT OLD.sync_rid, 8, 0, tick, {NOW_MS}, 4 FROM sync_state WHERE id = 1;
    UPDATE sync_items SET deleted_at = {NOW_S} WHERE rid = OLD.sync_rid;
END;
"#;

/// Unit rows only for units changed since the item's creation. A new item's units all carry its
/// creation version, and up to migration 6 each got a `sync_units` row anyway: three rows and
/// three version-index entries per new message, most of what an import wrote beside the message
/// itself (`bench/PROFILE.md`, round five). Now a live item's unit without a row carries the item's
/// creation version and `sync_items.created_at` (when the creation was made, unix ms); a row is
/// written at the unit's first change (or when an import brings a unit whose version or time is
/// not the creation's), and a tombstone's unit is always a row.
///
/// `sync_live_units` lists the live units of each kind with their phase, and the view
/// `sync_unit_versions` is every unit's version as before (rows, then creation versions of live
/// units without one), for readers that want the old table's shape. Enumeration walks
/// `sync_items_by_creation` beside `sync_units_by_version`, both by tick.
///
/// *Invariant:* a live item's unit has a `sync_units` row exactly when its version or time
/// differs from the item's creation, or was written since (a row equal to the creation is
/// allowed and means the same).
const MIGRATION_7: &str = r#"
DROP TRIGGER folders_track_insert;
DROP TRIGGER folders_track_update;
DROP TRIGGER messages_track_insert;
DROP TRIGGER messages_track_update;

CREATE TABLE sync_live_units (
    kind  INTEGER NOT NULL,
    unit  INTEGER NOT NULL,
    phase INTEGER NOT NULL,
    PRIMARY KEY (kind, unit)
) WITHOUT ROWID;
INSERT INTO sync_live_units (kind, unit, phase) VALUES (0, 1, 1), (0, 2, 1), (1, 3, 2), (1, 4, 3), (1, 5, 2);

ALTER TABLE sync_items ADD COLUMN created_at INTEGER NOT NULL DEFAULT 0;
UPDATE sync_items SET created_at = coalesce(
    (SELECT min(u.at) FROM sync_units u
      WHERE u.item = sync_items.rid AND u.r = sync_items.created_r AND u.t = sync_items.created_t),
    0)
 WHERE deleted_at IS NULL;
DELETE FROM sync_units
 WHERE EXISTS (SELECT 1 FROM sync_items i
                WHERE i.rid = sync_units.item AND i.deleted_at IS NULL
                  AND i.created_r = sync_units.r AND i.created_t = sync_units.t
                  AND i.created_at = sync_units.at);

-- Live items by creation version: enumeration finds here the units that have no row.
CREATE INDEX sync_items_by_creation ON sync_items(created_r, created_t) WHERE deleted_at IS NULL;

CREATE VIEW sync_unit_versions (item, unit, r, t, at, phase) AS
    SELECT item, unit, r, t, at, phase FROM sync_units
    UNION ALL
    SELECT i.rid, k.unit, i.created_r, i.created_t, i.created_at, k.phase
      FROM sync_items i JOIN sync_live_units k ON k.kind = i.kind
     WHERE i.deleted_at IS NULL
       AND NOT EXISTS (SELECT 1 FROM sync_units u WHERE u.item = i.rid AND u.unit = k.unit);

-- Tracking of local changes: one tick per row change. A new item has no unit rows; a changed
-- unit gets one (or has it replaced) at the change's tick.
CREATE TRIGGER folders_track_insert AFTER INSERT ON folders
WHEN (SELECT applying FROM sync_state WHERE id = 1) = 0
BEGIN
    UPDATE sync_state SET tick = tick + 1 WHERE id = 1;
    INSERT INTO sync_items (id, kind, created_r, created_t, deleted_at, created_at)
        SELECT NEW.id, 0, 0, tick, NULL, {NOW_MS} FROM sync_state WHERE id = 1
        ON CONFLICT (id) WHERE kind = 0 OR deleted_at IS NOT NULL
        DO UPDATE SET kind = excluded.kind, created_r = excluded.created_r,
            created_t = excluded.created_t, deleted_at = NULL, created_at = excluded.created_at;
    DELETE FROM sync_units WHERE item = (SELECT rid FROM sync_items WHERE id = NEW.id AND kind = 0);
END;

CREATE TRIGGER folders_track_update AFTER UPDATE ON folders
WHEN (SELECT applying FROM sync_state WHERE id = 1) = 0
 AND (OLD.name IS NOT NEW.name OR OLD.parent_id IS NOT NEW.parent_id)
BEGIN
    UPDATE sync_state SET tick = tick + 1 WHERE id = 1;
    INSERT INTO sync_units (item, unit, r, t, at, phase)
        SELECT i.rid, k.unit, 0, s.tick, {NOW_MS}, k.phase
          FROM sync_state s, sync_items i, sync_live_units k
         WHERE s.id = 1 AND i.id = NEW.id AND i.kind = 0 AND k.kind = 0
           AND ((k.unit = 1 AND OLD.name IS NOT NEW.name)
             OR (k.unit = 2 AND OLD.parent_id IS NOT NEW.parent_id))
        ON CONFLICT (item, unit) DO UPDATE SET r = excluded.r, t = excluded.t, at = excluded.at;
END;

CREATE TRIGGER messages_track_insert AFTER INSERT ON messages
WHEN (SELECT applying FROM sync_state WHERE id = 1) = 0
BEGIN
    UPDATE sync_state SET tick = tick + 1 WHERE id = 1;
    -- A new item row, unless the id has one: the one of the row an INSERT OR REPLACE replaced,
    -- or a tombstone.
    INSERT INTO sync_items (id, kind, created_r, created_t, deleted_at, created_at)
        SELECT NEW.id, 1, 0, s.tick, NULL, {NOW_MS} FROM sync_state s
         WHERE s.id = 1
           AND NOT EXISTS (SELECT 1 FROM sync_replaced WHERE id = NEW.id)
           AND NOT EXISTS (SELECT 1 FROM sync_items WHERE id = NEW.id AND deleted_at IS NOT NULL);
    -- The row's link, in one write of the row: last_insert_rowid() is the INSERT's just above,
    -- and is taken only when it inserted (when the id had no item row).
    UPDATE messages SET sync_rid = coalesce(
            (SELECT rid FROM sync_replaced WHERE id = NEW.id),
            (SELECT rid FROM sync_items WHERE id = NEW.id AND deleted_at IS NOT NULL),
            last_insert_rowid())
     WHERE rowid = NEW.rowid;
    DELETE FROM sync_replaced;
    -- An item row the id had becomes the new item, without its old units (a new item's row
    -- already is: no tick is given out twice, so only it has creation version (0, tick)).
    UPDATE sync_items SET kind = 1, created_r = 0,
           created_t = (SELECT tick FROM sync_state WHERE id = 1), deleted_at = NULL,
           created_at = {NOW_MS}
     WHERE rid = (SELECT sync_rid FROM messages WHERE rowid = NEW.rowid)
       AND (created_r <> 0 OR created_t <> (SELECT tick FROM sync_state WHERE id = 1)
            OR deleted_at IS NOT NULL);
    DELETE FROM sync_units WHERE item = (SELECT sync_rid FROM messages WHERE rowid = NEW.rowid);
END;

CREATE TRIGGER messages_track_update AFTER UPDATE ON messages
WHEN (SELECT applying FROM sync_state WHERE id = 1) = 0
 AND (OLD.subject IS NOT NEW.subject OR OLD.sender IS NOT NEW.sender
      OR OLD.received_at IS NOT NEW.received_at OR OLD.headers IS NOT NEW.headers
      OR OLD.body IS NOT NEW.body OR OLD.is_read IS NOT NEW.is_read
      OR OLD.folder_id IS NOT NEW.folder_id)
BEGIN
    UPDATE sync_state SET tick = tick + 1 WHERE id = 1;
    INSERT INTO sync_units (item, unit, r, t, at, phase)
        SELECT NEW.sync_rid, k.unit, 0, s.tick, {NOW_MS}, k.phase
          FROM sync_state s, sync_live_units k
         WHERE s.id = 1 AND k.kind = 1
           AND ((k.unit = 3 AND (OLD.subject IS NOT NEW.subject OR OLD.sender IS NOT NEW.sender
                                 OR OLD.received_at IS NOT NEW.received_at
                                 OR OLD.headers IS NOT NEW.headers OR OLD.body IS NOT NEW.body))
             OR (k.unit = 4 AND OLD.is_read IS NOT NEW.is_read)
             OR (k.unit = 5 AND OLD.folder_id IS NOT NEW.folder_id))
        ON CONFLICT (item, unit) DO UPDATE SET r = excluded.r, t = excluded.t, at = excluded.at;
END;
"#;

/// Live items by kind before creation version (`bench/PROFILE.md`, round twelve). Enumeration
/// looks for the live items created in a tick range whose units of one phase have no row; a
/// phase's live units are one kind's (folders' name and parent, messages' content, location and
/// read state), so the range it walks is that kind's. Keyed by creation version alone, the
/// hierarchy phase of an initial sync walked every message to find the folders (~55 ms per
/// 100k messages, before the first batch left), and so did each phase without live units.
const MIGRATION_8: &str = r#"
DROP INDEX sync_items_by_creation;
CREATE INDEX sync_items_by_creation ON sync_items(kind, created_r, created_t)
    WHERE deleted_at IS NULL;
"#;

/// Live messages by their item's rid. An export reads each message it sends through its item
/// row (`items::CHANGE_BY_RID`): by `messages`' id index that is a lookup at a random place of
/// the largest index when ids are random, and the index's leaves and the messages' pages pushed
/// each other out of the synchronizer's page cache (`bench/PROFILE.md`, round seventeen). Rids
/// grow as items arrive, so this index is read in the order the messages lie, and an import
/// appends to it. Building it reads every message once, at a store's first open by this build.
const MIGRATION_9: &str = r#"
CREATE INDEX messages_by_sync_rid ON messages(sync_rid);
"#;

/// The store's own triggers on `messages` (migrations 1, 3, 4, 6 and 7). Any other trigger there is an
/// application's, which imports must fire (see `store::fresh`).
pub const OWN_MESSAGE_TRIGGERS: &[&str] = &[
    "messages_folder_exists",
    "messages_move_exists",
    "messages_id_fixed",
    "messages_track_insert",
    "messages_track_update",
    "messages_track_delete",
    "messages_headers_only_content",
    "messages_headers_only_gone",
    "messages_sync_rid_private",
    "messages_sync_rid_fixed",
    "messages_track_replace",
];

/// The body check as migration 5 leaves it in the `messages` table's schema text.
pub const BODY_CHECK_5: &str = "CHECK (body IS NULL OR typeof(body) IN ('text', 'blob'))";

/// The SQL of migration `index` (0-based) with its placeholders filled in.
pub fn migration_sql(index: usize) -> Option<String> {
    MIGRATIONS
        .get(index)
        .map(|sql| sql.replace("{NOW_MS}", NOW_MS).replace("{NOW_S}", NOW_S))
}
