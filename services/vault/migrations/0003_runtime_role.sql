-- Least privilege: the vault runs as a runtime role; the owner role that ran these migrations calls
-- grant_runtime(schema, role) (common/db db_migrate_as_owner). It revokes everything first, so running it
-- again leaves exactly what each migration's grant_runtime_* part grants:
--
--   table                     SELECT INSERT UPDATE (columns)                                     DELETE
--   tenants                     x      x     current_version, min_decrypt_version,               -
--                                            index_key_wrapped, offboarded_at
--   tenant_keys                 x      x     wrapped_key, destroyed_at                           -
--   records                     x      x     wrapped_dek, kek_version, shredded_at (trigger:     x (trigger:
--                                            re-wrap or destroy the key only)                    shredded only)
--   blind_index                 x      x     -                                                   x
--   views                       x      -     -                                                   -
--   (0002_lifecycle.sql lists its own tables)
--
-- No TRUNCATE, REFERENCES or TRIGGER; no DDL (USAGE, not CREATE, on the schema); nothing on schema_migrations.
CREATE FUNCTION grant_runtime(schema_name text, role_name text) RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    EXECUTE format('GRANT USAGE ON SCHEMA %I TO %I', schema_name, role_name);
    EXECUTE format('REVOKE ALL ON ALL TABLES IN SCHEMA %I FROM %I', schema_name, role_name);
    EXECUTE format('SELECT %I.grant_runtime_records($1, $2)', schema_name) USING schema_name, role_name;
    EXECUTE format('SELECT %I.grant_runtime_lifecycle($1, $2)', schema_name) USING schema_name, role_name;
END;
$$;
REVOKE ALL ON FUNCTION grant_runtime(text, text) FROM PUBLIC;
