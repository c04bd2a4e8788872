-- The guideline engine's store (services/guideline/store.h): published bundles, the reviews the engine made
-- and the clinicians' decisions on them. Reviews and decisions are append-only for every role (triggers);
-- a bundle's content never changes once published, only which one is active. No PHI but what a review's
-- input snapshot and a decision's free-text comment may hold; ids are random references. Migrations run
-- with search_path set to this service's schema alone (common/db).

-- Published bundles. (bundle_id, version) names exactly one content hash (SHA-256 of the canonical JSON,
-- BUNDLE-FORMAT.md); json is the bundle text as published. At most one bundle is active (the one
-- ReviewReferral uses when the caller names none).
CREATE TABLE bundles (
    bundle_id    text        COLLATE "C" NOT NULL CHECK (bundle_id ~ '^[a-z0-9][a-z0-9-]{1,62}$'),
    version      text        COLLATE "C" NOT NULL
                 CHECK (version ~ '^(0|[1-9][0-9]{0,3})\.(0|[1-9][0-9]{0,3})\.(0|[1-9][0-9]{0,3})$'),
    content_hash text        COLLATE "C" NOT NULL CHECK (content_hash ~ '^[0-9a-f]{64}$'),
    json         text        NOT NULL CHECK (octet_length(json) BETWEEN 2 AND 1048576),
    active       boolean     NOT NULL DEFAULT false,
    published_at timestamptz NOT NULL DEFAULT now(),
    published_by text        NOT NULL
                 CHECK (octet_length(published_by) BETWEEN 1 AND 128 AND published_by !~ '[[:cntrl:]]'),
    PRIMARY KEY (bundle_id, version),
    UNIQUE (bundle_id, version, content_hash) -- what a review's foreign key names
);
CREATE UNIQUE INDEX bundles_one_active ON bundles (active) WHERE active;
CREATE INDEX bundles_published ON bundles (published_at);

-- One row per ReviewReferral: who asked, what the engine decided and with which bundle and engine, the
-- canonical input snapshot (what-if re-evaluates it) and the engine's canonical output. outcome is
-- alma.guideline.v1.Outcome (1 REFER .. 5 NO_PATHWAY), urgency alma.guideline.v1.Urgency (0 when not a
-- referral). NO_PATHWAY has no pathway and no rule; every other outcome has both.
CREATE TABLE reviews (
    review_id           text        COLLATE "C" PRIMARY KEY CHECK (review_id ~ '^rv_[0-9a-f]{32}$'),
    tenant_id           text        COLLATE "C" NOT NULL CHECK (tenant_id ~ '^[a-z0-9][a-z0-9-]{1,62}$'),
    referral_id         text        COLLATE "C" NOT NULL CHECK (referral_id ~ '^[A-Za-z0-9_-]{1,64}$'),
    patient_ref         text        COLLATE "C" NOT NULL CHECK (patient_ref ~ '^pt_[0-9a-f]{32}$'),
    clinician_id        text        COLLATE "C" NOT NULL
                        CHECK (octet_length(clinician_id) BETWEEN 1 AND 128 AND clinician_id !~ '[[:cntrl:]]'),
    outcome             smallint    NOT NULL CHECK (outcome BETWEEN 1 AND 5),
    urgency             smallint    NOT NULL CHECK (urgency BETWEEN 0 AND 3),
    pathway_id          text        COLLATE "C" NOT NULL CHECK (pathway_id ~ '^([a-z0-9][a-z0-9_-]{0,63})?$'),
    rule_id             text        COLLATE "C" NOT NULL CHECK (rule_id ~ '^([a-z0-9][a-z0-9_-]{0,63})?$'),
    engine_version      text        COLLATE "C" NOT NULL
                        CHECK (engine_version ~ '^[A-Za-z0-9][A-Za-z0-9._/+-]{0,31}$'),
    bundle_id           text        COLLATE "C" NOT NULL,
    bundle_version      text        COLLATE "C" NOT NULL,
    bundle_hash         text        COLLATE "C" NOT NULL,
    input_hash          text        COLLATE "C" NOT NULL CHECK (input_hash ~ '^[0-9a-f]{64}$'),
    input_json          text        NOT NULL CHECK (octet_length(input_json) BETWEEN 2 AND 1048576),
    recommendation_json text        NOT NULL CHECK (octet_length(recommendation_json) BETWEEN 2 AND 1048576),
    created_at          timestamptz NOT NULL DEFAULT now(),
    UNIQUE (review_id, tenant_id), -- what a decision's foreign key names
    FOREIGN KEY (bundle_id, bundle_version, bundle_hash) REFERENCES bundles (bundle_id, version, content_hash),
    CHECK ((outcome = 5) = (pathway_id = '')),
    CHECK ((outcome = 5) = (rule_id = ''))
);
CREATE INDEX reviews_referral ON reviews (tenant_id, referral_id, created_at);
CREATE INDEX reviews_time ON reviews (tenant_id, created_at);

-- A clinician's decision on a review, at most one per review, in the review's tenant (the foreign key
-- includes tenant_id). kind is alma.guideline.v1.DecisionKind (1 ACCEPT, 2 OVERRIDE), reason
-- alma.guideline.v1.OverrideReason (1..6 with OVERRIDE, 0 with ACCEPT). comment: free text that may hold
-- PHI, 0..1000 bytes.
CREATE TABLE decisions (
    decision_id  text        COLLATE "C" PRIMARY KEY CHECK (decision_id ~ '^dn_[0-9a-f]{32}$'),
    review_id    text        COLLATE "C" NOT NULL UNIQUE,
    tenant_id    text        COLLATE "C" NOT NULL CHECK (tenant_id ~ '^[a-z0-9][a-z0-9-]{1,62}$'),
    clinician_id text        COLLATE "C" NOT NULL
                 CHECK (octet_length(clinician_id) BETWEEN 1 AND 128 AND clinician_id !~ '[[:cntrl:]]'),
    kind         smallint    NOT NULL CHECK (kind BETWEEN 1 AND 2),
    reason       smallint    NOT NULL CHECK (reason BETWEEN 0 AND 6),
    comment      text        NOT NULL DEFAULT '' CHECK (octet_length(comment) <= 1000),
    created_at   timestamptz NOT NULL DEFAULT now(),
    FOREIGN KEY (review_id, tenant_id) REFERENCES reviews (review_id, tenant_id),
    CHECK ((kind = 2) = (reason > 0))
);
CREATE INDEX decisions_time ON decisions (tenant_id, created_at);

CREATE FUNCTION guideline_refuse_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'guideline %: % refused', TG_TABLE_NAME, TG_OP USING ERRCODE = 'insufficient_privilege';
END;
$$;

-- A published bundle is never deleted and its content never changes; only `active` does.
CREATE FUNCTION bundles_guard() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'DELETE' THEN
        RAISE EXCEPTION 'guideline bundles: DELETE refused' USING ERRCODE = 'insufficient_privilege';
    END IF;
    IF NEW.bundle_id IS DISTINCT FROM OLD.bundle_id OR NEW.version IS DISTINCT FROM OLD.version
       OR NEW.content_hash IS DISTINCT FROM OLD.content_hash OR NEW.json IS DISTINCT FROM OLD.json
       OR NEW.published_at IS DISTINCT FROM OLD.published_at
       OR NEW.published_by IS DISTINCT FROM OLD.published_by THEN
        RAISE EXCEPTION 'guideline bundles: only activating or deactivating a bundle is allowed'
            USING ERRCODE = 'insufficient_privilege';
    END IF;
    RETURN NEW;
END;
$$;
CREATE TRIGGER bundles_guard BEFORE UPDATE OR DELETE ON bundles FOR EACH ROW EXECUTE FUNCTION bundles_guard();
CREATE TRIGGER bundles_no_truncate BEFORE TRUNCATE ON bundles
    FOR EACH STATEMENT EXECUTE FUNCTION guideline_refuse_change();
CREATE TRIGGER reviews_append_only BEFORE UPDATE OR DELETE ON reviews
    FOR EACH ROW EXECUTE FUNCTION guideline_refuse_change();
CREATE TRIGGER reviews_no_truncate BEFORE TRUNCATE ON reviews
    FOR EACH STATEMENT EXECUTE FUNCTION guideline_refuse_change();
CREATE TRIGGER decisions_append_only BEFORE UPDATE OR DELETE ON decisions
    FOR EACH ROW EXECUTE FUNCTION guideline_refuse_change();
CREATE TRIGGER decisions_no_truncate BEFORE TRUNCATE ON decisions
    FOR EACH STATEMENT EXECUTE FUNCTION guideline_refuse_change();

-- Runtime grants for these tables; 0002 defines grant_runtime() over every migration's part.
--
--   table       SELECT INSERT UPDATE (columns)  DELETE
--   bundles       x      x     active            -
--   reviews       x      x     -                 -
--   decisions     x      x     -                 -
CREATE FUNCTION grant_runtime_guideline(schema_name text, role_name text) RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    EXECUTE format('GRANT SELECT, INSERT, UPDATE (active) ON %I.bundles TO %I', schema_name, role_name);
    EXECUTE format('GRANT SELECT, INSERT ON %I.reviews TO %I', schema_name, role_name);
    EXECUTE format('GRANT SELECT, INSERT ON %I.decisions TO %I', schema_name, role_name);
END;
$$;
REVOKE ALL ON FUNCTION grant_runtime_guideline(text, text) FROM PUBLIC;
