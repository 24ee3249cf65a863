-- Every product write made through this service's API, in the same transaction as the write,
-- for the handoff: once product writes are routed here, these changes flow back into the
-- monolith's database so the parts still living there (orders) see current prices and stock.
-- `stock` holds the value an admin set explicitly (NULL when the write left stock alone): stock
-- belongs to orders, and only an explicit setting may overwrite what orders did to it.
CREATE TABLE product_outbox (
    seq        BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    product_id BIGINT NOT NULL,
    stock      BIGINT NULL
);
CREATE INDEX product_outbox_product ON product_outbox (product_id, seq);
