-- Exact, index-backed lookups for two questions the service asks on hot or administrative paths
-- (services/identity/README.md):
--
--   break_glass_active     Check: is there a break-glass grant in force for this clinician and patient? One
--                          probe by (tenant, clinician, patient) and end, however many grants the tenant has
--                          (identity_store_break_glass_active).
--   grants_by_tenant_role  PutRole: who in the tenant holds the role that changed, in principal-id order, a
--                          page at a time, to revoke their tokens (identity_store_role_holders). grants_by_role
--                          (0001) leads with role_tenant_id, which is '' for every tenant's grants of a
--                          built-in role.
CREATE INDEX break_glass_active ON break_glass_grants (tenant_id, clinician_id, patient_ref, end_at);
CREATE INDEX grants_by_tenant_role ON grants (tenant_id, role_id, principal_id COLLATE "C");
