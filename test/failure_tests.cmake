# No silent wrong output (issue 11): flags and configs that used to be accepted or silently replaced,
# ranks started with different requests, full disks, failed jobs and NaN weights all end non-zero
# with a message naming the flag, file, key or rank, and leave nothing at the output path.
set(FAIL ${CMAKE_CURRENT_SOURCE_DIR}/expect_fail.sh)
set(NO_OUTPUT ${CMAKE_CURRENT_SOURCE_DIR}/run_expect_no_output.cmake)
set(FWORK ${CMAKE_CURRENT_BINARY_DIR}/failures)
set(D $<TARGET_FILE:ditgen>)

# name | command | regex | flags (comma-separated)
set(FLAG_CASES
  "steps_huge|flux2|--steps: must be an integer from 1 to 10000, got '99999999999999999999999'|--steps,99999999999999999999999"
  "height_negative|flux2|--height: must be an integer from 1 to 16384, got '-5'|--height,-5"
  "guidance_nan|flux2|--guidance: must be a finite number >= 0|--guidance,nan"
  "guidance_inf|flux2|--guidance: must be a finite number >= 0|--guidance,inf"
  "seed_negative|flux2|--seed: must be an integer from 0 to 18446744073709551615, got '-1'|--seed,-1"
  "comm_timeout_nan|flux2|--comm-timeout: must be a finite number > 0|--comm-timeout,nan"
  "cfg_three|qwen-image|--cfg: must be an integer from 1 to 2|--cfg,3"
  "true_cfg_nan|qwen-image|--true-cfg-scale: must be a finite number >= 0|--true-cfg-scale,nan"
  "warmup_float|flux2|--warmup: must be an integer from 0 to 1000, got '1.5'|--warmup,1.5"
  "output_jpg|flux2|--output '.*x.jpg': this model writes PNG images|-o,${FWORK}/x.jpg"
  "fp8_cpu_build|flux2|--fp8 needs the CUDA build of ditgen|--fp8"
  "fp8_cpu_build_qwen|qwen-image|--fp8 needs the CUDA build of ditgen|--fp8"
  "fp8_cpu_build_ltx2|ltx2|--fp8 needs the CUDA build of ditgen|--fp8"
  "offload_cpu_build|flux2|--offload streams the model's blocks from host memory to the GPU: it needs the CUDA build of ditgen|--offload"
  "offload_cpu_build_qwen|qwen-image|--offload streams the model's blocks from host memory to the GPU: it needs the CUDA build|--offload"
  "offload_cpu_build_ltx2|ltx2|--offload streams the model's blocks from host memory to the GPU: it needs the CUDA build|--offload"
)
foreach(entry ${FLAG_CASES})
  string(REPLACE "|" ";" parts "${entry}")
  list(GET parts 0 name)
  list(GET parts 1 cmd)
  list(GET parts 2 regex)
  list(GET parts 3 flags)
  string(REPLACE "," ";" flags "${flags}")
  add_test(NAME cli.flag.${name} COMMAND ${FAIL} "${regex}" ${D} ${cmd} --warmup 0 --steps 1 ${flags})
  set_tests_properties(cli.flag.${name} PROPERTIES LABELS cli TIMEOUT 60)
endforeach()

# Explicitly empty paths are errors, not the defaults (through sh: CMake drops empty arguments).
add_test(NAME cli.flag.output_empty COMMAND ${FAIL} "--output: must not be empty" sh -c "'${D}' flux2 --warmup 0 -o ''")
add_test(NAME cli.flag.model_path_empty
         COMMAND ${FAIL} "--model-path: must not be empty" sh -c "'${D}' qwen-image --warmup 0 --model-path ''")
set_tests_properties(cli.flag.output_empty cli.flag.model_path_empty PROPERTIES LABELS cli TIMEOUT 60)

# An explicit empty prompt is empty (as upstream), not the preset's.
add_test(NAME cli.empty_prompt_is_empty
         COMMAND ${CMAKE_COMMAND} -DDITGEN=${D} -DWORK=${FWORK}/empty_prompt -P ${CMAKE_CURRENT_SOURCE_DIR}/run_empty_prompt.cmake)
set_tests_properties(cli.empty_prompt_is_empty PROPERTIES LABELS cli TIMEOUT 120)

# Configs, index and weights (variants made by make_bad_models.sh).
set(M ${CMAKE_CURRENT_BINARY_DIR}/cli/models)
set(RUN ${D} flux2 --warmup 0 --steps 1 -o ${FWORK}/out/)
add_test(NAME cli.config.float_count COMMAND ${FAIL} "transformer/config.json: key 'num_layers' must be an integer, got 2.5" ${RUN} --model-path ${M}/floatcount)
add_test(NAME cli.config.zero_theta COMMAND ${FAIL} "transformer/config.json: rope_theta must be positive, got 0" ${RUN} --model-path ${M}/badtheta)
add_test(NAME cli.config.not_object COMMAND ${FAIL} "transformer/config.json: expected a JSON object, got array" ${RUN} --model-path ${M}/notobject)
add_test(NAME cli.config.index_escape COMMAND ${FAIL} "weight_map\\['.*'\\] = '\\.\\./\\.\\./good/.*leaves the folder" ${RUN} --model-path ${M}/escape)
add_test(NAME cli.nan_weight COMMAND ${FAIL} "tensor '.*' in '.*00001-of-00003.safetensors' has non-finite weights: 1 NaN" ${RUN} --model-path ${M}/nanweight)
set_tests_properties(cli.config.float_count cli.config.zero_theta cli.config.not_object cli.config.index_escape
                     cli.nan_weight PROPERTIES LABELS cli TIMEOUT 120 FIXTURES_REQUIRED cli_models)

# export-tiny refuses a folder with files in it; --replace leaves no stale file of the old export.
add_test(NAME cli.export_refuses_non_empty
         COMMAND ${FAIL} "is not empty: choose a new folder, or pass --replace" ${D} export-tiny flux2 ${M}/good)
set_tests_properties(cli.export_refuses_non_empty PROPERTIES LABELS cli TIMEOUT 60 FIXTURES_REQUIRED cli_models)
add_test(NAME cli.export_replace
         COMMAND sh -c "rm -rf '${FWORK}/replace' && mkdir -p '${FWORK}/replace/transformer' && touch '${FWORK}/replace/transformer/stale.safetensors' && '${D}' export-tiny qwen-image '${FWORK}/replace' --replace && test ! -e '${FWORK}/replace/transformer/stale.safetensors' && test -f '${FWORK}/replace/model_index.json' && ! ls '${FWORK}' | grep -q partial")
set_tests_properties(cli.export_replace PROPERTIES LABELS cli TIMEOUT 120)

# A full disk or a file-size limit: the write fails with the reason, nothing is left.
add_test(NAME cli.full_disk_leaves_nothing
         COMMAND ${CMAKE_COMMAND} "-DRUN=${D};flux2;--warmup;0;--steps;1;-o;${FWORK}/fsize/" "-DPREFIX=ulimit -f 16;"
                 "-DREGEX=cannot write '.*flux2-tiny.128x128.C0.png' .*File too large" -DDIR=${FWORK}/fsize -P ${NO_OUTPUT})
set_tests_properties(cli.full_disk_leaves_nothing PROPERTIES LABELS cli TIMEOUT 120)

# Ranks started with different requests (an MPMD line) are refused on every rank, naming the flag.
add_test(NAME mpi.ranks_disagree
         COMMAND ${FAIL} "\\[rank 1/2\\] error: the 2 ranks were not started with the same request: --seed is '1' on rank 0 but '2' on rank 1"
                 ${MPIRUN} -np 1 ${D} flux2 --warmup 0 --steps 1 --tp 2 --seed 1 -o ${FWORK}/mpmd/ :
                 -np 1 ${D} flux2 --warmup 0 --steps 1 --tp 2 --seed 2 -o ${FWORK}/mpmd/)
add_test(NAME mpi.ranks_disagree_command
         COMMAND ${FAIL} "command is 'flux2' on rank 0 but 'qwen-image' on rank 1"
                 ${MPIRUN} -np 1 ${D} flux2 --warmup 0 --steps 1 --tp 2 : -np 1 ${D} qwen-image --warmup 0 --steps 1 --tp 2)
# A rank that disappears after rank 0 has written its files: the job fails and nothing is left.
add_test(NAME mpi.failed_job_leaves_nothing
         COMMAND ${CMAKE_COMMAND} "-DRUN=${MPIRUN};-np;2;-x;DITGEN_TEST_EXIT_BEFORE_COMMIT=1;${D};flux2;--warmup;0;--steps;1;--tp;2;-o;${FWORK}/failed/"
                 "-DREGEX=." -DDIR=${FWORK}/failed -P ${NO_OUTPUT})
set_tests_properties(mpi.ranks_disagree mpi.ranks_disagree_command mpi.failed_job_leaves_nothing
                     PROPERTIES LABELS mpi TIMEOUT 120 PROCESSORS 2)

# Activations that cannot fit next to the loaded weights end the run before the first step, with the
# numbers and the flags that shrink them (the test hook pretends the host has 1 MiB available).
add_test(NAME cli.error.activations_do_not_fit
         COMMAND ${CMAKE_COMMAND} -E env DITGEN_TEST_AVAILABLE_BYTES=1048576
                 ${FAIL} "a denoising step needs about .* of activations on each rank but the host has only 1.00 MiB available once the weights are loaded: reduce --height/--width"
                 ${D} flux2 --warmup 0 --steps 1 -H 1024 -W 1024 -o ${FWORK}/activations/)
set_tests_properties(cli.error.activations_do_not_fit PROPERTIES LABELS cli TIMEOUT 120)

# The A/B switches (docs/benchmarks.md) are checked at start-up, on every rank, before anything is written.
add_test(NAME cli.error.env_switches
         COMMAND ${CMAKE_COMMAND} "-DRUN=${MPIRUN};-np;2;-x;DITGEN_GEMM_ROWS=lots;${D};flux2;--warmup;0;--steps;1;-o;${FWORK}/env_switches/"
                 "-DREGEX=rank 1/2. error: DITGEN_GEMM_ROWS='lots': expected a whole number of rows"
                 -DDIR=${FWORK}/env_switches -P ${NO_OUTPUT})
set_tests_properties(cli.error.env_switches PROPERTIES LABELS "cli;mpi" TIMEOUT 120 PROCESSORS 2)
add_test(NAME cli.error.env_fp8_accumulation
         COMMAND ${FAIL} "DITGEN_FP8_FAST_ACCUM='yes': expected 1 .* or 0" ${CMAKE_COMMAND} -E env DITGEN_FP8_FAST_ACCUM=yes
                 ${D} flux2 --warmup 0 --steps 1 -o ${FWORK}/env_fp8_accumulation.png)
set_tests_properties(cli.error.env_fp8_accumulation PROPERTIES LABELS cli TIMEOUT 60)
add_test(NAME cli.error.env_side_stream
         COMMAND ${FAIL} "DITGEN_SIDE_STREAM='2': expected 1 .* or 0" ${CMAKE_COMMAND} -E env DITGEN_SIDE_STREAM=2
                 ${D} ltx2 --warmup 0 --steps 1 -o ${FWORK}/env_side_stream.mp4)
set_tests_properties(cli.error.env_side_stream PROPERTIES LABELS cli TIMEOUT 60)

# --comm: NCCL is for GPU ranks; CPU ranks refuse it on every rank, and --comm mpi runs a CPU mesh.
add_test(NAME cli.flag.comm_nccl_on_cpu
         COMMAND ${FAIL} "--comm nccl needs GPU tensors" ${MPIEXEC_EXECUTABLE} --oversubscribe --allow-run-as-root
                 -np 2 ${D} flux2 --warmup 0 --steps 1 --comm nccl -o ${FWORK}/comm_nccl.png)
add_test(NAME cli.flag.comm_unknown COMMAND ${FAIL} "--comm: .*not in" ${D} flux2 --warmup 0 --steps 1 --comm gloo)
set_tests_properties(cli.flag.comm_nccl_on_cpu cli.flag.comm_unknown PROPERTIES LABELS cli TIMEOUT 60)
