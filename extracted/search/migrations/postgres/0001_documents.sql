-- The search service's own database: the searchable part of each product, copied from the
-- monolith's database. The full-text index is built from this table at start and kept current
-- with it; this table, not the index, is what survives a restart.
CREATE TABLE documents (
    id          BIGINT PRIMARY KEY,
    name        TEXT   NOT NULL,
    description TEXT   NOT NULL,
    category    TEXT   NOT NULL,
    price_cents BIGINT NOT NULL,
    updated_at  BIGINT NOT NULL
);
CREATE TABLE sync_state (
    name       TEXT   PRIMARY KEY,
    position   BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);
