-- Complete subtree hashes of the Merkle tree, written by the appender in the same transaction as the leaves
-- that close them (audit_merkle_frontier_append_nodes): level L >= 1, index i covers leaves
-- [i * 2^L, (i + 1) * 2^L). With them an inclusion or consistency proof is O(log n) lookups instead of a
-- read of every leaf hash. They are derived data: a wrong row makes proofs that clients reject against the
-- signed checkpoint, it cannot make a bad proof verify. Append-only like the rest of the log.
CREATE TABLE subtrees (
    level smallint NOT NULL CHECK (level BETWEEN 1 AND 63),
    idx   bigint   NOT NULL CHECK (idx >= 0),
    hash  bytea    NOT NULL CHECK (length(hash) = 32),
    PRIMARY KEY (level, idx)
);

CREATE TRIGGER subtrees_append_only BEFORE UPDATE OR DELETE ON subtrees
    FOR EACH ROW EXECUTE FUNCTION refuse_change();
CREATE TRIGGER subtrees_no_truncate BEFORE TRUNCATE ON subtrees
    FOR EACH STATEMENT EXECUTE FUNCTION refuse_change();

REVOKE UPDATE, DELETE, TRUNCATE ON subtrees FROM PUBLIC;

-- Queries page through a tenant's events in seq order (the stable cursor).
CREATE INDEX events_tenant_seq ON events (tenant_id, seq);
