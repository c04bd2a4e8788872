-- Tables for tests/db. Names are unqualified: db_migrate() runs each file with search_path set to the
-- schema of the set, which the tests make unique per run.
CREATE TABLE patients (
    id bigserial PRIMARY KEY,
    mrn text NOT NULL CONSTRAINT patients_mrn_key UNIQUE,
    name text,
    photo bytea
);

CREATE TABLE ledger (
    id bigserial PRIMARY KEY,
    account text NOT NULL,
    amount integer NOT NULL
);

-- One row per application of a migration: "applied exactly once" is counted here.
CREATE TABLE migration_log (
    version integer NOT NULL,
    logged_at timestamptz NOT NULL DEFAULT now()
);
INSERT INTO migration_log (version) VALUES (1);
