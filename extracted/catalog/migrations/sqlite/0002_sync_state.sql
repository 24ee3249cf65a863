-- Where each copy job (backfill, continuous sync) has got to, so it can resume.
CREATE TABLE sync_state (
    name       TEXT    PRIMARY KEY,
    position   INTEGER NOT NULL,
    updated_at INTEGER NOT NULL
);
