# ctest fixture "pg": a real, throw-away PostgreSQL on a free loopback port (fsync=on), started by
# tests/harness/pg.sh in ${ALMA_TESTENV_DIR}/pg; tests read its URI with testenv_pg_uri()
# (${ALMA_TESTENV_DIR}/pg.uri, e.g. postgresql://postgres@127.0.0.1:PORT/postgres). Each build tree has its own
# testenv directory and port, so build/ and build-asan/ can run their tests at the same time. The start test
# reuses a server that already runs for this build tree; the stop test shuts it down and removes its data.
file(MAKE_DIRECTORY ${ALMA_TESTENV_DIR})

add_test(NAME harness.pg.start
         COMMAND bash ${CMAKE_CURRENT_LIST_DIR}/pg.sh start ${ALMA_TESTENV_DIR})
set_tests_properties(harness.pg.start PROPERTIES FIXTURES_SETUP pg TIMEOUT 180 LABELS harness)

add_test(NAME harness.pg.stop
         COMMAND bash ${CMAKE_CURRENT_LIST_DIR}/pg.sh stop ${ALMA_TESTENV_DIR})
set_tests_properties(harness.pg.stop PROPERTIES FIXTURES_CLEANUP pg TIMEOUT 120 LABELS harness)
