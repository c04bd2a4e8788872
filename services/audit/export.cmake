# The on-disk export (export_file.c) and the offline verifier alma-audit verify (verify_tool.c).
# Included by CMakeLists.txt.
target_sources(alma_audit_core PRIVATE ${CMAKE_CURRENT_LIST_DIR}/export_file.c ${CMAKE_CURRENT_LIST_DIR}/verify_tool.c)
target_link_libraries(alma_audit_core PRIVATE PkgConfig::JANSSON)
