# The guideline engine's core (bundle.h: load and check bundles; engine.h: evaluate a referral against one;
# guidance.h: a review as a FHIR GuidanceResponse and a CDS Hooks card).
# Pure: no database, no RPC, no logging. jansson parses bundles and inputs; alma_crypto gives SHA-256 and hex.
# Included by CMakeLists.txt.
add_library(alma_guideline_core STATIC ${CMAKE_CURRENT_LIST_DIR}/bundle.c ${CMAKE_CURRENT_LIST_DIR}/canon.c
                                       ${CMAKE_CURRENT_LIST_DIR}/engine.c ${CMAKE_CURRENT_LIST_DIR}/guidance.c
                                       ${CMAKE_CURRENT_LIST_DIR}/shapes.c)
target_include_directories(alma_guideline_core PUBLIC ${CMAKE_CURRENT_LIST_DIR})
target_link_libraries(alma_guideline_core PUBLIC alma_base PRIVATE alma_crypto PkgConfig::JANSSON m)
