//! The state file's schema: append-only migrations; `user_version` counts those applied.

pub const MIGRATIONS: &[&str] = &[
    r#"
CREATE TABLE sync_state (
    partnership TEXT NOT NULL,
    direction   TEXT NOT NULL,              -- "source->destination", the stores' config names
    knowledge   TEXT NOT NULL,              -- destination knowledge last acknowledged (JSON)
    updated_at  INTEGER NOT NULL,           -- unix ms
    PRIMARY KEY (partnership, direction)
);
CREATE TABLE sessions (
    id          INTEGER PRIMARY KEY,
    partnership TEXT NOT NULL,
    direction   TEXT NOT NULL,
    started_at  INTEGER NOT NULL,
    ended_at    INTEGER,
    result      TEXT NOT NULL,              -- running | completed | failed
    reason      TEXT,
    phase       TEXT,
    batches     INTEGER NOT NULL DEFAULT 0,
    sent        INTEGER NOT NULL DEFAULT 0,
    applied     INTEGER NOT NULL DEFAULT 0,
    conflicts   INTEGER NOT NULL DEFAULT 0,
    errors      INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX sessions_by_partnership ON sessions (partnership, id);
CREATE TABLE replicas (
    store       TEXT PRIMARY KEY,           -- the store's name in the config
    replica     TEXT NOT NULL,              -- its replica id, as its synchronizer says
    seen_at     INTEGER NOT NULL
);
CREATE TABLE item_errors (
    partnership TEXT NOT NULL,
    direction   TEXT NOT NULL,
    item        TEXT NOT NULL,
    reason      TEXT NOT NULL,
    seen_at     INTEGER NOT NULL,
    PRIMARY KEY (partnership, direction, item)
);
"#,
    // 2: what `agent run` plans for each partnership, for `agent status`.
    r#"
CREATE TABLE schedule (
    partnership   TEXT PRIMARY KEY,
    next_run_at   INTEGER,                  -- unix ms of the next scheduled run; NULL: none
    attempt       INTEGER NOT NULL DEFAULT 0, -- failed attempts in a row being retried; 0: none
    retry_at      INTEGER,                  -- unix ms of the retry, while retrying
    retry_wait_ms INTEGER,                  -- the backoff chosen for that retry
    retry_reason  TEXT,                     -- why the last attempt failed
    updated_at    INTEGER NOT NULL          -- unix ms of this plan
);
"#,
    // 3: the operator's queue of deferred conflicts (`agent conflicts`, `agent resolve`).
    r#"
CREATE TABLE conflicts (
    id             INTEGER PRIMARY KEY,       -- what `agent resolve ID` names
    partnership    TEXT NOT NULL,
    item           TEXT NOT NULL,             -- the item's global id
    kind           TEXT NOT NULL,             -- folder | message
    unit           TEXT NOT NULL,             -- the change unit (JSON name, e.g. "content")
    label          TEXT NOT NULL,             -- folder name or message subject
    local_store    TEXT NOT NULL,             -- the store that deferred it first ("local")
    remote_store   TEXT NOT NULL,             -- the other store ("remote")
    local_version  TEXT NOT NULL,             -- JSON version {replica, tick}
    remote_version TEXT NOT NULL,
    local_value    TEXT NOT NULL,             -- one-line summaries of both values
    remote_value   TEXT NOT NULL,
    first_seen     INTEGER NOT NULL,          -- unix ms
    last_seen      INTEGER NOT NULL,
    times_seen     INTEGER NOT NULL,          -- sessions that met it
    status         TEXT NOT NULL CHECK (status IN ('open', 'resolving', 'resolved')),
    winner         TEXT,                      -- JSON version the operator chose; NULL while open
    resolved_at    INTEGER                    -- unix ms the choice reached a store
);
CREATE UNIQUE INDEX conflicts_one_open ON conflicts(partnership, item, unit)
    WHERE status <> 'resolved';
"#,
];
