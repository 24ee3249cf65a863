-- Migration support, part two (embedded edition; keep in step with ../mysql).
CREATE TABLE user_changes (
    seq     INTEGER PRIMARY KEY AUTOINCREMENT,
    user_id INTEGER NOT NULL
);

CREATE TRIGGER users_changed_insert AFTER INSERT ON users
BEGIN
    INSERT INTO user_changes (user_id) VALUES (NEW.id);
END;
CREATE TRIGGER users_changed_update AFTER UPDATE ON users
BEGIN
    INSERT INTO user_changes (user_id) VALUES (NEW.id);
END;
CREATE TRIGGER users_changed_delete AFTER DELETE ON users
BEGIN
    INSERT INTO user_changes (user_id) VALUES (OLD.id);
END;

CREATE TABLE sync_state (
    name       TEXT    PRIMARY KEY,
    position   INTEGER NOT NULL,
    updated_at INTEGER NOT NULL
);
