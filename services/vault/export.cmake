# One patient's records read, unpacked and built into a FHIR R4 Bundle (patient_export.h): shared by the
# service's ExportPatient (export.c) and alma-vault-admin's offboard (tools/alma-vault.c), so both write the
# same Bundle. Included by CMakeLists.txt.
if(TARGET alma_vault_store AND TARGET alma_vault_model AND TARGET alma_vault_fhir)
  add_library(alma_vault_export STATIC ${CMAKE_CURRENT_LIST_DIR}/patient_export.c)
  target_include_directories(alma_vault_export PUBLIC ${CMAKE_CURRENT_LIST_DIR})
  target_link_libraries(alma_vault_export PUBLIC alma_vault_store alma_vault_model alma_vault_fhir alma_proto_vault
                        alma_crypto alma_base)
endif()
