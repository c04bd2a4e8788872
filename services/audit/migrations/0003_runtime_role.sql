-- Least privilege: the service runs as a role that can only read and append. The owner role (which ran
-- these migrations) calls grant_runtime(schema, role) at start-up with the runtime role's name; identifiers
-- are quoted with format('%I'), so a name is never SQL. No UPDATE, DELETE or TRUNCATE is ever granted.
CREATE FUNCTION grant_runtime(schema_name text, role_name text) RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    EXECUTE format('GRANT USAGE ON SCHEMA %I TO %I', schema_name, role_name);
    EXECUTE format('GRANT SELECT, INSERT ON %I.events, %I.checkpoints, %I.subtrees TO %I',
                   schema_name, schema_name, schema_name, role_name);
    EXECUTE format('REVOKE UPDATE, DELETE, TRUNCATE, REFERENCES, TRIGGER ON %I.events, %I.checkpoints, '
                   '%I.subtrees FROM %I', schema_name, schema_name, schema_name, role_name);
END;
$$;
REVOKE ALL ON FUNCTION grant_runtime(text, text) FROM PUBLIC;
