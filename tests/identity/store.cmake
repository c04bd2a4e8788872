# The identity store against the real Postgres of the pg fixture. Included by CMakeLists.txt.
alma_test(test_identity_store SOURCES ${CMAKE_CURRENT_LIST_DIR}/test_store.c
          LIBS alma_identity_store alma_testsupport_db FIXTURES pg TIMEOUT 300)
