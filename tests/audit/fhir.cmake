# test_audit_fhir_schema: the FHIR R4 AuditEvent view (audit_entry_to_fhir) checked against HL7's FHIR R4
# JSON schema with ajv (deploy/fhir-schema/validate-fhir.js; node and the pinned npm packages come from
# deploy/deps.sh). Included by CMakeLists.txt to register the test; the test itself runs this same file as a
# script (cmake -P, the second half below), so that it needs nothing beyond cmake to report what is missing.
if(NOT CMAKE_SCRIPT_MODE_FILE)
  add_executable(audit_fhir_sample ${CMAKE_CURRENT_LIST_DIR}/fhir_sample.c)
  target_link_libraries(audit_fhir_sample PRIVATE alma_audit_core PkgConfig::JANSSON)
  add_test(NAME test_audit_fhir_schema
           COMMAND ${CMAKE_COMMAND} -DSAMPLE=$<TARGET_FILE:audit_fhir_sample>
                   -DVALIDATOR=${CMAKE_SOURCE_DIR}/deploy/fhir-schema/validate-fhir.js
                   -DWORK=${CMAKE_CURRENT_BINARY_DIR}/fhir-schema -P ${CMAKE_CURRENT_LIST_FILE})
  set_tests_properties(test_audit_fhir_schema PROPERTIES TIMEOUT 120)
  return()
endif()

# ---- the test (cmake -DSAMPLE=... -DVALIDATOR=... -DWORK=... -P fhir.cmake). Fails, never skips.
foreach(v SAMPLE VALIDATOR WORK)
  if(NOT DEFINED ${v})
    message(FATAL_ERROR "fhir.cmake: -D${v}= is required")
  endif()
endforeach()
find_program(NODE node)
if(NOT NODE)
  message(FATAL_ERROR "node is not installed: run deploy/deps.sh (it installs nodejs and the npm packages "
                      "of deploy/fhir-schema)")
endif()
file(REMOVE_RECURSE ${WORK})
file(MAKE_DIRECTORY ${WORK})

function(run_validator file ret_rc ret_out)
  execute_process(COMMAND ${NODE} ${VALIDATOR} ${file} RESULT_VARIABLE rc OUTPUT_VARIABLE out
                  ERROR_VARIABLE out)
  # 2 is the validator's own trouble (packages missing or stale, schema not compiling): never a pass.
  if(NOT rc MATCHES "^[01]$")
    message(FATAL_ERROR "validate-fhir.js could not run (exit ${rc}):\n${out}")
  endif()
  set(${ret_rc} ${rc} PARENT_SCOPE)
  set(${ret_out} "${out}" PARENT_SCOPE)
endfunction()

# 1. The sample: every line valid.
set(sample ${WORK}/sample.ndjson)
execute_process(COMMAND ${SAMPLE} ${sample} RESULT_VARIABLE rc ERROR_VARIABLE err)
if(NOT rc EQUAL 0)
  message(FATAL_ERROR "audit_fhir_sample failed (exit ${rc}):\n${err}")
endif()
message(STATUS "${err}")
# (counted by newlines: a list of the lines would split them at the ';' in their text)
file(READ ${sample} content)
string(REGEX REPLACE "[^\n]" "" newlines "${content}")
string(LENGTH "${newlines}" n)
if(n LESS 60)
  message(FATAL_ERROR "${sample} has ${n} lines; the sample should have at least 60")
endif()
run_validator(${sample} rc out)
message("${out}")
if(NOT rc EQUAL 0)
  message(FATAL_ERROR "FHIR R4 schema validation of ${sample} failed (above)")
endif()
if(NOT out MATCHES ": ${n} AuditEvent resource\\(s\\) valid")
  message(FATAL_ERROR "the validator did not report all ${n} lines valid")
endif()

# 2. The same validator must reject broken resources, and say where (audit_fhir_sample --broken: line 1 is
# valid, each later line is broken in one way).
set(broken ${WORK}/broken.ndjson)
execute_process(COMMAND ${SAMPLE} --broken ${broken} RESULT_VARIABLE rc ERROR_VARIABLE err)
if(NOT rc EQUAL 0)
  message(FATAL_ERROR "audit_fhir_sample --broken failed (exit ${rc}):\n${err}")
endif()
run_validator(${broken} rc out)
message("${out}")
if(NOT rc EQUAL 1)
  message(FATAL_ERROR "the validator accepted ${broken}, whose lines 2 to 14 are invalid")
endif()
set(expected
    "line 2: /: must have required property 'agent'"
    "line 3: /outcome: must be equal to one of the allowed values: \\[\"0\",\"4\",\"8\",\"12\"\\]"
    "line 4: /: must NOT have additional properties: 'severity'"
    "line 5: /action: must be equal to one of the allowed values"
    "line 6: /agent/0/who/identifier: must NOT have additional properties: 'principal'"
    "line 7: /agent/0/requestor: must be boolean"
    "line 8: /recorded: must match pattern"
    "line 9: /resourceType: must be equal to constant: \"AuditEvent\""
    "line 10: /source/site: must match pattern"
    "line 11: /type: must be object"
    "line 12: /entity/0/type: must NOT have additional properties: 'coding'"
    "line 13: /purposeOfEvent/0: must NOT have additional properties: 'system'"
    "line 14: not JSON"
    ": 13 of 14 line\\(s\\) invalid")
set(missed "")
foreach(re IN LISTS expected)
  if(NOT out MATCHES "${re}")
    string(APPEND missed "\n  ${re}")
  endif()
endforeach()
if(out MATCHES "(^|\n)line 1:")
  string(APPEND missed "\n  (line 1 is valid but was reported)")
endif()
if(missed)
  message(FATAL_ERROR "the validator's report lacks:${missed}")
endif()
message("fhir.cmake: ${n} sample resources valid; the 13 broken lines rejected with their paths")
