-- bench/pg_insert.sql: the plain-INSERT baseline of bench/audit.sh, a pgbench custom script.
-- One autocommitted single-row INSERT per transaction into bench_insert.events, a table with the columns,
-- check constraints and indexes of the audit log's events table (services/audit/migrations/0001 + 0002).
-- Variables come from pgbench -D: entry_hex, the hex of an entry as long as the audit service's average
-- (measured in the same run), and leaf_hex, 32 bytes. Every row carries the same bytes, as every
-- AppendEvent call of alma-loadgen --payload audit-event does; seq comes from a sequence.
INSERT INTO bench_insert.events (seq, tenant_id, logged_at, action, purpose, outcome, patient_ref, actor_id,
                                 entry, leaf_hash)
VALUES (nextval('bench_insert.events_seq'), 'tenant-bench-clinic', now(), 2, 1, 1,
        'pt_3f9a2c7e51b04d8e9a6c2f1b7d4e8a05', 'usr_01JD3X8QK2V7N5M4', decode(:entry_hex, 'hex'),
        decode(:leaf_hex, 'hex'));
