# The vault's data model (model.h: validation, categories, parts, blind-index values) and its
# minimum-necessary views (views.h: the `views` table resolved per caller, with a reloading cache).
# model.c is pure (no I/O); it includes store.h for the record and blind-index types, hence alma_crypto
# (secrets, wiping) and alma_db's headers. Included by CMakeLists.txt.
add_library(alma_vault_model STATIC ${CMAKE_CURRENT_LIST_DIR}/model.c)
target_include_directories(alma_vault_model PUBLIC ${CMAKE_CURRENT_LIST_DIR})
target_link_libraries(alma_vault_model PUBLIC alma_vault_store alma_proto_vault alma_base alma_crypto alma_db PRIVATE m)

add_library(alma_vault_views STATIC ${CMAKE_CURRENT_LIST_DIR}/views.c)
target_include_directories(alma_vault_views PUBLIC ${CMAKE_CURRENT_LIST_DIR})
target_link_libraries(alma_vault_views PUBLIC alma_db alma_base PRIVATE alma_crypto Threads::Threads)
