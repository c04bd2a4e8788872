# The vault store (store.h: records, envelope encryption, tenant keys, rotation, shredding) and the master-key
# providers (keyprovider.h), with every vault migration compiled in. Included by CMakeLists.txt.
add_library(alma_vault_store STATIC ${CMAKE_CURRENT_LIST_DIR}/store.c ${CMAKE_CURRENT_LIST_DIR}/keyprovider.c)
target_include_directories(alma_vault_store PUBLIC ${CMAKE_CURRENT_LIST_DIR})
target_link_libraries(alma_vault_store PUBLIC alma_db alma_crypto alma_base PRIVATE Threads::Threads)
if(NOT COMMAND alma_migrations)
  include(${CMAKE_SOURCE_DIR}/common/db/migrations.cmake)
endif()
# Generates const db_migration_set vault_migrations in "vault_migrations.h" (schema "vault").
alma_migrations(alma_vault_store vault ${CMAKE_SOURCE_DIR}/services/vault/migrations)
