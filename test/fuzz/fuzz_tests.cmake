# Hostile inputs through every parser of user files (issue 22): a deterministic generator of mutated
# safetensors headers, configs, index files, presets and prompt files. Each mutant must parse or throw
# ditgen::Error within a second; a crash, another exception or a slow parse fails the test. Reproduce a
# failure with the seed it prints: ditgen_fuzz run --seed N --count M.
add_executable(ditgen_fuzz ${CMAKE_CURRENT_LIST_DIR}/fuzz_parsers.cpp)
target_link_libraries(ditgen_fuzz PRIVATE ditgen_engine)
target_precompile_headers(ditgen_fuzz REUSE_FROM ditgen_engine)
add_test(NAME fuzz.parsers COMMAND ditgen_fuzz run --seed 22 --count 700)
set_tests_properties(fuzz.parsers PROPERTIES LABELS fuzz TIMEOUT 60)
