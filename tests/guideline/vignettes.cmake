# Clinical vignettes for the first guideline bundle (test_vignettes.c): every file in vignettes/ evaluated
# against services/guideline/bundles/alma-referral-core-1.0.0.json. Included by CMakeLists.txt; only when the
# engine's core library is part of the build.
if(TARGET alma_guideline_core)
  alma_test(test_guideline_vignettes SOURCES ${CMAKE_CURRENT_LIST_DIR}/test_vignettes.c
            ${CMAKE_CURRENT_LIST_DIR}/vignette_files.c LIBS alma_guideline_core
            PkgConfig::JANSSON)
endif()
