# alma-vault: the handlers over the store, the model, the views, the lifecycle and the FHIR export (one
# patient's Bundle is built by alma_vault_export, shared with alma-vault-admin's offboard).
if(TARGET alma_vault_store AND TARGET alma_vault_model AND TARGET alma_vault_lifecycle AND TARGET alma_vault_fhir
   AND TARGET alma_vault_export)
  add_executable(alma-vault ${CMAKE_CURRENT_LIST_DIR}/main.c ${CMAKE_CURRENT_LIST_DIR}/service.c
                 ${CMAKE_CURRENT_LIST_DIR}/records.c ${CMAKE_CURRENT_LIST_DIR}/export.c
                 ${CMAKE_CURRENT_LIST_DIR}/admin.c)
  target_link_libraries(alma-vault PRIVATE alma_vault_store alma_vault_model alma_vault_views alma_vault_lifecycle
                        alma_vault_fhir alma_vault_export alma_authz_remote alma_auditclient alma_proto_vault
                        alma_daemon alma_rpc alma_db alma_cache)
endif()
