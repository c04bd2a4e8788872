# The vault's data model (no database) and its minimum-necessary views (real Postgres, pg fixture).
# Included by CMakeLists.txt. test_vault_views migrates with vault_store_migrate when the store library
# exists, and otherwise applies migrations/0001_records.sql itself (see test_views.c).
alma_test(test_vault_model SOURCES ${CMAKE_CURRENT_LIST_DIR}/test_model.c LIBS alma_vault_model)

set(_vault_views_libs alma_vault_views alma_testsupport_db)
if(TARGET alma_vault_store)
  list(APPEND _vault_views_libs alma_vault_store)
endif()
alma_test(test_vault_views SOURCES ${CMAKE_CURRENT_LIST_DIR}/test_views.c LIBS ${_vault_views_libs}
          FIXTURES pg TIMEOUT 300)
if(TARGET alma_vault_store)
  target_compile_definitions(test_vault_views PRIVATE ALMA_TEST_VIEWS_WITH_STORE=1)
endif()
