-- The identity service's records (services/identity/README.md, proto/identity/v1/identity.proto): tenants,
-- principals and their credentials, roles and permissions as versioned data, grants, care relationships,
-- break-glass grants, partner clients and the token signing keys. Migrations run with search_path set to this
-- service's schema alone (common/db); the store (services/identity/store.c) names everything unqualified.
--
-- Tenant isolation in the schema itself: every row that belongs to a tenant carries tenant_id, and a row that
-- hangs off a principal references it by (tenant_id, principal_id), so it cannot point into another tenant
-- even if a query forgot its tenant filter. Every format and length the store validates is also checked
-- here (domains below, check constraints on the tables), so a bug in C cannot store what the API forbids.
--
-- Actors (created_by, granted_by, changed_by, ended_by) are a principal id -- of any tenant: a platform admin
-- creates another tenant's first users -- or 'system:<name>' (the bootstrap tool, migrations).

CREATE DOMAIN tenant_ref AS text CHECK (VALUE ~ '^[a-z0-9][a-z0-9-]{1,62}$');
CREATE DOMAIN principal_ref AS text CHECK (VALUE ~ '^(usr|svc)_[0-9a-f]{32}$');
CREATE DOMAIN patient_ref AS text CHECK (VALUE ~ '^pt_[0-9a-f]{32}$');
CREATE DOMAIN actor_ref AS text CHECK (VALUE ~ '^((usr|svc)_[0-9a-f]{32}|system:[a-z0-9._-]{1,64})$');
CREATE DOMAIN role_name AS text CHECK (VALUE ~ '^[a-z][a-z0-9_]{1,63}$');
-- Dotted lowercase words: "phi.read.clinical", "identity.users.manage".
CREATE DOMAIN permission_name AS text
    CHECK (VALUE ~ '^[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*){1,7}$' AND octet_length(VALUE) <= 128);
-- SMART Backend Services scopes: "system/AuditEvent.read", "system/GuidanceResponse.rs".
CREATE DOMAIN scope_name AS text
    CHECK (VALUE ~ '^(system|user|patient)/([A-Z][A-Za-z]{0,63}|\*)\.(read|write|\*|[cruds]{1,5})$');
-- Names shown to people: 1..200 bytes, no control characters.
CREATE DOMAIN display_text AS text
    CHECK (octet_length(VALUE) BETWEEN 1 AND 200 AND VALUE !~ '[\x01-\x1f\x7f]');

CREATE TABLE tenants (
    tenant_id            tenant_ref   PRIMARY KEY,
    kind                 text         NOT NULL CHECK (kind IN ('provider', 'health_plan')),
    display_name         display_text NOT NULL,
    mfa_required_for_all boolean      NOT NULL DEFAULT false,
    created_at           timestamptz  NOT NULL DEFAULT now(),
    UNIQUE (tenant_id, kind) -- partner_clients reference (tenant_id, 'health_plan')
);

-- Users and service principals. Never deleted: disabled (a principal id stays meaningful in the audit log).
CREATE TABLE principals (
    principal_id    principal_ref NOT NULL PRIMARY KEY,
    tenant_id       tenant_ref    NOT NULL REFERENCES tenants (tenant_id),
    kind            text          NOT NULL CHECK (kind IN ('user', 'service')),
    username        text          NOT NULL CHECK (username ~ '^[a-z0-9._@-]{3,64}$'),
    display_name    display_text  NOT NULL,
    state           text          NOT NULL DEFAULT 'active' CHECK (state IN ('active', 'disabled')),
    created_at      timestamptz   NOT NULL DEFAULT now(),
    created_by      actor_ref     NOT NULL,
    disabled_at     timestamptz,
    disabled_reason text CHECK (octet_length(disabled_reason) BETWEEN 1 AND 500
                                AND disabled_reason !~ '[\x01-\x08\x0b-\x1f\x7f]'),
    UNIQUE (tenant_id, username),
    UNIQUE (tenant_id, principal_id), -- the target of every (tenant_id, principal_id) reference below
    CHECK ((kind = 'user') = (left(principal_id, 4) = 'usr_')),
    CHECK ((state = 'disabled') = (disabled_at IS NOT NULL)),
    CHECK ((state = 'disabled') = (disabled_reason IS NOT NULL))
);

-- PHC string of argon2id ("$argon2id$v=19$m=...,t=...,p=...$salt$hash"); hashing is credentials.c's.
CREATE TABLE password_hashes (
    principal_id principal_ref NOT NULL PRIMARY KEY,
    tenant_id    tenant_ref    NOT NULL,
    encoded      text          NOT NULL CHECK (octet_length(encoded) <= 512 AND encoded ~
                   '^\$argon2id\$v=19\$m=[0-9]{1,10},t=[0-9]{1,10},p=[0-9]{1,3}\$[A-Za-z0-9+/]{11,}\$[A-Za-z0-9+/]{16,}$'),
    updated_at   timestamptz   NOT NULL DEFAULT now(),
    FOREIGN KEY (tenant_id, principal_id) REFERENCES principals (tenant_id, principal_id)
);

-- The TOTP secret, sealed (encrypted and authenticated) by credentials.c; the store never sees it in clear.
-- last_step is the last RFC 6238 time step accepted: a code is accepted once, across replicas, by the
-- compare-and-set UPDATE ... WHERE last_step < $step.
CREATE TABLE totp (
    principal_id  principal_ref NOT NULL PRIMARY KEY,
    tenant_id     tenant_ref    NOT NULL,
    sealed_secret bytea         NOT NULL CHECK (length(sealed_secret) BETWEEN 16 AND 512),
    confirmed     boolean       NOT NULL DEFAULT false,
    last_step     bigint        NOT NULL DEFAULT 0 CHECK (last_step >= 0),
    created_at    timestamptz   NOT NULL DEFAULT now(),
    confirmed_at  timestamptz,
    CHECK (confirmed = (confirmed_at IS NOT NULL)),
    FOREIGN KEY (tenant_id, principal_id) REFERENCES principals (tenant_id, principal_id)
);

-- One-time recovery codes, stored as HMAC-SHA-256 under a server key (never the code). Replaced as a set.
CREATE TABLE recovery_codes (
    principal_id principal_ref NOT NULL,
    tenant_id    tenant_ref    NOT NULL,
    idx          smallint      NOT NULL CHECK (idx BETWEEN 0 AND 15),
    code_hmac    bytea         NOT NULL CHECK (length(code_hmac) = 32),
    created_at   timestamptz   NOT NULL DEFAULT now(),
    used_at      timestamptz,
    PRIMARY KEY (principal_id, idx),
    FOREIGN KEY (tenant_id, principal_id) REFERENCES principals (tenant_id, principal_id)
);

-- Roles: tenant_id '' for the built-in roles (0002), else the tenant that defined it. Every change bumps
-- version and appends to role_history. A tenant role may not take a built-in role's id (trigger below), so
-- a role id names one role within a tenant's view (built-in + its own).
CREATE TABLE roles (
    tenant_id    text         NOT NULL DEFAULT ''
                              CHECK (tenant_id = '' OR tenant_id ~ '^[a-z0-9][a-z0-9-]{1,62}$'),
    role_id      role_name    NOT NULL,
    display_name display_text NOT NULL,
    requires_mfa boolean      NOT NULL DEFAULT false,
    version      bigint       NOT NULL DEFAULT 1 CHECK (version >= 1),
    built_in     boolean      NOT NULL DEFAULT false,
    updated_at   timestamptz  NOT NULL DEFAULT now(),
    -- The tenant of a tenant role must exist ('' is not a tenant, so the reference is to NULLIF(tenant_id, '')).
    owner_tenant text GENERATED ALWAYS AS (NULLIF(tenant_id, '')) STORED REFERENCES tenants (tenant_id),
    PRIMARY KEY (tenant_id, role_id),
    CHECK (built_in = (tenant_id = ''))
);
CREATE INDEX roles_by_id ON roles (role_id);

CREATE TABLE role_permissions (
    tenant_id  text            NOT NULL,
    role_id    role_name       NOT NULL,
    permission permission_name NOT NULL,
    PRIMARY KEY (tenant_id, role_id, permission),
    FOREIGN KEY (tenant_id, role_id) REFERENCES roles (tenant_id, role_id)
);

-- Append-only (triggers below): every version of every role, with the values before and after the change
-- (old_* are NULL for version 1, the creation).
CREATE TABLE role_history (
    tenant_id        text              NOT NULL,
    role_id          role_name         NOT NULL,
    version          bigint            NOT NULL CHECK (version >= 1),
    old_display_name display_text,
    display_name     display_text      NOT NULL,
    old_requires_mfa boolean,
    requires_mfa     boolean           NOT NULL,
    old_permissions  permission_name[],
    permissions      permission_name[] NOT NULL,
    changed_by       actor_ref         NOT NULL,
    changed_at       timestamptz       NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, role_id, version),
    FOREIGN KEY (tenant_id, role_id) REFERENCES roles (tenant_id, role_id),
    CHECK ((version = 1) = (old_permissions IS NULL)),
    CHECK ((old_permissions IS NULL) = (old_display_name IS NULL)),
    CHECK ((old_permissions IS NULL) = (old_requires_mfa IS NULL)),
    CHECK (cardinality(permissions) <= 256 AND array_position(permissions, NULL) IS NULL
           AND coalesce(array_ndims(permissions), 1) = 1),
    CHECK (cardinality(old_permissions) <= 256 AND array_position(old_permissions, NULL) IS NULL
           AND coalesce(array_ndims(old_permissions), 1) = 1)
);

-- Which principal holds which role. role_tenant_id is '' (built-in) or the principal's own tenant: a grant
-- of another tenant's role cannot be stored.
CREATE TABLE grants (
    tenant_id      tenant_ref    NOT NULL,
    principal_id   principal_ref NOT NULL,
    role_tenant_id text          NOT NULL CHECK (role_tenant_id IN ('', tenant_id)),
    role_id        role_name     NOT NULL,
    granted_by     actor_ref     NOT NULL,
    granted_at     timestamptz   NOT NULL DEFAULT now(),
    PRIMARY KEY (principal_id, role_id),
    FOREIGN KEY (tenant_id, principal_id) REFERENCES principals (tenant_id, principal_id),
    FOREIGN KEY (role_tenant_id, role_id) REFERENCES roles (tenant_id, role_id)
);
CREATE INDEX grants_by_role ON grants (role_tenant_id, role_id); -- who holds a role that changed

-- Treating relationships. Ended, never deleted: the only change is setting end_at/ended_by/ended_at
-- (the runtime role may UPDATE only those columns, 0003).
CREATE TABLE care_relationships (
    relationship_id text          NOT NULL PRIMARY KEY CHECK (relationship_id ~ '^rel_[0-9a-f]{32}$'),
    tenant_id       tenant_ref    NOT NULL,
    clinician_id    principal_ref NOT NULL,
    patient_ref     patient_ref   NOT NULL,
    kind            text          NOT NULL
                                  CHECK (kind IN ('primary_care', 'specialist', 'care_team', 'covering')),
    start_at        timestamptz   NOT NULL,
    end_at          timestamptz   CHECK (end_at >= start_at), -- NULL: open-ended
    created_by      actor_ref     NOT NULL,
    created_at      timestamptz   NOT NULL DEFAULT now(),
    ended_by        actor_ref,
    ended_at        timestamptz,
    CHECK ((ended_by IS NULL) = (ended_at IS NULL)),
    CHECK (ended_by IS NULL OR end_at IS NOT NULL),
    FOREIGN KEY (tenant_id, clinician_id) REFERENCES principals (tenant_id, principal_id)
);
CREATE INDEX care_relationships_lookup ON care_relationships (tenant_id, clinician_id, patient_ref);

-- Break-glass grants: append-only (triggers below), at most four hours each.
CREATE TABLE break_glass_grants (
    grant_id     text          NOT NULL PRIMARY KEY CHECK (grant_id ~ '^bg_[0-9a-f]{32}$'),
    tenant_id    tenant_ref    NOT NULL,
    clinician_id principal_ref NOT NULL,
    patient_ref  patient_ref   NOT NULL,
    reason       text          NOT NULL CHECK (octet_length(reason) BETWEEN 20 AND 1000
                                               AND reason !~ '[\x01-\x08\x0b\x0c\x0e-\x1f\x7f]'),
    start_at     timestamptz   NOT NULL,
    end_at       timestamptz   NOT NULL,
    created_at   timestamptz   NOT NULL DEFAULT now(),
    CHECK (end_at > start_at AND end_at <= start_at + interval '4 hours'),
    FOREIGN KEY (tenant_id, clinician_id) REFERENCES principals (tenant_id, principal_id)
);
CREATE INDEX break_glass_by_created ON break_glass_grants (tenant_id, created_at, grant_id);
CREATE INDEX break_glass_by_end ON break_glass_grants (end_at);

-- A health plan's API clients (partner gateway). tenant_kind pins the tenant to a health plan.
CREATE TABLE partner_clients (
    client_id    text         NOT NULL PRIMARY KEY
                              CHECK (client_id ~ '^[A-Za-z0-9][A-Za-z0-9._:-]{2,127}$'),
    tenant_id    tenant_ref   NOT NULL,
    tenant_kind  text         NOT NULL DEFAULT 'health_plan' CHECK (tenant_kind = 'health_plan'),
    display_name display_text NOT NULL,
    jwks         jsonb        NOT NULL CHECK (jsonb_typeof(jwks) = 'object'
                                              AND jsonb_typeof(jwks -> 'keys') = 'array'
                                              AND octet_length(jwks::text) <= 65536),
    scopes       scope_name[] NOT NULL CHECK (cardinality(scopes) <= 64
                                              AND array_position(scopes, NULL) IS NULL
                                              AND coalesce(array_ndims(scopes), 1) = 1),
    disabled     boolean      NOT NULL DEFAULT false,
    created_by   actor_ref    NOT NULL,
    created_at   timestamptz  NOT NULL DEFAULT now(),
    UNIQUE (tenant_id, client_id),
    FOREIGN KEY (tenant_id, tenant_kind) REFERENCES tenants (tenant_id, kind)
);

-- Token signing keys (Ed25519), platform-wide. One current key signs; the previous one is still published
-- for verification; older ones are retired. Only the current key keeps its (sealed) private half: a key
-- that no longer signs has no use for it.
CREATE TABLE signing_keys (
    kid            text        NOT NULL PRIMARY KEY CHECK (kid ~ '^[A-Za-z0-9_-]{8,64}$'),
    sealed_private bytea       CHECK (length(sealed_private) BETWEEN 16 AND 512),
    public_key     bytea       NOT NULL CHECK (length(public_key) = 32),
    state          text        NOT NULL CHECK (state IN ('current', 'previous', 'retired')),
    created_at     timestamptz NOT NULL DEFAULT now(),
    retired_at     timestamptz,
    CHECK ((state = 'current') = (sealed_private IS NOT NULL)),
    CHECK ((state = 'retired') = (retired_at IS NOT NULL))
);
CREATE UNIQUE INDEX signing_keys_one_current ON signing_keys (state) WHERE state = 'current';
CREATE UNIQUE INDEX signing_keys_one_previous ON signing_keys (state) WHERE state = 'previous';

-- Append-only tables: UPDATE, DELETE and TRUNCATE refused for every role, the owner included (an owner can
-- only get round it by disabling the trigger, which is itself DDL and visible).
CREATE FUNCTION refuse_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'identity records are append-only: % on % refused', TG_OP, TG_TABLE_NAME
        USING ERRCODE = 'insufficient_privilege';
END;
$$;

CREATE TRIGGER role_history_append_only BEFORE UPDATE OR DELETE ON role_history
    FOR EACH ROW EXECUTE FUNCTION refuse_change();
CREATE TRIGGER role_history_no_truncate BEFORE TRUNCATE ON role_history
    FOR EACH STATEMENT EXECUTE FUNCTION refuse_change();
CREATE TRIGGER break_glass_append_only BEFORE UPDATE OR DELETE ON break_glass_grants
    FOR EACH ROW EXECUTE FUNCTION refuse_change();
CREATE TRIGGER break_glass_no_truncate BEFORE TRUNCATE ON break_glass_grants
    FOR EACH STATEMENT EXECUTE FUNCTION refuse_change();

-- A tenant role may not take a built-in role's id (nor a later built-in a tenant role's): grants are keyed
-- by (principal, role id), and a role id must mean one role in a tenant.
CREATE FUNCTION roles_unique_id() RETURNS trigger LANGUAGE plpgsql SET search_path FROM CURRENT AS $$
BEGIN
    IF EXISTS (SELECT 1 FROM roles r WHERE r.role_id = NEW.role_id AND (r.tenant_id = '') <> (NEW.tenant_id = ''))
    THEN
        RAISE EXCEPTION 'role id taken by a % role', CASE WHEN NEW.tenant_id = '' THEN 'tenant' ELSE 'built-in' END
            USING ERRCODE = 'unique_violation';
    END IF;
    RETURN NEW;
END;
$$;
CREATE TRIGGER roles_unique_id BEFORE INSERT ON roles FOR EACH ROW EXECUTE FUNCTION roles_unique_id();

REVOKE UPDATE, DELETE, TRUNCATE ON role_history, break_glass_grants FROM PUBLIC;
