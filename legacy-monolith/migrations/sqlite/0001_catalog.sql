-- The legacy monolith's one schema (embedded SQLite edition; keep in step with ../mysql).
-- Timestamps are Unix milliseconds so every backend stores and compares them alike.

CREATE TABLE users (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    email         TEXT    NOT NULL UNIQUE,
    name          TEXT    NOT NULL,
    password_hash TEXT    NOT NULL,
    role          TEXT    NOT NULL,
    created_at    INTEGER NOT NULL
);

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
CREATE INDEX products_updated_at ON products (updated_at);

CREATE TABLE orders (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    user_id     INTEGER NOT NULL REFERENCES users (id),
    total_cents INTEGER NOT NULL,
    currency    TEXT    NOT NULL,
    created_at  INTEGER NOT NULL
);
CREATE INDEX orders_user ON orders (user_id, id);

CREATE TABLE order_items (
    order_id         INTEGER NOT NULL REFERENCES orders (id) ON DELETE CASCADE,
    product_id       INTEGER NOT NULL,
    name             TEXT    NOT NULL,
    quantity         INTEGER NOT NULL,
    unit_price_cents INTEGER NOT NULL,
    PRIMARY KEY (order_id, product_id)
);

CREATE TABLE analytics_events (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    type       TEXT    NOT NULL,
    product_id INTEGER NOT NULL,
    user_id    INTEGER NULL,
    at         INTEGER NOT NULL
);
CREATE INDEX analytics_events_at ON analytics_events (at);
CREATE INDEX analytics_events_product_at ON analytics_events (product_id, at);
