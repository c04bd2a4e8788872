-- The guideline engine's content-admin permission (services/guideline/README.md, "Who may call"), added to a
-- built-in role as migration 0002 says a change to a built-in role is made (triggers off around the change,
-- a new role version, the change in role_history with old and new permissions).
--
--   guideline.content.publish  publish a guideline bundle (bundles are shared by every tenant): platform_admin

CREATE TEMPORARY TABLE guideline_grant (role_id text NOT NULL, permission text NOT NULL) ON COMMIT DROP;
INSERT INTO guideline_grant (role_id, permission) VALUES
    ('platform_admin', 'guideline.content.publish');

CREATE TEMPORARY TABLE guideline_before ON COMMIT DROP AS
SELECT r.role_id, r.display_name, r.requires_mfa, r.version,
       ARRAY(SELECT p.permission FROM role_permissions p WHERE p.tenant_id = '' AND p.role_id = r.role_id
             ORDER BY p.permission COLLATE "C")::permission_name[] AS permissions
FROM roles r WHERE r.tenant_id = '' AND r.role_id IN (SELECT role_id FROM guideline_grant);

ALTER TABLE role_permissions DISABLE TRIGGER role_permissions_builtin_insert;
ALTER TABLE roles DISABLE TRIGGER roles_builtin_change;

INSERT INTO role_permissions (tenant_id, role_id, permission)
SELECT '', role_id, permission FROM guideline_grant ON CONFLICT DO NOTHING;

UPDATE roles SET version = version + 1, updated_at = now()
WHERE tenant_id = '' AND role_id IN (SELECT role_id FROM guideline_grant);

INSERT INTO role_history (tenant_id, role_id, version, old_display_name, display_name, old_requires_mfa,
                          requires_mfa, old_permissions, permissions, changed_by)
SELECT '', b.role_id, b.version + 1, b.display_name, b.display_name, b.requires_mfa, b.requires_mfa,
       b.permissions,
       ARRAY(SELECT p.permission FROM role_permissions p WHERE p.tenant_id = '' AND p.role_id = b.role_id
             ORDER BY p.permission COLLATE "C")::permission_name[],
       'system:migration'
FROM guideline_before b;

ALTER TABLE roles ENABLE TRIGGER roles_builtin_change;
ALTER TABLE role_permissions ENABLE TRIGGER role_permissions_builtin_insert;
