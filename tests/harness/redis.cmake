# ctest fixture "redis": a real redis-server on a free loopback port, started by tests/harness/redis.sh in
# ${ALMA_TESTENV_DIR}/redis; tests read its port with testenv_redis_port() (${ALMA_TESTENV_DIR}/redis.port).
# The start test reuses a server that already runs for this build tree; the stop test removes it.
add_test(NAME harness.redis.start
         COMMAND bash ${CMAKE_CURRENT_LIST_DIR}/redis.sh start ${ALMA_TESTENV_DIR})
set_tests_properties(harness.redis.start PROPERTIES FIXTURES_SETUP redis TIMEOUT 120 LABELS harness)

add_test(NAME harness.redis.stop
         COMMAND bash ${CMAKE_CURRENT_LIST_DIR}/redis.sh stop ${ALMA_TESTENV_DIR})
set_tests_properties(harness.redis.stop PROPERTIES FIXTURES_CLEANUP redis TIMEOUT 60 LABELS harness)
