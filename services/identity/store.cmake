# The identity store (store.h: tenants, principals, credentials at rest, roles, grants, care relationships,
# break-glass, partner clients, signing keys) over common/db, with its migrations compiled in.
# Included by CMakeLists.txt.
add_library(alma_identity_store STATIC ${CMAKE_CURRENT_LIST_DIR}/store.c)
target_include_directories(alma_identity_store PUBLIC ${CMAKE_CURRENT_LIST_DIR})
target_link_libraries(alma_identity_store PUBLIC alma_db alma_base)
if(NOT COMMAND alma_migrations)
  include(${CMAKE_SOURCE_DIR}/common/db/migrations.cmake)
endif()
# Generates const db_migration_set identity_migrations in "identity_migrations.h" (schema "identity").
alma_migrations(alma_identity_store identity ${CMAKE_SOURCE_DIR}/services/identity/migrations)
