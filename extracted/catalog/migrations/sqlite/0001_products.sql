-- The catalog service's own database (embedded edition; keep in step with ../postgres).
CREATE TABLE products (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    sku         TEXT    NOT NULL UNIQUE,
    name        TEXT    NOT NULL,
    description TEXT    NOT NULL,
    category    TEXT    NOT NULL,
    price_cents INTEGER NOT NULL,
    currency    TEXT    NOT NULL,
    stock       INTEGER NOT NULL,
    sales       INTEGER NOT NULL DEFAULT 0,
    created_at  INTEGER NOT NULL,
    updated_at  INTEGER NOT NULL
);
CREATE INDEX products_category_price ON products (category, price_cents);
CREATE INDEX products_price ON products (price_cents);
CREATE INDEX products_sales ON products (sales);
CREATE INDEX products_created_at ON products (created_at);
CREATE INDEX products_lower_name ON products (LOWER(name));
