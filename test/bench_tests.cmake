# Benchmark sweeps (scripts/bench_sweep.sh) and the floor probe (ditgen_bench_floor) on the CPU: the dry
# run of the shipped sweep files, a bad sweep file refused line by line, a real sweep of the tiny models
# on 1, 2 and 4 ranks (one table row per configuration, finite x floor), rows that share one launch
# (--prompt-file), the probe at small shapes, and --dtype fp8 refused on the CPU.
set(SWEEP ${CMAKE_SOURCE_DIR}/scripts/bench_sweep.sh)
set(FAIL ${CMAKE_CURRENT_SOURCE_DIR}/expect_fail.sh)
set(SWEEP_ENV "DITGEN_BIN=$<TARGET_FILE:ditgen>" "DITGEN_FLOOR_BIN=$<TARGET_FILE:ditgen_bench_floor>"
              "MPIRUN=${MPIEXEC_EXECUTABLE}")

add_test(NAME bench.sweep_dry_run_flux2_h200
         COMMAND ${SWEEP} ${CMAKE_SOURCE_DIR}/bench/sweeps/flux2_h200.txt --dry-run --tag dry
                 --out ${CMAKE_CURRENT_BINARY_DIR}/sweep_dry)
set_tests_properties(bench.sweep_dry_run_flux2_h200 PROPERTIES LABELS bench TIMEOUT 60 ENVIRONMENT "${SWEEP_ENV}"
                     PASS_REGULAR_EXPRESSION "ditgen flux2 --random-weights --height 1024 --width 1024 --steps 28[^\n]* --fp8 -o [^\n]*dry_row03_run.png --track-memory")
add_test(NAME bench.sweep_dry_run_cpu_tiny
         COMMAND ${SWEEP} ${CMAKE_SOURCE_DIR}/bench/sweeps/cpu_tiny.txt --dry-run --tag dry
                 --out ${CMAKE_CURRENT_BINARY_DIR}/sweep_dry)
set_tests_properties(bench.sweep_dry_run_cpu_tiny PROPERTIES LABELS bench TIMEOUT 60 ENVIRONMENT "${SWEEP_ENV}"
                     PASS_REGULAR_EXPRESSION "-np 4 -x NCCL_NVLS_ENABLE=0 [^\n]*ditgen flux2 [^\n]*--parallel ulysses_tp -o")
# Rows that differ only in size, steps, seed and prompt share one launch: the dry run prints the group, each
# row's prompt-file item (its own output) and the one command; --no-group prints one command per row.
add_test(NAME bench.sweep_dry_run_grouped
         COMMAND ${SWEEP} ${CMAKE_CURRENT_SOURCE_DIR}/sweeps/grouped.txt --dry-run --tag dry
                 --out ${CMAKE_CURRENT_BINARY_DIR}/sweep_dry)
set_tests_properties(bench.sweep_dry_run_grouped PROPERTIES LABELS bench TIMEOUT 60 ENVIRONMENT "${SWEEP_ENV}"
                     PASS_REGULAR_EXPRESSION "4 configuration\\(s\\) in 2 launch\\(es\\)[^\n]*\n# group 1: rows 1-3 share one launch \\(np 1\\), prompt file [^\n]*dry_group1.jsonl:\n# row 1 \\(line 4\\)[^\n]*\n#   .\"height\": 64, \"width\": 64, \"steps\": 2, \"output\": \"[^\n]*dry_row01_run.png\".\n.*#   .\"prompt\": \"a red fox, in snow\", \"seed\": 7, \"height\": 64, \"width\": 32, \"steps\": 2, [^\n]*dry_row03_run.png\".\n[^\n]*ditgen flux2 --device cpu --warmup 0 --prompt-file [^\n]*dry_group1.jsonl -o [^\n]*sweep_dry --track-memory\n# row 4 \\(line 7\\)[^\n]*\n[^\n]*ditgen flux2 [^\n]*--guidance 3 -o [^\n]*dry_row04_run.png --track-memory")
add_test(NAME bench.sweep_dry_run_no_group
         COMMAND ${SWEEP} ${CMAKE_CURRENT_SOURCE_DIR}/sweeps/grouped.txt --dry-run --no-group --tag dry
                 --out ${CMAKE_CURRENT_BINARY_DIR}/sweep_dry)
set_tests_properties(bench.sweep_dry_run_no_group PROPERTIES LABELS bench TIMEOUT 60 ENVIRONMENT "${SWEEP_ENV}"
                     PASS_REGULAR_EXPRESSION "4 configuration\\(s\\) in 4 launch\\(es\\).*ditgen flux2 --device cpu -H 32 -W 64 --steps 1 -s 3 --warmup 0 -o [^\n]*dry_row02_run.png --track-memory")
# Each bad line is named (file:line: reason) and nothing runs.
foreach(case "sdxl:unknown model 'sdxl'" "np_missing:bad.txt:3: --parallel ulysses sizes itself.*add --np N"
             "np_mismatch:bad.txt:4: --np 3 differs from the mesh degrees' product 4"
             "preset_size:bad.txt:5: --parallel ulysses_tp .*at least 4, got 2"
             "output:bad.txt:6: -o: the sweep chooses the output" "count:5 error\\(s\\) in .*nothing was run")
  string(REPLACE ":" ";" parts "${case}")
  list(GET parts 0 name)
  string(LENGTH "${name}:" skip)
  string(SUBSTRING "${case}" ${skip} -1 regex)
  add_test(NAME bench.sweep_dry_run_bad_${name}
           COMMAND ${FAIL} "${regex}" ${SWEEP} ${CMAKE_CURRENT_SOURCE_DIR}/sweeps/bad.txt --dry-run)
  set_tests_properties(bench.sweep_dry_run_bad_${name} PROPERTIES LABELS bench TIMEOUT 60)
endforeach()

# The real thing on CPU ranks: every row runs, the probe measures the tiny shapes, the table has one row per
# configuration with a finite ratio.
add_test(NAME bench.sweep_cpu_tiny
         COMMAND ${CMAKE_CURRENT_SOURCE_DIR}/run_bench_sweep.sh ${SWEEP} ${CMAKE_SOURCE_DIR}/bench/sweeps/cpu_tiny.txt
                 ${CMAKE_CURRENT_BINARY_DIR}/sweep_cpu_tiny)
set_tests_properties(bench.sweep_cpu_tiny PROPERTIES LABELS "bench;mpi" TIMEOUT 300 PROCESSORS 2
                     ENVIRONMENT "${SWEEP_ENV}" PASS_REGULAR_EXPRESSION "bench_sweep check: 4 rows ok")

# Rows 1-3 of test/sweeps/grouped.txt in one ditgen launch (--prompt-file), row 4 alone: 2 launches, one
# table row per configuration, each row's report with its own size, steps, seed and prompt. A shared launch
# that fails (an item ditgen refuses) fails each of its rows, and the sweep exits non-zero.
add_test(NAME bench.sweep_grouped
         COMMAND ${CMAKE_CURRENT_SOURCE_DIR}/run_bench_sweep.sh ${SWEEP} ${CMAKE_CURRENT_SOURCE_DIR}/sweeps/grouped.txt
                 ${CMAKE_CURRENT_BINARY_DIR}/sweep_grouped 2)
set_tests_properties(bench.sweep_grouped PROPERTIES LABELS bench TIMEOUT 120 ENVIRONMENT "${SWEEP_ENV}"
                     PASS_REGULAR_EXPRESSION "bench_sweep: \\[1-3/4\\] group 1: one launch for rows 1-3 \\(np 1\\).*bench_sweep check: 4 rows ok in 2 launches")
add_test(NAME bench.sweep_grouped_failed
         COMMAND ${FAIL} "FAILED row 2 \\(the launch of rows 1-2 exited with 2\\)"
                 ${SWEEP} ${CMAKE_CURRENT_SOURCE_DIR}/sweeps/grouped_bad.txt --tag ci
                 --out ${CMAKE_CURRENT_BINARY_DIR}/sweep_grouped_failed)
set_tests_properties(bench.sweep_grouped_failed PROPERTIES LABELS bench TIMEOUT 60 ENVIRONMENT "${SWEEP_ENV}")

add_test(NAME bench.floor_probe_cpu
         COMMAND ditgen_bench_floor --device cpu --matmul 64,32,48 --matmul 16,16,16 --attention 1,2,16,8
                 --attention 2,2,16,8,5 --reps 3 --json ${CMAKE_CURRENT_BINARY_DIR}/floor_cpu.json)
set_tests_properties(bench.floor_probe_cpu PROPERTIES LABELS bench TIMEOUT 60
                     PASS_REGULAR_EXPRESSION "\\| matmul \\| 64,32,48 \\| [0-9.]+ \\| [0-9.]+ \\|.*\\| attention \\| 2,2,16,8,5 \\| [0-9.]+ \\| [0-9.]+ \\|")
add_test(NAME bench.floor_probe_fp8_cpu_refused
         COMMAND ${FAIL} "--dtype fp8 measures at::_scaled_mm on the GPU's FP8 tensor cores: it needs --device cuda"
                 $<TARGET_FILE:ditgen_bench_floor> --device cpu --dtype fp8 --matmul 64,32,48)
set_tests_properties(bench.floor_probe_fp8_cpu_refused PROPERTIES LABELS bench TIMEOUT 60)
add_test(NAME bench.floor_probe_bad_shape
         COMMAND ${FAIL} "--matmul '64,x,48': 'x' is not a positive integer \\(expected M,K,N\\)"
                 $<TARGET_FILE:ditgen_bench_floor> --device cpu --matmul 64,x,48)
set_tests_properties(bench.floor_probe_bad_shape PROPERTIES LABELS bench TIMEOUT 60)
