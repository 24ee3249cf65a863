-- The handoff outbox (embedded edition; keep in step with ../postgres).
CREATE TABLE product_outbox (
    seq        INTEGER PRIMARY KEY AUTOINCREMENT,
    product_id INTEGER NOT NULL,
    stock      INTEGER NULL
);
CREATE INDEX product_outbox_product ON product_outbox (product_id, seq);
