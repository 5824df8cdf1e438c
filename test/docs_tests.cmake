# Documentation tests: one CTest entry per page (docs.README, docs.<page> for docs/<page>.md). Each runs the
# page's marked command blocks (a ```bash fence right under `<!-- test -->`) in a scratch copy of the
# repository against this build's tiny models, and checks the page's relative links and anchors
# (test/run_docs_commands.py; docs/testing.md describes the convention).
find_program(DITGEN_PYTHON3 python3)
if(NOT DITGEN_PYTHON3)
  message(STATUS "python3 not found: the docs.* tests are not registered (scripts/setup.sh installs it)")
  return()
endif()
file(GLOB DITGEN_DOC_PAGES CONFIGURE_DEPENDS ${CMAKE_SOURCE_DIR}/docs/*.md)
foreach(page ${CMAKE_SOURCE_DIR}/README.md ${DITGEN_DOC_PAGES})
  get_filename_component(stem ${page} NAME_WE)
  add_test(NAME docs.${stem}
           COMMAND ${DITGEN_PYTHON3} ${CMAKE_CURRENT_SOURCE_DIR}/run_docs_commands.py --build ${CMAKE_BINARY_DIR}
                   --source ${CMAKE_SOURCE_DIR} --fixtures ${DITGEN_FIXTURES} --work ${CMAKE_CURRENT_BINARY_DIR}/docs/${stem}
                   ${page})
  # A page that launches more than 2 ranks keeps both cores to itself.
  file(STRINGS ${page} wide REGEX "(allow-run-as-root|MPI) -np [3-9]")
  set(cores 1)
  if(wide)
    set(cores 2)
  endif()
  set_tests_properties(docs.${stem} PROPERTIES LABELS docs TIMEOUT 1500 PROCESSORS ${cores})
endforeach()
