# test_vault_fhir: the right-of-access Bundle (services/vault/fhir.h): its structure checked with jansson, and
# the Bundle checked against HL7's FHIR R4 JSON schema with the same ajv validator as test_audit_fhir_schema
# (deploy/fhir-schema/validate-fhir.js --type Bundle; node and the pinned npm packages come from
# deploy/deps.sh). Like that test it fails, never skips, when node or the packages are missing.
alma_test(test_vault_fhir SOURCES ${CMAKE_CURRENT_LIST_DIR}/test_fhir.c
          LIBS alma_vault_fhir alma_crypto PkgConfig::JANSSON TIMEOUT 120)
