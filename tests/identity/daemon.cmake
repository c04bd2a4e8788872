# The real alma-identity binary end to end over mTLS, next to a real alma-audit, against the harness
# PostgreSQL and Redis, with the first tenant made by tools/alma-admin (tests/identity/test_identity_daemon.c).
# Included by CMakeLists.txt.
if(TARGET alma-identity AND TARGET alma-audit AND TARGET alma-admin)
  alma_test(test_identity_daemon SOURCES ${CMAKE_CURRENT_LIST_DIR}/test_identity_daemon.c
            LIBS alma_authz alma_identity_core alma_identity_store alma_rpc alma_testsupport_rpc alma_proto_identity
                 alma_proto_audit alma_testsupport_db Threads::Threads
            FIXTURES pg redis pki TIMEOUT 600)
  add_dependencies(test_identity_daemon alma-identity alma-audit alma-admin)
endif()
