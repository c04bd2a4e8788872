alma_test(test_identity_session SOURCES ${CMAKE_CURRENT_LIST_DIR}/test_session.c LIBS alma_identity_session
          FIXTURES redis)
