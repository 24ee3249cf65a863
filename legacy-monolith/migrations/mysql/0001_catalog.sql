-- The legacy monolith's one schema: users, products, orders, analytics events.
-- Timestamps are Unix milliseconds (BIGINT) so every backend stores and compares them alike.

CREATE TABLE users (
    id            BIGINT       NOT NULL AUTO_INCREMENT PRIMARY KEY,
    email         VARCHAR(254) NOT NULL,
    name          VARCHAR(100) NOT NULL,
    password_hash VARCHAR(255) NOT NULL,
    role          VARCHAR(16)  NOT NULL,
    created_at    BIGINT       NOT NULL,
    UNIQUE KEY users_email (email)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_unicode_ci;

CREATE TABLE products (
    id          BIGINT       NOT NULL AUTO_INCREMENT PRIMARY KEY,
    sku         VARCHAR(64)  NOT NULL,
    name        VARCHAR(200) NOT NULL,
    description TEXT         NOT NULL,
    category    VARCHAR(100) NOT NULL,
    price_cents BIGINT       NOT NULL,
    currency    VARCHAR(3)   NOT NULL,
    stock       BIGINT       NOT NULL,
    sales       BIGINT       NOT NULL DEFAULT 0,
    created_at  BIGINT       NOT NULL,
    updated_at  BIGINT       NOT NULL,
    UNIQUE KEY products_sku (sku),
    KEY products_category_price (category, price_cents),
    KEY products_price (price_cents),
    KEY products_sales (sales),
    KEY products_created_at (created_at),
    KEY products_updated_at (updated_at)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_unicode_ci;

CREATE TABLE orders (
    id          BIGINT     NOT NULL AUTO_INCREMENT PRIMARY KEY,
    user_id     BIGINT     NOT NULL,
    total_cents BIGINT     NOT NULL,
    currency    VARCHAR(3) NOT NULL,
    created_at  BIGINT     NOT NULL,
    KEY orders_user (user_id, id),
    CONSTRAINT orders_user_fk FOREIGN KEY (user_id) REFERENCES users (id)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_unicode_ci;

-- Items keep the name and price at the time of the order; no foreign key to products, so a
-- product can be deleted without rewriting order history.
CREATE TABLE order_items (
    order_id         BIGINT       NOT NULL,
    product_id       BIGINT       NOT NULL,
    name             VARCHAR(200) NOT NULL,
    quantity         BIGINT       NOT NULL,
    unit_price_cents BIGINT       NOT NULL,
    PRIMARY KEY (order_id, product_id),
    CONSTRAINT order_items_order_fk FOREIGN KEY (order_id) REFERENCES orders (id) ON DELETE CASCADE
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_unicode_ci;

CREATE TABLE analytics_events (
    id         BIGINT      NOT NULL AUTO_INCREMENT PRIMARY KEY,
    type       VARCHAR(16) NOT NULL,
    product_id BIGINT      NOT NULL,
    user_id    BIGINT      NULL,
    at         BIGINT      NOT NULL,
    KEY analytics_events_at (at),
    KEY analytics_events_product_at (product_id, at)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_unicode_ci;
