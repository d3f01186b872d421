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
];
