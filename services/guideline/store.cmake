# The guideline engine's Postgres store (store.h: published bundles, append-only reviews and decisions), with
# every guideline migration compiled in. Included by CMakeLists.txt.
add_library(alma_guideline_store STATIC ${CMAKE_CURRENT_LIST_DIR}/store.c)
target_include_directories(alma_guideline_store PUBLIC ${CMAKE_CURRENT_LIST_DIR})
target_link_libraries(alma_guideline_store PUBLIC alma_db alma_base alma_crypto)
if(NOT COMMAND alma_migrations)
  include(${CMAKE_SOURCE_DIR}/common/db/migrations.cmake)
endif()
# Generates const db_migration_set guideline_migrations in "guideline_migrations.h" (schema "guideline").
alma_migrations(alma_guideline_store guideline ${CMAKE_SOURCE_DIR}/services/guideline/migrations)
