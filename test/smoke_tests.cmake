# The multi-GPU smoke script, on CPU ranks: every model's tiny default under the presets that fit 2 ranks
# (and --cfg 2) against the single-process output.
add_test(NAME smoke.cpu_np2
         COMMAND ${CMAKE_SOURCE_DIR}/scripts/smoke.sh --build ${CMAKE_BINARY_DIR} --ranks 2 --steps 1
                 --out ${CMAKE_CURRENT_BINARY_DIR}/smoke)
set_tests_properties(smoke.cpu_np2 PROPERTIES TIMEOUT 900 LABELS "mpi;smoke" PROCESSORS 2
                     PASS_REGULAR_EXPRESSION "smoke: all passed")
