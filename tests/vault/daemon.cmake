# The real alma-vault end to end over mTLS, inside the suite: a real alma-audit and alma-identity against the
# harness PostgreSQL and Redis (tests/support/testsuite.h). Included by CMakeLists.txt.
if(TARGET alma-vault AND TARGET alma_testsupport_suite)
  alma_test(test_vault_daemon SOURCES ${CMAKE_CURRENT_LIST_DIR}/test_vault_daemon.c ${CMAKE_CURRENT_LIST_DIR}/vaultd.c
            LIBS alma_testsupport_suite alma_proto_vault alma_proto_audit alma_rpc Threads::Threads
            FIXTURES pg redis pki TIMEOUT 900)
  add_dependencies(test_vault_daemon alma-vault alma-identity alma-audit alma-admin)
endif()
