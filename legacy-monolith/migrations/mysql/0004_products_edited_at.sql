-- When a product's own fields (everything but stock and sales) were last written by a person,
-- as opposed to `updated_at`, which orders bump too. The catalog service compares this with
-- its own to decide, field group by field group, which side's edit is newer while product
-- writes move between them.
ALTER TABLE products ADD COLUMN edited_at BIGINT NOT NULL DEFAULT 0;
UPDATE products SET edited_at = updated_at;
