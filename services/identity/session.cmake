# Redis sessions (session.c): idle and absolute timeouts, refresh secrets, revoke-all.
add_library(alma_identity_session STATIC ${CMAKE_CURRENT_LIST_DIR}/session.c)
target_include_directories(alma_identity_session PUBLIC ${CMAKE_CURRENT_LIST_DIR})
target_link_libraries(alma_identity_session PUBLIC alma_base alma_crypto alma_cache)
