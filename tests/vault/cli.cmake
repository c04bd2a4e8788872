# alma-cli's vault commands end to end: the real alma-cli binary against a real alma-vault over mTLS, inside
# the suite (a real alma-audit and alma-identity against the harness PostgreSQL and Redis;
# tests/support/testsuite.h). Included by CMakeLists.txt.
if(TARGET alma-vault AND TARGET alma-cli AND TARGET alma_testsupport_suite)
  alma_test(test_vault_cli SOURCES ${CMAKE_CURRENT_LIST_DIR}/test_cli.c ${CMAKE_CURRENT_LIST_DIR}/vaultd.c
            LIBS alma_testsupport_suite alma_proto_audit alma_crypto alma_db Threads::Threads
            FIXTURES pg redis pki TIMEOUT 600)
  add_dependencies(test_vault_cli alma-vault alma-identity alma-audit alma-admin alma-cli)
endif()
