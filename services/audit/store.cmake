# The durable append path (store.c): the only audit file that uses common/db. Included by CMakeLists.txt.
target_sources(alma_audit_core PRIVATE ${CMAKE_CURRENT_LIST_DIR}/store.c)
target_link_libraries(alma_audit_core PUBLIC alma_db)
find_package(Threads REQUIRED)
target_link_libraries(alma_audit_core PUBLIC Threads::Threads)
if(NOT COMMAND alma_migrations)
  include(${CMAKE_SOURCE_DIR}/common/db/migrations.cmake)
endif()
# Generates const db_migration_set audit_migrations in "audit_migrations.h" (schema "audit").
alma_migrations(alma_audit_core audit ${CMAKE_SOURCE_DIR}/services/audit/migrations)
