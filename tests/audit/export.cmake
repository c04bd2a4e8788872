# The export format and the offline verifier: writer, reader, alma-audit verify against tampered exports.
alma_test(test_audit_export_verify SOURCES ${CMAKE_CURRENT_LIST_DIR}/test_export_verify.c LIBS alma_audit_core)
