# Tests of the canonical audit entry and its FHIR R4 view.
alma_test(test_audit_entry SOURCES ${CMAKE_CURRENT_LIST_DIR}/test_entry.c LIBS alma_audit_core PkgConfig::JANSSON)
