# Credentials (credentials.h: argon2id passwords, TOTP, recovery codes, sealed TOTP secrets) and login
# throttling (throttle.h: failure counters and lockout in Redis). libargon2 and liboath are linked PRIVATE:
# callers see only credentials.h and throttle.h. The imported targets are GLOBAL so that targets in other
# directories (tests, tools) can link alma_identity_core.
if(NOT TARGET PkgConfig::ARGON2)
  pkg_check_modules(ARGON2 REQUIRED IMPORTED_TARGET GLOBAL libargon2)
endif()
if(NOT TARGET PkgConfig::OATH)
  pkg_check_modules(OATH REQUIRED IMPORTED_TARGET GLOBAL liboath)
endif()

add_library(alma_identity_core STATIC
  ${CMAKE_CURRENT_LIST_DIR}/credentials.c
  ${CMAKE_CURRENT_LIST_DIR}/throttle.c)
target_include_directories(alma_identity_core PUBLIC ${CMAKE_CURRENT_LIST_DIR})
target_link_libraries(alma_identity_core
  PUBLIC alma_base alma_crypto alma_cache
  PRIVATE PkgConfig::ARGON2 PkgConfig::OATH Threads::Threads)
