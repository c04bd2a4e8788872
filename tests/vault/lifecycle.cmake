# The vault's record lifecycle against the real Postgres of the pg fixture, through a least-privilege
# runtime role (tests/vault/test_lifecycle.c). Included by CMakeLists.txt.
if(TARGET alma_vault_lifecycle)
  alma_test(test_vault_lifecycle SOURCES ${CMAKE_CURRENT_LIST_DIR}/test_lifecycle.c
            LIBS alma_vault_lifecycle alma_vault_store alma_testsupport_db PkgConfig::JANSSON FIXTURES pg TIMEOUT 300)
endif()
