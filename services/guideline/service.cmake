# alma-guideline (the service, README.md): the handlers over the store (alma_guideline_store) and the
# evaluator (alma_guideline_core). The bundle authors' CLI is tools/alma-bundle. Included by CMakeLists.txt.
if(TARGET alma_guideline_store AND TARGET alma_guideline_core)
  add_executable(alma-guideline ${CMAKE_CURRENT_LIST_DIR}/main.c ${CMAKE_CURRENT_LIST_DIR}/service.c
                 ${CMAKE_CURRENT_LIST_DIR}/review.c)
  target_link_libraries(alma-guideline PRIVATE alma_guideline_store alma_guideline_core alma_authz_remote
                        alma_auditclient alma_proto_guideline alma_proto_audit alma_proto_vault alma_daemon alma_rpc
                        alma_db alma_cache alma_crypto PkgConfig::JANSSON Threads::Threads)
endif()
