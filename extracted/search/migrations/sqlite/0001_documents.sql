-- The search service's own database (embedded edition; keep in step with ../postgres).
CREATE TABLE documents (
    id          INTEGER PRIMARY KEY,
    name        TEXT    NOT NULL,
    description TEXT    NOT NULL,
    category    TEXT    NOT NULL,
    price_cents INTEGER NOT NULL,
    updated_at  INTEGER NOT NULL
);
CREATE TABLE sync_state (
    name       TEXT    PRIMARY KEY,
    position   INTEGER NOT NULL,
    updated_at INTEGER NOT NULL
);
