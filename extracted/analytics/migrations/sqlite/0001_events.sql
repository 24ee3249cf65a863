-- The analytics service's own database (embedded edition; keep in step with ../postgres).
CREATE TABLE events (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    type        TEXT    NOT NULL,
    product_id  INTEGER NOT NULL,
    user_id     INTEGER NULL,
    at          INTEGER NOT NULL,
    monolith_id INTEGER NULL UNIQUE
);
CREATE INDEX events_at ON events (at);
CREATE INDEX events_product_at ON events (product_id, at);
CREATE TABLE sync_state (
    name       TEXT    PRIMARY KEY,
    position   INTEGER NOT NULL,
    updated_at INTEGER NOT NULL
);
