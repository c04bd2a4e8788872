# The guideline engine's core, no database: the bundle loader (test_bundle.c) and the evaluator
# (test_engine.c, including concurrent evaluation from several threads). Included by CMakeLists.txt.
alma_test(test_guideline_bundle SOURCES ${CMAKE_CURRENT_LIST_DIR}/test_bundle.c LIBS alma_guideline_core
          alma_crypto PkgConfig::JANSSON)
alma_test(test_guideline_engine SOURCES ${CMAKE_CURRENT_LIST_DIR}/test_engine.c LIBS alma_guideline_core
          alma_crypto PkgConfig::JANSSON Threads::Threads)
