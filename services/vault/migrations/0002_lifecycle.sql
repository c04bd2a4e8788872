-- The vault's record lifecycle (services/vault/lifecycle.h): retention periods, legal holds, §164.526
-- amendment requests, and signed destruction certificates. None of these tables holds PHI: tenants,
-- random references (patient_ref, record_id), codes, counts, times and principal ids only.

-- Retention per (tenant, category), in whole years after a record's last version. tenant_id '' rows are the
-- built-in defaults, used when a tenant has set nothing for a category. The default is 10 years for every
-- category: HIPAA itself only requires its own documentation (policies, authorizations, accountings) to be
-- kept 6 years (§164.316(b)(2), §164.530(j)), and it leaves medical-record retention to state law, which
-- commonly asks 7 to 10 years for adults (longer for minors). 10 years is the conservative common
-- denominator; each tenant sets its own (SetRetention), 0..100 years.
CREATE TABLE retention (
    tenant_id  text        NOT NULL CHECK (tenant_id = '' OR tenant_id ~ '^[a-z0-9][a-z0-9-]{1,62}$'),
    category   smallint    NOT NULL CHECK (category BETWEEN 1 AND 6),
    years      smallint    NOT NULL CHECK (years BETWEEN 0 AND 100),
    updated_at timestamptz NOT NULL DEFAULT now(),
    updated_by text        NOT NULL CHECK (length(updated_by) BETWEEN 1 AND 128),
    PRIMARY KEY (tenant_id, category)
);
INSERT INTO retention (tenant_id, category, years, updated_by)
SELECT '', c, 10, 'system:migration' FROM generate_series(1, 6) AS c;

-- The built-in rows change only through a migration (which may disable this trigger for the purpose).
CREATE FUNCTION retention_guard() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF (TG_OP <> 'INSERT' AND OLD.tenant_id = '') OR (TG_OP <> 'DELETE' AND NEW.tenant_id = '') THEN
        RAISE EXCEPTION 'vault retention: the built-in defaults are changed by a migration only'
            USING ERRCODE = 'insufficient_privilege';
    END IF;
    IF TG_OP = 'UPDATE' AND (NEW.tenant_id IS DISTINCT FROM OLD.tenant_id
                             OR NEW.category IS DISTINCT FROM OLD.category) THEN
        RAISE EXCEPTION 'vault retention: only years can change' USING ERRCODE = 'insufficient_privilege';
    END IF;
    IF TG_OP = 'DELETE' THEN
        RETURN OLD;
    END IF;
    RETURN NEW;
END;
$$;
CREATE TRIGGER retention_guard BEFORE INSERT OR UPDATE OR DELETE ON retention
    FOR EACH ROW EXECUTE FUNCTION retention_guard();

-- Legal holds: while a hold on a patient is unreleased, nothing of the patient may be destroyed. A hold is
-- never deleted; releasing it sets released_at / released_by once.
CREATE TABLE legal_holds (
    hold_id     text        PRIMARY KEY CHECK (hold_id ~ '^lh_[0-9a-f]{32}$'),
    tenant_id   text        NOT NULL CHECK (tenant_id ~ '^[a-z0-9][a-z0-9-]{1,62}$'),
    patient_ref text        NOT NULL CHECK (patient_ref ~ '^pt_[0-9a-f]{32}$'),
    reason_code text        NOT NULL CHECK (reason_code ~ '^[a-z0-9_]{1,64}$'),
    placed_at   timestamptz NOT NULL DEFAULT now(),
    placed_by   text        NOT NULL CHECK (length(placed_by) BETWEEN 1 AND 128),
    released_at timestamptz,
    released_by text        CHECK (released_by IS NULL OR length(released_by) BETWEEN 1 AND 128),
    CHECK ((released_at IS NULL) = (released_by IS NULL)),
    CHECK (released_at IS NULL OR released_at >= placed_at)
);
CREATE INDEX legal_holds_patient ON legal_holds (tenant_id, patient_ref, placed_at);

CREATE FUNCTION legal_holds_guard() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'DELETE' OR OLD.released_at IS NOT NULL
       OR NEW.hold_id IS DISTINCT FROM OLD.hold_id OR NEW.tenant_id IS DISTINCT FROM OLD.tenant_id
       OR NEW.patient_ref IS DISTINCT FROM OLD.patient_ref OR NEW.reason_code IS DISTINCT FROM OLD.reason_code
       OR NEW.placed_at IS DISTINCT FROM OLD.placed_at OR NEW.placed_by IS DISTINCT FROM OLD.placed_by THEN
        RAISE EXCEPTION 'vault legal_holds: only releasing a hold, once, is allowed'
            USING ERRCODE = 'insufficient_privilege';
    END IF;
    RETURN NEW;
END;
$$;
CREATE TRIGGER legal_holds_guard BEFORE UPDATE OR DELETE ON legal_holds
    FOR EACH ROW EXECUTE FUNCTION legal_holds_guard();
CREATE TRIGGER legal_holds_no_truncate BEFORE TRUNCATE ON legal_holds
    FOR EACH STATEMENT EXECUTE FUNCTION refuse_change();

-- §164.526 amendment requests. status is alma.vault.v1.AmendmentStatus: 1 RECEIVED, 2 EXTENDED (once, before
-- the due date: due + 30 days), 3 ACCEPTED (amended_version: the record version written for the request,
-- records.amendment_request_id), 4 DENIED (denial_basis: alma.vault.v1.DenialBasis). Days are counted as
-- 24-hour periods (1440 and 720 hours), so the due time does not depend on a session's time zone.
-- Decisions are final. Nothing is deleted; every status is also an amendment_events row.
CREATE TABLE amendment_requests (
    request_id      text        PRIMARY KEY CHECK (request_id ~ '^am_[0-9a-f]{32}$'),
    tenant_id       text        NOT NULL CHECK (tenant_id ~ '^[a-z0-9][a-z0-9-]{1,62}$'),
    patient_ref     text        NOT NULL CHECK (patient_ref ~ '^pt_[0-9a-f]{32}$'),
    record_id       text        NOT NULL CHECK (record_id ~ '^(pt|it)_[0-9a-f]{32}$'),
    status          smallint    NOT NULL CHECK (status BETWEEN 1 AND 4),
    received_at     timestamptz NOT NULL DEFAULT now(),
    due_at          timestamptz NOT NULL,
    extended_at     timestamptz,
    decided_at      timestamptz,
    decided_by      text        CHECK (decided_by IS NULL OR length(decided_by) BETWEEN 1 AND 128),
    amended_version integer     CHECK (amended_version IS NULL OR amended_version >= 1),
    denial_basis    smallint    CHECK (denial_basis IS NULL OR denial_basis BETWEEN 1 AND 4),
    CHECK (due_at = received_at + CASE WHEN extended_at IS NULL THEN interval '1440 hours'
                                       ELSE interval '2160 hours' END),
    CHECK (extended_at IS NULL OR extended_at < received_at + interval '1440 hours'),
    CHECK (status <> 1 OR extended_at IS NULL),
    CHECK (status <> 2 OR extended_at IS NOT NULL),
    CHECK ((status IN (3, 4)) = (decided_at IS NOT NULL)),
    CHECK ((decided_at IS NULL) = (decided_by IS NULL)),
    CHECK ((status = 3) = (amended_version IS NOT NULL)),
    CHECK ((status = 4) = (denial_basis IS NOT NULL))
);
CREATE INDEX amendment_requests_patient ON amendment_requests (tenant_id, patient_ref, received_at);
CREATE INDEX amendment_requests_open ON amendment_requests (tenant_id, received_at) WHERE status IN (1, 2);

-- Defence in depth for the rules lifecycle.c applies: who a request is about never changes; RECEIVED may go
-- to EXTENDED, ACCEPTED or DENIED, EXTENDED to ACCEPTED or DENIED, a decision never changes; ACCEPTED only
-- when the amended version exists and names the request.
CREATE FUNCTION amendment_requests_guard() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'DELETE' THEN
        RAISE EXCEPTION 'vault amendment_requests: DELETE refused' USING ERRCODE = 'insufficient_privilege';
    END IF;
    IF NEW.request_id IS DISTINCT FROM OLD.request_id OR NEW.tenant_id IS DISTINCT FROM OLD.tenant_id
       OR NEW.patient_ref IS DISTINCT FROM OLD.patient_ref OR NEW.record_id IS DISTINCT FROM OLD.record_id
       OR NEW.received_at IS DISTINCT FROM OLD.received_at
       OR (OLD.extended_at IS NOT NULL AND NEW.extended_at IS DISTINCT FROM OLD.extended_at)
       OR OLD.status NOT IN (1, 2)
       OR NOT (NEW.status = 2 AND OLD.status = 1 OR NEW.status IN (3, 4)) THEN
        RAISE EXCEPTION 'vault amendment_requests: status change refused'
            USING ERRCODE = 'insufficient_privilege';
    END IF;
    IF NEW.status = 3 AND NOT EXISTS (
           SELECT 1 FROM records r WHERE r.tenant_id = NEW.tenant_id AND r.record_id = NEW.record_id
              AND r.version = NEW.amended_version AND r.amendment_request_id = NEW.request_id) THEN
        RAISE EXCEPTION 'vault amendment_requests: no amended version names the request'
            USING ERRCODE = 'insufficient_privilege';
    END IF;
    RETURN NEW;
END;
$$;
CREATE TRIGGER amendment_requests_guard BEFORE UPDATE OR DELETE ON amendment_requests
    FOR EACH ROW EXECUTE FUNCTION amendment_requests_guard();
CREATE TRIGGER amendment_requests_no_truncate BEFORE TRUNCATE ON amendment_requests
    FOR EACH STATEMENT EXECUTE FUNCTION refuse_change();

-- Every status a request took, when and by whom: append-only. A request takes each status at most once.
CREATE TABLE amendment_events (
    request_id text        NOT NULL REFERENCES amendment_requests (request_id),
    status     smallint    NOT NULL CHECK (status BETWEEN 1 AND 4),
    at         timestamptz NOT NULL DEFAULT now(),
    actor      text        NOT NULL CHECK (length(actor) BETWEEN 1 AND 128),
    PRIMARY KEY (request_id, status)
);
CREATE TRIGGER amendment_events_append_only BEFORE UPDATE OR DELETE ON amendment_events
    FOR EACH ROW EXECUTE FUNCTION refuse_change();
CREATE TRIGGER amendment_events_no_truncate BEFORE TRUNCATE ON amendment_events
    FOR EACH STATEMENT EXECUTE FUNCTION refuse_change();

-- Signed destruction certificates: statement is the canonical JSON that was signed (references, counts and
-- key versions, never PHI), signature its Ed25519 signature (64 bytes), verifier_key the public key (PEM).
-- patient_ref NULL: a tenant's offboarding (one per tenant). Append-only, for every role.
CREATE TABLE destruction_certificates (
    certificate_id text        PRIMARY KEY CHECK (certificate_id ~ '^dc_[0-9a-f]{32}$'),
    tenant_id      text        NOT NULL CHECK (tenant_id ~ '^[a-z0-9][a-z0-9-]{1,62}$'),
    patient_ref    text        CHECK (patient_ref IS NULL OR patient_ref ~ '^pt_[0-9a-f]{32}$'),
    destroyed_at   timestamptz NOT NULL,
    records        integer     NOT NULL CHECK (records >= 0),
    versions       integer     NOT NULL CHECK (versions >= records),
    statement      text        NOT NULL CHECK (length(statement) BETWEEN 2 AND 8388608),
    signature      bytea       NOT NULL CHECK (length(signature) = 64),
    verifier_key   text        NOT NULL CHECK (length(verifier_key) BETWEEN 1 AND 4096),
    created_at     timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX destruction_certificates_patient ON destruction_certificates (tenant_id, patient_ref);
CREATE UNIQUE INDEX destruction_certificates_offboarding ON destruction_certificates (tenant_id)
    WHERE patient_ref IS NULL;
CREATE TRIGGER destruction_certificates_append_only BEFORE UPDATE OR DELETE ON destruction_certificates
    FOR EACH ROW EXECUTE FUNCTION refuse_change();
CREATE TRIGGER destruction_certificates_no_truncate BEFORE TRUNCATE ON destruction_certificates
    FOR EACH STATEMENT EXECUTE FUNCTION refuse_change();

-- A patient destruction in progress: written (under the patient's lock, after the legal-hold check) before
-- the data keys are destroyed, updated with what the store reports after each step, deleted in the
-- transaction that stores the certificate. It lets a destruction interrupted after its rows were deleted
-- still certify what was destroyed, and keeps a legal hold from being placed half-way (lifecycle.c).
CREATE TABLE destructions (
    tenant_id         text        NOT NULL CHECK (tenant_id ~ '^[a-z0-9][a-z0-9-]{1,62}$'),
    patient_ref       text        NOT NULL CHECK (patient_ref ~ '^pt_[0-9a-f]{32}$'),
    certificate_id    text        NOT NULL UNIQUE CHECK (certificate_id ~ '^dc_[0-9a-f]{32}$'),
    reason_code       text        NOT NULL CHECK (reason_code ~ '^[a-z0-9_]{1,64}$'),
    actor             text        NOT NULL CHECK (length(actor) BETWEEN 1 AND 128),
    started_at        timestamptz NOT NULL DEFAULT now(),
    records           integer     CHECK (records >= 0),
    versions          integer     CHECK (versions >= 0),
    record_ids        text[],
    kek_min           integer,
    kek_max           integer,
    keys_destroyed_at timestamptz,
    rows_deleted_at   timestamptz,
    PRIMARY KEY (tenant_id, patient_ref),
    CHECK ((keys_destroyed_at IS NULL) = (record_ids IS NULL)),
    CHECK (rows_deleted_at IS NULL OR keys_destroyed_at IS NOT NULL)
);

-- Runtime grants for these tables (0003's grant_runtime() calls this):
--
--   table                     SELECT INSERT UPDATE (columns)                                     DELETE
--   retention                   x      x     years, updated_at, updated_by (trigger: a tenant's   -
--                                            own rows only)
--   legal_holds                 x      x     released_at, released_by (trigger: once)             -
--   amendment_requests          x      x     status, due_at, extended_at, decided_at,             -
--                                            decided_by, amended_version, denial_basis (trigger)
--   amendment_events            x      x     -                                                    -
--   destruction_certificates    x      x     -                                                    -
--   destructions                x      x     records, versions, record_ids, kek_min, kek_max,     x
--                                            keys_destroyed_at, rows_deleted_at
CREATE FUNCTION grant_runtime_lifecycle(schema_name text, role_name text) RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    EXECUTE format('GRANT SELECT, INSERT, UPDATE (years, updated_at, updated_by) ON %I.retention TO %I',
                   schema_name, role_name);
    EXECUTE format('GRANT SELECT, INSERT, UPDATE (released_at, released_by) ON %I.legal_holds TO %I',
                   schema_name, role_name);
    EXECUTE format('GRANT SELECT, INSERT, UPDATE (status, due_at, extended_at, decided_at, decided_by, '
                   'amended_version, denial_basis) ON %I.amendment_requests TO %I', schema_name, role_name);
    EXECUTE format('GRANT SELECT, INSERT ON %I.amendment_events TO %I', schema_name, role_name);
    EXECUTE format('GRANT SELECT, INSERT ON %I.destruction_certificates TO %I', schema_name, role_name);
    EXECUTE format('GRANT SELECT, INSERT, DELETE, UPDATE (records, versions, record_ids, kek_min, kek_max, '
                   'keys_destroyed_at, rows_deleted_at) ON %I.destructions TO %I', schema_name, role_name);
END;
$$;
REVOKE ALL ON FUNCTION grant_runtime_lifecycle(text, text) FROM PUBLIC;
