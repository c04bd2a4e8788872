# The canonical audit entry and its FHIR R4 view (entry.h).
target_sources(alma_audit_core PRIVATE ${CMAKE_CURRENT_LIST_DIR}/entry.c)
target_link_libraries(alma_audit_core PRIVATE PkgConfig::JANSSON)
