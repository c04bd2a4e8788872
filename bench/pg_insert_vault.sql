-- bench/pg_insert_vault.sql: the plain-INSERT baseline of bench/vault.sh, a pgbench custom script.
-- One autocommitted single-row INSERT per transaction into bench_vault_insert.records, a table with the
-- columns, check constraints, indexes and foreign key of the vault's records table
-- (services/vault/migrations/0001_records.sql). Each row is what one PutItem of a new Observation stores: a
-- random "it_" record id (the vault's ids are random too, so the primary key takes random inserts), version
-- 1, kind 3 (observation), the clinical category only, a 60-byte wrapped data key and one sealed part.
-- Variables come from pgbench -D, all taken from a row the vault stored in the same run: patient_ref,
-- created_by, dek_hex (the wrapped data key) and part_hex (the sealed clinical part: nonce, ciphertext, tag).
INSERT INTO bench_vault_insert.records (tenant_id, record_id, version, patient_ref, kind, created_by, categories,
                                        kek_version, wrapped_dek, part_clinical)
VALUES ('bench-clinic', 'it_' || md5(random()::text), 1, :patient_ref, 3, :created_by, 16, 1,
        decode(:dek_hex, 'hex'), decode(:part_hex, 'hex'));
