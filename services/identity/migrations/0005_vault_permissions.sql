-- Permissions for the PHI vault (services/vault/README.md, "Who may call"), added to built-in roles as
-- migration 0002 says a change to a built-in role is made: the *_builtin_* triggers are disabled around the
-- change, each changed role's version is bumped and the change is appended to role_history with its old and
-- new permissions. Tokens carry the new permissions from the next login or refresh.
--
--   patient.register        register a patient (no patient yet, so not patient-scoped)
--   patient.search          find patient refs by MRN, member id, name + birth date (blind indexes)
--   phi.write.demographics  a new version of a patient record (patient-scoped)
--   vault.retention.manage  retention schedules and legal holds
--   vault.records.destroy   crypto-shredding with a signed destruction certificate
--   vault.keys.manage       tenant key rotation

CREATE TEMPORARY TABLE vault_grant (role_id text NOT NULL, permission text NOT NULL) ON COMMIT DROP;
INSERT INTO vault_grant (role_id, permission) VALUES
    ('pcp_clinician', 'patient.register'), ('pcp_clinician', 'patient.search'),
    ('pcp_clinician', 'phi.write.demographics'),
    ('specialist_clinician', 'patient.register'), ('specialist_clinician', 'patient.search'),
    ('specialist_clinician', 'phi.write.demographics'),
    ('care_coordinator', 'patient.register'), ('care_coordinator', 'patient.search'),
    ('care_coordinator', 'phi.write.demographics'),
    ('scheduler', 'patient.register'), ('scheduler', 'patient.search'), ('scheduler', 'phi.write.demographics'),
    ('billing', 'patient.search'),
    ('privacy_officer', 'vault.retention.manage'), ('privacy_officer', 'vault.records.destroy'),
    ('security_admin', 'vault.keys.manage');

CREATE TEMPORARY TABLE vault_before ON COMMIT DROP AS
SELECT r.role_id, r.display_name, r.requires_mfa, r.version,
       ARRAY(SELECT p.permission FROM role_permissions p WHERE p.tenant_id = '' AND p.role_id = r.role_id
             ORDER BY p.permission COLLATE "C")::permission_name[] AS permissions
FROM roles r WHERE r.tenant_id = '' AND r.role_id IN (SELECT role_id FROM vault_grant);

ALTER TABLE role_permissions DISABLE TRIGGER role_permissions_builtin_insert;
ALTER TABLE roles DISABLE TRIGGER roles_builtin_change;

INSERT INTO role_permissions (tenant_id, role_id, permission)
SELECT '', role_id, permission FROM vault_grant ON CONFLICT DO NOTHING;

UPDATE roles SET version = version + 1, updated_at = now()
WHERE tenant_id = '' AND role_id IN (SELECT role_id FROM vault_grant);

INSERT INTO role_history (tenant_id, role_id, version, old_display_name, display_name, old_requires_mfa,
                          requires_mfa, old_permissions, permissions, changed_by)
SELECT '', b.role_id, b.version + 1, b.display_name, b.display_name, b.requires_mfa, b.requires_mfa,
       b.permissions,
       ARRAY(SELECT p.permission FROM role_permissions p WHERE p.tenant_id = '' AND p.role_id = b.role_id
             ORDER BY p.permission COLLATE "C")::permission_name[],
       'system:migration'
FROM vault_before b;

ALTER TABLE roles ENABLE TRIGGER roles_builtin_change;
ALTER TABLE role_permissions ENABLE TRIGGER role_permissions_builtin_insert;
