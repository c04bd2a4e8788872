-- Least privilege: the guideline service runs as a runtime role; the owner role that ran these migrations
-- calls grant_runtime(schema, role) (common/db db_migrate_as_owner). It revokes everything first, so running
-- it again leaves exactly what each migration's grant_runtime_* part grants (0001_guideline.sql lists its
-- tables). No TRUNCATE, REFERENCES or TRIGGER; no DDL (USAGE, not CREATE, on the schema); nothing on
-- schema_migrations.
CREATE FUNCTION grant_runtime(schema_name text, role_name text) RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    EXECUTE format('GRANT USAGE ON SCHEMA %I TO %I', schema_name, role_name);
    EXECUTE format('REVOKE ALL ON ALL TABLES IN SCHEMA %I FROM %I', schema_name, role_name);
    EXECUTE format('SELECT %I.grant_runtime_guideline($1, $2)', schema_name) USING schema_name, role_name;
END;
$$;
REVOKE ALL ON FUNCTION grant_runtime(text, text) FROM PUBLIC;
