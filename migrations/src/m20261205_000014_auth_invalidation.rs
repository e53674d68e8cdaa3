//! Whatever ends a user's right to act (the user deleted, "sign out everywhere", one token
//! revoked) is announced by the database itself, in the transaction that does it: a NOTIFY on
//! `auth_invalidate` carrying the user's id, delivered to every listener when it commits. The
//! gateways' validity caches listen, so no path that changes these rows (the API, `ctl`, plain
//! SQL) can forget to tell them.

use sea_orm_migration::prelude::*;

sql_migration!();

const UP: &str = r#"
CREATE OR REPLACE FUNCTION auth_invalidate() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_TABLE_NAME = 'users' THEN
        IF TG_OP = 'DELETE' THEN
            PERFORM pg_notify('auth_invalidate', OLD.id::text);
        ELSIF NEW.tokens_valid_after IS DISTINCT FROM OLD.tokens_valid_after THEN
            PERFORM pg_notify('auth_invalidate', NEW.id::text);
        END IF;
    ELSIF TG_TABLE_NAME = 'revoked_tokens' THEN
        PERFORM pg_notify('auth_invalidate', NEW.user_id::text);
    END IF;
    RETURN NULL;
END;
$$;

DROP TRIGGER IF EXISTS users_auth_invalidate ON users;
CREATE TRIGGER users_auth_invalidate AFTER DELETE OR UPDATE OF tokens_valid_after ON users
    FOR EACH ROW EXECUTE FUNCTION auth_invalidate();
DROP TRIGGER IF EXISTS revoked_tokens_auth_invalidate ON revoked_tokens;
CREATE TRIGGER revoked_tokens_auth_invalidate AFTER INSERT ON revoked_tokens
    FOR EACH ROW EXECUTE FUNCTION auth_invalidate();
"#;

const DOWN: &str = r#"
DROP TRIGGER IF EXISTS revoked_tokens_auth_invalidate ON revoked_tokens;
DROP TRIGGER IF EXISTS users_auth_invalidate ON users;
DROP FUNCTION IF EXISTS auth_invalidate();
"#;
