# alma-vault-admin offboard end to end against the real Postgres of the pg fixture: the tool run as a binary,
# a least-privilege runtime role, records made from real messages (tests/vault/test_offboard.c). Included
# by CMakeLists.txt.
if(TARGET alma-vault-admin AND TARGET alma_vault_export AND TARGET alma_vault_lifecycle)
  alma_test(test_vault_offboard SOURCES ${CMAKE_CURRENT_LIST_DIR}/test_offboard.c
            LIBS alma_vault_export alma_vault_lifecycle alma_vault_model alma_vault_store alma_testsupport_db
                 PkgConfig::JANSSON FIXTURES pg TIMEOUT 300)
  add_dependencies(test_vault_offboard alma-vault-admin)
endif()
