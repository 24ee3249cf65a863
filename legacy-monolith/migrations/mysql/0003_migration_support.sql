-- Migration support, part two.
-- `user_changes`: the same change capture as `product_changes`, for users, so the auth service
-- can follow registrations made here.
CREATE TABLE user_changes (
    seq     BIGINT NOT NULL AUTO_INCREMENT PRIMARY KEY,
    user_id BIGINT NOT NULL
) ENGINE = InnoDB;

CREATE TRIGGER users_changed_insert AFTER INSERT ON users
    FOR EACH ROW INSERT INTO user_changes (user_id) VALUES (NEW.id);
CREATE TRIGGER users_changed_update AFTER UPDATE ON users
    FOR EACH ROW INSERT INTO user_changes (user_id) VALUES (NEW.id);
CREATE TRIGGER users_changed_delete AFTER DELETE ON users
    FOR EACH ROW INSERT INTO user_changes (user_id) VALUES (OLD.id);

-- Where each extracted service's write-back (the handoff) has got to in its own outbox. It is
-- kept here, in the database the changes are written to, so a change and its checkpoint commit
-- together and a write-back never applies a change twice.
CREATE TABLE sync_state (
    name       VARCHAR(100) NOT NULL PRIMARY KEY,
    position   BIGINT       NOT NULL,
    updated_at BIGINT       NOT NULL
) ENGINE = InnoDB;
