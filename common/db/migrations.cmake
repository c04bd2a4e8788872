# alma_migrations(<target> <schema> <dir> [NAME <symbol>])
#
# Compiles every <dir>/NNNN_name.sql into <target> as a generated C array, and defines
#   const db_migration_set <symbol>;     (default symbol: <schema>_migrations)
# declared in the generated header "<symbol>.h" (on <target>'s include path), for db_migrate(). Containers
# have no source tree: the SQL must be inside the binary. Pure CMake (file(READ ... HEX)), no xxd.
#
# File names: four or more digits, an underscore, [a-z0-9_]+, ".sql" (0001_create_patients.sql). Versions
# are unique and applied in increasing order. A file is never edited once released: db_migrate() refuses a
# changed file for an applied version (SHA-256 mismatch). Adding or changing a file re-runs the generator
# (the directory is globbed with CONFIGURE_DEPENDS).
function(alma_migrations target schema dir)
  cmake_parse_arguments(M "" "NAME" "" ${ARGN})
  if(NOT schema MATCHES "^[a-z_][a-z0-9_]*$")
    message(FATAL_ERROR "alma_migrations(${target}): schema '${schema}' must match [a-z_][a-z0-9_]*")
  endif()
  string(LENGTH "${schema}" schema_len)
  if(schema_len GREATER 63)
    message(FATAL_ERROR "alma_migrations(${target}): schema '${schema}' is longer than 63 characters")
  endif()
  if(NOT M_NAME)
    set(M_NAME ${schema}_migrations)
  endif()
  if(NOT M_NAME MATCHES "^[A-Za-z_][A-Za-z0-9_]*$")
    message(FATAL_ERROR "alma_migrations(${target}): NAME '${M_NAME}' is not a C identifier")
  endif()
  if(NOT IS_ABSOLUTE "${dir}")
    set(dir ${CMAKE_CURRENT_SOURCE_DIR}/${dir})
  endif()
  if(NOT IS_DIRECTORY "${dir}")
    message(FATAL_ERROR "alma_migrations(${target}): no directory ${dir}")
  endif()

  file(GLOB files CONFIGURE_DEPENDS ${dir}/*.sql)
  list(SORT files COMPARE NATURAL)
  set(seen)
  foreach(f IN LISTS files)
    get_filename_component(fname "${f}" NAME)
    if(NOT fname MATCHES "^([0-9][0-9][0-9][0-9]+)_([a-z0-9_]+)\\.sql$")
      message(FATAL_ERROR "alma_migrations(${target}): ${f}: name must be NNNN_name.sql ([a-z0-9_] in name)")
    endif()
    string(REGEX REPLACE "^0+([0-9])" "\\1" version "${CMAKE_MATCH_1}")
    if(version EQUAL 0)
      message(FATAL_ERROR "alma_migrations(${target}): ${f}: versions start at 1")
    endif()
    if(version IN_LIST seen)
      message(FATAL_ERROR "alma_migrations(${target}): version ${version} appears twice in ${dir}")
    endif()
    list(APPEND seen ${version})
  endforeach()

  set(out_dir ${CMAKE_CURRENT_BINARY_DIR}/${target}_migrations)
  set(out_c ${out_dir}/${M_NAME}.c)
  set(out_h ${out_dir}/${M_NAME}.h)
  set(gen ${CMAKE_CURRENT_FUNCTION_LIST_DIR}/migrations_gen.cmake)
  # The file list travels as one argument: '|' for ';', which the build tool's shell would split on.
  string(REPLACE ";" "|" files_arg "${files}")
  add_custom_command(
    OUTPUT ${out_c} ${out_h}
    COMMAND ${CMAKE_COMMAND} -DSCHEMA=${schema} -DSYMBOL=${M_NAME} -DOUT_C=${out_c} -DOUT_H=${out_h}
            "-DFILES=${files_arg}" -P ${gen}
    DEPENDS ${files} ${gen}
    COMMENT "migrations ${schema}: ${M_NAME}"
    VERBATIM)
  target_sources(${target} PRIVATE ${out_c} ${out_h})
  target_include_directories(${target} PRIVATE ${out_dir})
  target_link_libraries(${target} PRIVATE alma_db)
endfunction()
