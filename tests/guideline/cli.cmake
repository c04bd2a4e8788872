# alma-cli's guideline commands end to end: the real alma-cli binary against a real alma-guideline over mTLS,
# inside the suite (a real alma-audit and alma-identity against the harness PostgreSQL and Redis;
# tests/support/testsuite.h), the first bundle given by --bundle-file, and a real alma-vault
# (tests/vault/vaultd.c) for reviews with --from-vault. Included by CMakeLists.txt.
if(TARGET alma-guideline AND TARGET alma-vault AND TARGET alma-cli AND TARGET alma_testsupport_suite)
  alma_test(test_guideline_cli SOURCES ${CMAKE_CURRENT_LIST_DIR}/test_guideline_cli.c
            ${CMAKE_SOURCE_DIR}/tests/vault/vaultd.c
            LIBS alma_testsupport_suite alma_proto_audit alma_db alma_crypto PkgConfig::JANSSON Threads::Threads
            FIXTURES pg redis pki TIMEOUT 600)
  target_include_directories(test_guideline_cli PRIVATE ${CMAKE_SOURCE_DIR}/tests/vault)
  add_dependencies(test_guideline_cli alma-guideline alma-vault alma-identity alma-audit alma-admin alma-cli)
endif()
