# The audit store against the real Postgres of the pg fixture. Included by CMakeLists.txt.
find_package(Threads REQUIRED)
alma_test(test_audit_store SOURCES ${CMAKE_CURRENT_LIST_DIR}/test_store.c LIBS alma_audit_core alma_testsupport_db Threads::Threads
          FIXTURES pg TIMEOUT 300)
