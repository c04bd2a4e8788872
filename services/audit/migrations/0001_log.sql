-- The audit log: append-only. Rows can be inserted and read, never updated or deleted: a trigger refuses
-- UPDATE, DELETE and TRUNCATE for every role (the table owner included), and the runtime role is granted
-- INSERT and SELECT only (deploy/stack.sh; the owner role that runs migrations is separate in production).
-- Migrations run with search_path set to this service's schema alone (common/db).

CREATE TABLE events (
    seq         bigint      PRIMARY KEY CHECK (seq >= 0),      -- the leaf index, from 0, no gaps
    tenant_id   text        NOT NULL CHECK (length(tenant_id) BETWEEN 1 AND 64),
    logged_at   timestamptz NOT NULL,
    action      smallint    NOT NULL CHECK (action > 0),
    purpose     smallint    NOT NULL CHECK (purpose >= 0),
    outcome     smallint    NOT NULL CHECK (outcome > 0),
    patient_ref text        CHECK (patient_ref IS NULL OR patient_ref ~ '^pt_[0-9a-f]{32}$'),
    actor_id    text        NOT NULL CHECK (length(actor_id) BETWEEN 1 AND 128),
    entry       bytea       NOT NULL CHECK (length(entry) BETWEEN 1 AND 65536), -- canonical bytes (the leaf)
    leaf_hash   bytea       NOT NULL CHECK (length(leaf_hash) = 32)          -- SHA-256(0x00 || entry)
);

-- Query paths: always by tenant, then by time, patient or actor (service-side filters do the rest).
CREATE INDEX events_tenant_time ON events (tenant_id, logged_at, seq);
CREATE INDEX events_tenant_patient ON events (tenant_id, patient_ref, logged_at) WHERE patient_ref IS NOT NULL;
CREATE INDEX events_tenant_actor ON events (tenant_id, actor_id, logged_at);

-- Signed checkpoints: tree size, root, the C2SP signed note, and the frontier (right-edge subtree roots)
-- so the service restarts without rereading every leaf.
CREATE TABLE checkpoints (
    tree_size   bigint      PRIMARY KEY CHECK (tree_size >= 0),
    root_hash   bytea       NOT NULL CHECK (length(root_hash) = 32),
    signed_at   timestamptz NOT NULL,
    signed_note text        NOT NULL CHECK (length(signed_note) BETWEEN 1 AND 65536),
    frontier    bytea       NOT NULL CHECK (length(frontier) <= 64 * 32 + 16)
);

CREATE FUNCTION refuse_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'audit records are append-only: % on % refused', TG_OP, TG_TABLE_NAME
        USING ERRCODE = 'insufficient_privilege';
END;
$$;

CREATE TRIGGER events_append_only BEFORE UPDATE OR DELETE ON events
    FOR EACH ROW EXECUTE FUNCTION refuse_change();
CREATE TRIGGER events_no_truncate BEFORE TRUNCATE ON events
    FOR EACH STATEMENT EXECUTE FUNCTION refuse_change();
CREATE TRIGGER checkpoints_append_only BEFORE UPDATE OR DELETE ON checkpoints
    FOR EACH ROW EXECUTE FUNCTION refuse_change();
CREATE TRIGGER checkpoints_no_truncate BEFORE TRUNCATE ON checkpoints
    FOR EACH STATEMENT EXECUTE FUNCTION refuse_change();

REVOKE UPDATE, DELETE, TRUNCATE ON events, checkpoints FROM PUBLIC;
