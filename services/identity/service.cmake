# alma-identity: the handlers over the store, credentials, sessions and common/authz. keys.c (token signing
# keys: master key, sealing) is compiled into alma-identity and tools/alma-admin alike.
add_executable(alma-identity ${CMAKE_CURRENT_LIST_DIR}/main.c ${CMAKE_CURRENT_LIST_DIR}/service.c
               ${CMAKE_CURRENT_LIST_DIR}/auth.c ${CMAKE_CURRENT_LIST_DIR}/admin.c
               ${CMAKE_CURRENT_LIST_DIR}/keys.c)
target_link_libraries(alma-identity PRIVATE alma_identity_store alma_identity_core alma_identity_session
                      alma_authz alma_auditclient alma_proto_identity alma_daemon alma_rpc alma_db alma_cache)
