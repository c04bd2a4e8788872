# ctest fixtures named pg, redis and pki (see alma_test FIXTURES in the top-level CMakeLists.txt).
# Each file below adds a setup and a cleanup test for one fixture.
include(${CMAKE_CURRENT_LIST_DIR}/pg.cmake OPTIONAL)
include(${CMAKE_CURRENT_LIST_DIR}/redis.cmake OPTIONAL)
include(${CMAKE_CURRENT_LIST_DIR}/pki.cmake OPTIONAL)
