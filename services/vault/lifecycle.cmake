# The vault's record lifecycle (lifecycle.h: retention, legal holds, amendment requests, crypto-shredding
# with signed destruction certificates) over the records store. Its schema (migrations/0002_lifecycle.sql)
# is compiled into alma_vault_store with the other migrations. Included by CMakeLists.txt.
add_library(alma_vault_lifecycle STATIC ${CMAKE_CURRENT_LIST_DIR}/lifecycle.c)
target_include_directories(alma_vault_lifecycle PUBLIC ${CMAKE_CURRENT_LIST_DIR})
target_link_libraries(alma_vault_lifecycle PUBLIC alma_vault_store alma_crypto alma_db alma_base
                      PRIVATE PkgConfig::JANSSON)
