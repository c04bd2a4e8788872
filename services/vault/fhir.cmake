# The §164.524 right-of-access export: a patient's records as one FHIR R4 Bundle (fhir.h). Pure: no I/O.
# jansson builds and writes the JSON; alma_crypto gives the base64 of attachments.
add_library(alma_vault_fhir STATIC ${CMAKE_CURRENT_LIST_DIR}/fhir.c)
target_include_directories(alma_vault_fhir PUBLIC ${CMAKE_CURRENT_LIST_DIR})
target_link_libraries(alma_vault_fhir PUBLIC alma_proto_vault alma_base PRIVATE alma_crypto PkgConfig::JANSSON)
