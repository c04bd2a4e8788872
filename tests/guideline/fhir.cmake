# test_guideline_fhir: a review as a FHIR R4 GuidanceResponse and a CDS Hooks card (services/guideline/guidance.h)
# for every clinical vignette (tests/guideline/vignettes/) evaluated against
# services/guideline/bundles/alma-referral-core-1.0.0.json; every GuidanceResponse is checked against HL7's
# FHIR R4 JSON schema with the same ajv validator as test_vault_fhir (deploy/fhir-schema/validate-fhir.js
# --type GuidanceResponse; node and the pinned npm packages come from deploy/deps.sh). Like that test it
# fails, never skips, when node or the packages are missing. Included by CMakeLists.txt; only when the
# engine's core library is part of the build.
if(TARGET alma_guideline_core)
  alma_test(test_guideline_fhir SOURCES ${CMAKE_CURRENT_LIST_DIR}/test_fhir.c
            ${CMAKE_CURRENT_LIST_DIR}/vignette_files.c LIBS alma_guideline_core
            PkgConfig::JANSSON TIMEOUT 120)
endif()
