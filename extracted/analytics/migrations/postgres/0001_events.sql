-- The analytics service's own database. `monolith_id` is set on events copied from the
-- monolith's analytics_events (unique, so copying twice inserts nothing) and NULL on events
-- ingested here.
CREATE TABLE events (
    id          BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    type        TEXT   NOT NULL,
    product_id  BIGINT NOT NULL,
    user_id     BIGINT NULL,
    at          BIGINT NOT NULL,
    monolith_id BIGINT NULL UNIQUE
);
CREATE INDEX events_at ON events (at);
CREATE INDEX events_product_at ON events (product_id, at);
CREATE TABLE sync_state (
    name       TEXT   PRIMARY KEY,
    position   BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);
