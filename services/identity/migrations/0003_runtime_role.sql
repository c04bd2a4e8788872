-- Least privilege: the identity service runs as a runtime role that can do what the store
-- (services/identity/store.c) needs and nothing else; the owner role that ran these migrations calls
-- grant_runtime(schema, role) with the runtime role's name (at start-up or from the stack scripts).
-- Identifiers are quoted with format('%I'), so a name is never SQL. It starts by revoking everything the
-- role holds on the schema's tables, so running it again (or after a new migration) leaves exactly this:
--
--   table               SELECT INSERT UPDATE (columns)                                   DELETE
--   tenants               x      x     -                                                 -
--   principals            x      x     display_name, state, disabled_at, disabled_reason -
--   password_hashes       x      x     encoded, updated_at                               -
--   totp                  x      x     sealed_secret, confirmed, confirmed_at,           -
--                                      last_step, created_at
--   recovery_codes        x      x     used_at                                           x (replaced as a set
--                                                                                           when regenerated)
--   roles                 x      x     display_name, requires_mfa, version, updated_at   -
--   role_permissions      x      x     -  (a change deletes and inserts rows)            x
--   role_history          x      x     -  (append-only)                                  -
--   grants                x      x     -                                                 x (RevokeRole)
--   care_relationships    x      x     end_at, ended_by, ended_at: only to END one       -
--   break_glass_grants    x      x     -  (append-only)                                  -
--   partner_clients       x      x     display_name, jwks, scopes, disabled              -
--   signing_keys          x      x     state, sealed_private, retired_at (rotation)      -
--
-- Nothing is ever deleted except what is replaced as a whole (a role's permission set, a principal's recovery
-- codes) or withdrawn (a grant): principals are disabled, relationships ended, keys retired, and role_history
-- and break_glass_grants are append-only (their triggers refuse UPDATE and DELETE even to the owner). Column
-- lists keep identifiers, tenants and patient references immutable for the runtime role: it cannot move a
-- principal, a relationship or a client into another tenant, nor re-point a relationship at another patient.
-- No TRUNCATE, REFERENCES or TRIGGER; no DDL (the role gets USAGE, not CREATE, on the schema); nothing on
-- schema_migrations.
CREATE FUNCTION grant_runtime(schema_name text, role_name text) RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    EXECUTE format('GRANT USAGE ON SCHEMA %I TO %I', schema_name, role_name);
    EXECUTE format('REVOKE ALL ON ALL TABLES IN SCHEMA %I FROM %I', schema_name, role_name);

    EXECUTE format('GRANT SELECT, INSERT ON %I.tenants, %I.role_history, %I.break_glass_grants TO %I',
                   schema_name, schema_name, schema_name, role_name);
    EXECUTE format('GRANT SELECT, INSERT, DELETE ON %I.role_permissions, %I.grants TO %I',
                   schema_name, schema_name, role_name);
    EXECUTE format('GRANT SELECT, INSERT, DELETE, UPDATE (used_at) ON %I.recovery_codes TO %I',
                   schema_name, role_name);
    EXECUTE format('GRANT SELECT, INSERT, UPDATE (display_name, state, disabled_at, disabled_reason) '
                   'ON %I.principals TO %I', schema_name, role_name);
    EXECUTE format('GRANT SELECT, INSERT, UPDATE (encoded, updated_at) ON %I.password_hashes TO %I',
                   schema_name, role_name);
    EXECUTE format('GRANT SELECT, INSERT, UPDATE (sealed_secret, confirmed, confirmed_at, last_step, '
                   'created_at) ON %I.totp TO %I', schema_name, role_name);
    EXECUTE format('GRANT SELECT, INSERT, UPDATE (display_name, requires_mfa, version, updated_at) '
                   'ON %I.roles TO %I', schema_name, role_name);
    EXECUTE format('GRANT SELECT, INSERT, UPDATE (end_at, ended_by, ended_at) ON %I.care_relationships TO %I',
                   schema_name, role_name);
    EXECUTE format('GRANT SELECT, INSERT, UPDATE (display_name, jwks, scopes, disabled) '
                   'ON %I.partner_clients TO %I', schema_name, role_name);
    EXECUTE format('GRANT SELECT, INSERT, UPDATE (state, sealed_private, retired_at) ON %I.signing_keys TO %I',
                   schema_name, role_name);
END;
$$;
REVOKE ALL ON FUNCTION grant_runtime(text, text) FROM PUBLIC;
