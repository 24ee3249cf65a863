-- When a product's own fields (everything but stock and sales) were last edited, on whichever
-- side: compared with the monolith's `edited_at` so the newer edit wins in both directions.
-- `updated_at` keeps its API meaning (orders bump it too).
ALTER TABLE products ADD COLUMN edited_at BIGINT NOT NULL DEFAULT 0;
UPDATE products SET edited_at = updated_at;
