# Credentials (no dependencies beyond the libraries) and the login throttle (against the harness Redis).
alma_test(test_identity_credentials SOURCES ${CMAKE_CURRENT_LIST_DIR}/test_credentials.c
          LIBS alma_identity_core PkgConfig::ARGON2 PkgConfig::OATH)
alma_test(test_identity_throttle SOURCES ${CMAKE_CURRENT_LIST_DIR}/test_throttle.c
          LIBS alma_identity_core FIXTURES redis TIMEOUT 120)
