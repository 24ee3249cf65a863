-- Change capture for the migration: every insert, update and delete of a product, by whichever
-- code path (the API, orders, a hand-written UPDATE), appends the product's id here. Extracted
-- services read this outbox to keep their own copy current.
CREATE TABLE product_changes (
    seq        BIGINT NOT NULL AUTO_INCREMENT PRIMARY KEY,
    product_id BIGINT NOT NULL
) ENGINE = InnoDB;

CREATE TRIGGER products_changed_insert AFTER INSERT ON products
    FOR EACH ROW INSERT INTO product_changes (product_id) VALUES (NEW.id);
CREATE TRIGGER products_changed_update AFTER UPDATE ON products
    FOR EACH ROW INSERT INTO product_changes (product_id) VALUES (NEW.id);
CREATE TRIGGER products_changed_delete AFTER DELETE ON products
    FOR EACH ROW INSERT INTO product_changes (product_id) VALUES (OLD.id);
