-- The built-in roles (services/identity/README.md, "Roles and permissions"): tenant_id '', version 1, each
-- with its version-1 row in role_history. Permissions are data, not code. MFA is always required for
-- privacy_officer, security_admin and platform_admin.
--
-- After seeding, triggers make the built-in rows read-only for everyone, the owner included: the service
-- (and the runtime role) can never change a built-in role. A later migration that must change one disables
-- the *_builtin_* triggers around its change, bumps the version and appends to role_history as the store does
-- for tenant roles.

CREATE TEMPORARY TABLE builtin_role_def (
    role_id      text      NOT NULL,
    display_name text      NOT NULL,
    requires_mfa boolean   NOT NULL,
    permissions  text[]    NOT NULL
) ON COMMIT DROP;

INSERT INTO builtin_role_def (role_id, display_name, requires_mfa, permissions) VALUES
    ('pcp_clinician', 'Primary care clinician', false,
     ARRAY['phi.read.clinical', 'phi.read.demographics', 'phi.write.clinical', 'referral.create',
           'referral.review', 'phi.break_glass']),
    ('specialist_clinician', 'Specialist clinician', false,
     ARRAY['phi.read.clinical', 'phi.read.demographics', 'phi.write.clinical', 'referral.create',
           'referral.review', 'phi.break_glass']),
    ('care_coordinator', 'Care coordinator', false,
     ARRAY['phi.read.demographics', 'phi.read.clinical', 'referral.create', 'care.relationships.manage']),
    ('scheduler', 'Scheduler', false,
     ARRAY['phi.read.demographics', 'phi.read.contact']),
    ('billing', 'Billing', false,
     ARRAY['phi.read.demographics', 'phi.read.coverage']),
    ('privacy_officer', 'Privacy officer', true,
     ARRAY['audit.read', 'privacy.review', 'breach.manage', 'identity.users.read']),
    ('security_admin', 'Security administrator', true,
     ARRAY['identity.users.manage', 'identity.users.read', 'identity.roles.manage', 'identity.roles.read',
           'identity.sessions.revoke', 'audit.read']),
    ('plan_reviewer', 'Health plan reviewer', false,
     ARRAY['referral.read.plan', 'phi.read.plan_view']),
    ('patient', 'Patient', false,
     ARRAY['phi.read.self']),
    ('platform_admin', 'Platform administrator', true,
     ARRAY['platform.tenants.manage', 'identity.users.manage', 'identity.roles.manage', 'identity.roles.read',
           'partners.manage']);

INSERT INTO roles (tenant_id, role_id, display_name, requires_mfa, version, built_in)
SELECT '', role_id, display_name, requires_mfa, 1, true FROM builtin_role_def;

INSERT INTO role_permissions (tenant_id, role_id, permission)
SELECT '', d.role_id, p.permission FROM builtin_role_def d, unnest(d.permissions) AS p(permission);

INSERT INTO role_history (tenant_id, role_id, version, display_name, requires_mfa, permissions, changed_by)
SELECT '', d.role_id, 1, d.display_name, d.requires_mfa,
       ARRAY(SELECT p FROM unnest(d.permissions) AS p ORDER BY p COLLATE "C")::permission_name[], 'system:migration'
FROM builtin_role_def d;

CREATE FUNCTION refuse_builtin_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'built-in roles change only by migration: % on % refused', TG_OP, TG_TABLE_NAME
        USING ERRCODE = 'insufficient_privilege';
END;
$$;

CREATE TRIGGER roles_builtin_insert BEFORE INSERT ON roles
    FOR EACH ROW WHEN (NEW.built_in OR NEW.tenant_id = '') EXECUTE FUNCTION refuse_builtin_change();
CREATE TRIGGER roles_builtin_change BEFORE UPDATE OR DELETE ON roles
    FOR EACH ROW WHEN (OLD.built_in) EXECUTE FUNCTION refuse_builtin_change();
CREATE TRIGGER role_permissions_builtin_insert BEFORE INSERT ON role_permissions
    FOR EACH ROW WHEN (NEW.tenant_id = '') EXECUTE FUNCTION refuse_builtin_change();
CREATE TRIGGER role_permissions_builtin_change BEFORE UPDATE OR DELETE ON role_permissions
    FOR EACH ROW WHEN (OLD.tenant_id = '') EXECUTE FUNCTION refuse_builtin_change();
