-- Change capture for the migration (embedded edition; keep in step with ../mysql).
CREATE TABLE product_changes (
    seq        INTEGER PRIMARY KEY AUTOINCREMENT,
    product_id INTEGER NOT NULL
);

CREATE TRIGGER products_changed_insert AFTER INSERT ON products
BEGIN
    INSERT INTO product_changes (product_id) VALUES (NEW.id);
END;
CREATE TRIGGER products_changed_update AFTER UPDATE ON products
BEGIN
    INSERT INTO product_changes (product_id) VALUES (NEW.id);
END;
CREATE TRIGGER products_changed_delete AFTER DELETE ON products
BEGIN
    INSERT INTO product_changes (product_id) VALUES (OLD.id);
END;
