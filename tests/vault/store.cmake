# The vault store and key providers against the real Postgres of the pg fixture, and the key rotation of
# 100k records with alma-vault-admin killed midway. Included by CMakeLists.txt.
alma_test(test_vault_store SOURCES ${CMAKE_CURRENT_LIST_DIR}/test_store.c
          LIBS alma_vault_store alma_testsupport_db Threads::Threads FIXTURES pg TIMEOUT 300)
alma_test(test_vault_keyprovider SOURCES ${CMAKE_CURRENT_LIST_DIR}/test_keyprovider.c LIBS alma_vault_store
          TIMEOUT 60)
if(TARGET alma-vault-admin)
  alma_test(test_vault_rewrap_kill SOURCES ${CMAKE_CURRENT_LIST_DIR}/test_rewrap_kill.c
            LIBS alma_vault_store alma_testsupport_db Threads::Threads FIXTURES pg TIMEOUT 900)
  add_dependencies(test_vault_rewrap_kill alma-vault-admin)
endif()
