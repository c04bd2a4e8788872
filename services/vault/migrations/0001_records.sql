-- The PHI vault's records and keys (services/vault/README.md). Postgres never sees plaintext PHI: every
-- category of a record version is one AES-256-GCM part sealed with that version's data key (DEK); the DEK is
-- stored wrapped by a tenant key-encryption key (KEK) version; KEKs are stored wrapped by the master key
-- (key provider). Associated data binds each part to tenant, record, version and category, each wrapped DEK
-- to tenant, record, version and KEK version, each wrapped KEK to tenant and version (store.h has the exact
-- bytes). Migrations run with search_path set to this service's schema alone (common/db).

-- Tenant key-encryption keys, versioned. wrapped_key is NULL once the version is destroyed (retired after a
-- re-wrap, or the tenant offboarded). Only `current` wraps new data keys.
CREATE TABLE tenant_keys (
    tenant_id    text        COLLATE "C" NOT NULL CHECK (tenant_id ~ '^[a-z0-9][a-z0-9-]{1,62}$'),
    version      integer     NOT NULL CHECK (version >= 1),
    wrapped_key  bytea       CHECK (wrapped_key IS NULL OR length(wrapped_key) BETWEEN 28 AND 1024),
    provider_id  text        NOT NULL CHECK (length(provider_id) BETWEEN 1 AND 128), -- which master key wraps it
    created_at   timestamptz NOT NULL DEFAULT now(),
    destroyed_at timestamptz,
    PRIMARY KEY (tenant_id, version),
    CHECK ((wrapped_key IS NULL) = (destroyed_at IS NOT NULL))
);

-- One row per tenant: the current KEK version, the oldest version still allowed to decrypt (older ones are
-- destroyed), and the tenant's blind-index key (HMAC-SHA256; also derives pseudonyms), wrapped by the master
-- key. offboarded_at: every key destroyed, nothing of the tenant can be decrypted any more.
CREATE TABLE tenants (
    tenant_id           text        COLLATE "C" PRIMARY KEY CHECK (tenant_id ~ '^[a-z0-9][a-z0-9-]{1,62}$'),
    current_version     integer     NOT NULL CHECK (current_version >= 1),
    min_decrypt_version integer     NOT NULL DEFAULT 1 CHECK (min_decrypt_version BETWEEN 1 AND current_version),
    index_key_wrapped   bytea       CHECK (index_key_wrapped IS NULL OR length(index_key_wrapped) BETWEEN 28 AND 1024),
    provider_id         text        NOT NULL CHECK (length(provider_id) BETWEEN 1 AND 128),
    created_at          timestamptz NOT NULL DEFAULT now(),
    offboarded_at       timestamptz,
    CHECK ((index_key_wrapped IS NULL) = (offboarded_at IS NOT NULL))
);

-- Ids are COLLATE "C": pages of records and patients are in byte order, straight from the indexes.
-- Record versions. record_id: "pt_<32 hex>" for a patient record (then record_id = patient_ref),
-- "it_<32 hex>" for a clinical item. kind: alma.vault.v1.RecordKind. categories: bit (1 << Category) for
-- each part present. A part column holds nonce || ciphertext || tag (common/crypto acrypto_gcm_seal).
-- Shredding sets wrapped_dek to NULL (shredded_at) first, then deletes the rows.
CREATE TABLE records (
    tenant_id       text        COLLATE "C" NOT NULL,
    record_id       text        COLLATE "C" NOT NULL CHECK (record_id ~ '^(pt|it)_[0-9a-f]{32}$'),
    version         integer     NOT NULL CHECK (version >= 1),
    patient_ref     text        COLLATE "C" NOT NULL CHECK (patient_ref ~ '^pt_[0-9a-f]{32}$'),
    kind            smallint    NOT NULL CHECK (kind BETWEEN 1 AND 6),
    created_at      timestamptz NOT NULL DEFAULT now(),
    created_by      text        NOT NULL CHECK (length(created_by) BETWEEN 1 AND 128),
    amendment_request_id text   CHECK (amendment_request_id IS NULL OR amendment_request_id ~ '^am_[0-9a-f]{32}$'),
    categories      smallint    NOT NULL CHECK (categories > 0 AND categories < 128 AND categories % 2 = 0),
    kek_version     integer     NOT NULL CHECK (kek_version >= 1),
    wrapped_dek     bytea       CHECK (wrapped_dek IS NULL OR length(wrapped_dek) = 60), -- 32 + 28
    shredded_at     timestamptz,
    part_demographic bytea,
    part_contact     bytea,
    part_identifier  bytea,
    part_clinical    bytea,
    part_sensitive   bytea,
    part_financial   bytea,
    PRIMARY KEY (tenant_id, record_id, version),
    FOREIGN KEY (tenant_id) REFERENCES tenants (tenant_id),
    CHECK ((wrapped_dek IS NULL) = (shredded_at IS NOT NULL)),
    CHECK (kind = 1 OR record_id <> patient_ref),
    CHECK (kind <> 1 OR record_id = patient_ref),
    -- each part is present exactly when its category bit is set
    CHECK ((part_demographic IS NOT NULL) = (categories & 2 <> 0)),
    CHECK ((part_contact IS NOT NULL) = (categories & 4 <> 0)),
    CHECK ((part_identifier IS NOT NULL) = (categories & 8 <> 0)),
    CHECK ((part_clinical IS NOT NULL) = (categories & 16 <> 0)),
    CHECK ((part_sensitive IS NOT NULL) = (categories & 32 <> 0)),
    CHECK ((part_financial IS NOT NULL) = (categories & 64 <> 0))
);
CREATE INDEX records_patient ON records (tenant_id, patient_ref, record_id, version);
-- The re-wrap job walks a tenant's data keys still wrapped by an old KEK version, in key order.
CREATE INDEX records_kek ON records (tenant_id, kek_version, record_id, version) WHERE wrapped_dek IS NOT NULL;

-- Blind indexes: HMAC-SHA256(tenant index key, kind || 0x00 || normalised value), one row per patient
-- record version and value. kind 1 MRN, 2 health-plan member id, 3 family name + first given name + birth
-- date. A lookup matches only a patient's latest version.
CREATE TABLE blind_index (
    tenant_id   text     COLLATE "C" NOT NULL,
    kind        smallint NOT NULL CHECK (kind BETWEEN 1 AND 3),
    digest      bytea    NOT NULL CHECK (length(digest) = 32),
    patient_ref text     COLLATE "C" NOT NULL,
    version     integer  NOT NULL,
    PRIMARY KEY (tenant_id, kind, digest, patient_ref, version),
    FOREIGN KEY (tenant_id, patient_ref, version) REFERENCES records (tenant_id, record_id, version)
        ON DELETE CASCADE
);
CREATE INDEX blind_index_patient ON blind_index (tenant_id, patient_ref);

-- Minimum-necessary views: data, not code. For a caller holding role_id and naming purpose (PurposeOfUse),
-- the categories it may see, whether patient references are replaced by per-tenant pseudonyms, and the
-- permission the caller's token must hold for the patient (patient-scoped: a care relationship or
-- break-glass). tenant_id '' rows are built in; a tenant's own rows for a role replace the built-in ones.
-- A caller with several roles gets the union of its views for the purpose (pseudonymous only if all are).
CREATE TABLE views (
    tenant_id    text       NOT NULL DEFAULT '',
    role_id      text       NOT NULL CHECK (role_id ~ '^[a-z][a-z0-9_]{1,63}$'),
    purpose      smallint   NOT NULL CHECK (purpose BETWEEN 1 AND 8),
    view_id      text       NOT NULL CHECK (view_id ~ '^[a-z][a-z0-9_]{1,63}$'),
    categories   smallint[] NOT NULL CHECK (cardinality(categories) BETWEEN 1 AND 6 AND 0 < ALL (categories) AND 7 > ALL (categories)),
    pseudonymous boolean    NOT NULL DEFAULT false,
    permission   text       NOT NULL CHECK (permission ~ '^phi\.[a-z_.]+$'),
    PRIMARY KEY (tenant_id, role_id, purpose)
);

-- Categories: 1 demographic, 2 contact, 3 identifier, 4 clinical, 5 sensitive clinical, 6 financial.
-- Purposes: 1 treatment, 2 payment, 3 operations, 4 patient request, 5 legal, 6 public health, 7 research,
-- 8 emergency.
INSERT INTO views (role_id, purpose, view_id, categories, pseudonymous, permission) VALUES
    ('pcp_clinician',        1, 'treating_clinician',  '{1,2,3,4,5}', false, 'phi.read.clinical'),
    ('pcp_clinician',        8, 'emergency_clinician', '{1,2,3,4,5}', false, 'phi.read.clinical'),
    ('specialist_clinician', 1, 'treating_clinician',  '{1,2,3,4,5}', false, 'phi.read.clinical'),
    ('specialist_clinician', 8, 'emergency_clinician', '{1,2,3,4,5}', false, 'phi.read.clinical'),
    ('care_coordinator',     1, 'care_coordination',   '{1,2,3,4}',   false, 'phi.read.clinical'),
    ('care_coordinator',     3, 'care_coordination',   '{1,2,3}',     false, 'phi.read.demographics'),
    ('scheduler',            3, 'scheduling',          '{1,2}',       false, 'phi.read.contact'),
    ('billing',              2, 'billing',             '{1,3,6}',     false, 'phi.read.coverage'),
    ('plan_reviewer',        2, 'plan_review',         '{4}',         true,  'phi.read.plan_view'),
    ('plan_reviewer',        3, 'plan_review',         '{4}',         true,  'phi.read.plan_view');

CREATE FUNCTION refuse_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'vault %: % refused', TG_TABLE_NAME, TG_OP USING ERRCODE = 'insufficient_privilege';
END;
$$;

-- A record version never changes, with two exceptions the store makes: re-wrapping its data key under a
-- newer KEK (wrapped_dek and kek_version change together, the key stays present), and shredding (wrapped_dek
-- to NULL with shredded_at, never back). It is deleted only once shredded.
CREATE FUNCTION records_guard() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'DELETE' THEN
        IF OLD.wrapped_dek IS NOT NULL THEN
            RAISE EXCEPTION 'vault records: delete before the data key is destroyed refused'
                USING ERRCODE = 'insufficient_privilege';
        END IF;
        RETURN OLD;
    END IF;
    IF NEW.tenant_id IS DISTINCT FROM OLD.tenant_id OR NEW.record_id IS DISTINCT FROM OLD.record_id
       OR NEW.version IS DISTINCT FROM OLD.version OR NEW.patient_ref IS DISTINCT FROM OLD.patient_ref
       OR NEW.kind IS DISTINCT FROM OLD.kind OR NEW.created_at IS DISTINCT FROM OLD.created_at
       OR NEW.created_by IS DISTINCT FROM OLD.created_by
       OR NEW.amendment_request_id IS DISTINCT FROM OLD.amendment_request_id
       OR NEW.categories IS DISTINCT FROM OLD.categories
       OR NEW.part_demographic IS DISTINCT FROM OLD.part_demographic
       OR NEW.part_contact IS DISTINCT FROM OLD.part_contact
       OR NEW.part_identifier IS DISTINCT FROM OLD.part_identifier
       OR NEW.part_clinical IS DISTINCT FROM OLD.part_clinical
       OR NEW.part_sensitive IS DISTINCT FROM OLD.part_sensitive
       OR NEW.part_financial IS DISTINCT FROM OLD.part_financial
       OR (OLD.wrapped_dek IS NULL AND NEW.wrapped_dek IS NOT NULL)
       OR (NEW.wrapped_dek IS NOT NULL AND NEW.kek_version < OLD.kek_version) THEN
        RAISE EXCEPTION 'vault records: only re-wrapping or destroying the data key is allowed'
            USING ERRCODE = 'insufficient_privilege';
    END IF;
    RETURN NEW;
END;
$$;
CREATE TRIGGER records_guard BEFORE UPDATE OR DELETE ON records FOR EACH ROW EXECUTE FUNCTION records_guard();
CREATE TRIGGER records_no_truncate BEFORE TRUNCATE ON records FOR EACH STATEMENT EXECUTE FUNCTION refuse_change();
CREATE TRIGGER blind_index_no_update BEFORE UPDATE ON blind_index FOR EACH ROW EXECUTE FUNCTION refuse_change();

-- Runtime grants for these tables; 0003 defines grant_runtime() over every migration's part.
CREATE FUNCTION grant_runtime_records(schema_name text, role_name text) RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    EXECUTE format('GRANT SELECT, INSERT, UPDATE (current_version, min_decrypt_version, index_key_wrapped, '
                   'offboarded_at) ON %I.tenants TO %I', schema_name, role_name);
    EXECUTE format('GRANT SELECT, INSERT, UPDATE (wrapped_key, destroyed_at) ON %I.tenant_keys TO %I',
                   schema_name, role_name);
    EXECUTE format('GRANT SELECT, INSERT, DELETE, UPDATE (wrapped_dek, kek_version, shredded_at) '
                   'ON %I.records TO %I', schema_name, role_name);
    EXECUTE format('GRANT SELECT, INSERT, DELETE ON %I.blind_index TO %I', schema_name, role_name);
    EXECUTE format('GRANT SELECT ON %I.views TO %I', schema_name, role_name);
END;
$$;
REVOKE ALL ON FUNCTION grant_runtime_records(text, text) FROM PUBLIC;
