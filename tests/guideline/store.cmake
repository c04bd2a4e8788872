# The guideline store (services/guideline/store.h) against the real Postgres of the pg fixture, migrated by
# an owner role and used by a least-privilege runtime role. Included by CMakeLists.txt.
alma_test(test_guideline_store SOURCES ${CMAKE_CURRENT_LIST_DIR}/test_store.c
          LIBS alma_guideline_store alma_testsupport_db FIXTURES pg TIMEOUT 120)
