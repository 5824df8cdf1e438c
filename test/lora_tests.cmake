# LoRA (--lora, lib/nn/lora.h) end to end: the golden cases under TP and sequence-parallel meshes (each
# run also checks mesh == one process), the tiny pipelines with a LoRA (SCALE 0 == no LoRA bit for bit;
# several files add up; meshes == one process), the CLI's refusals, and a LoRA on an FP8 folder
# (fp8_tests.cmake).
set(LORA_MPIRUN ${MPIEXEC_EXECUTABLE} --oversubscribe --allow-run-as-root --bind-to none)
set(LORA_WORK ${CMAKE_CURRENT_BINARY_DIR}/lora)
set(LORA_COMPARE ${CMAKE_COMMAND} -DDITGEN=$<TARGET_FILE:ditgen> -DPNG_DIFF=$<TARGET_FILE:png_diff>
                 -DMPIRUN=${MPIEXEC_EXECUTABLE})
set(LORA_FIXTURES
  flux2|models/flux2_transformer_lora_r4_b1_h6w8_t20
  qwen|models/qwenimage_transformer_lora_r4_b1_h6w8_t12
  ltx2|models/ltx2_transformer_lora_r4_split_b1_f2h4w6_a9)
set(LORA_MESHES
  "np2_tp|2|--parallel,tp"
  "np2_ulysses|2|--parallel,ulysses"
  "np2_ring|2|--parallel,ring"
  "np4_tp|4|--parallel,tp"
  "np4_usp|4|--parallel,usp"
  "np4_ulysses_tp|4|--parallel,ulysses_tp"
  "np4_ring_tp|4|--parallel,ring_tp")
foreach(fixture ${LORA_FIXTURES})
  string(REPLACE "|" ";" parts "${fixture}")
  list(GET parts 0 short)
  list(GET parts 1 case)
  foreach(mesh ${LORA_MESHES})
    string(REPLACE "|" ";" m "${mesh}")
    list(GET m 0 name)
    list(GET m 1 np)
    list(GET m 2 flags)
    string(REPLACE "," ";" flags "${flags}")
    add_test(NAME mpi.lora_verify.${short}.${name}
             COMMAND ${LORA_MPIRUN} -np ${np} $<TARGET_FILE:ditgen> verify --skip-missing ${DITGEN_FIXTURES}/${case} ${flags})
    set_tests_properties(mpi.lora_verify.${short}.${name} PROPERTIES TIMEOUT 300 LABELS "mpi;lora" SKIP_RETURN_CODE 77
                         PROCESSORS ${np})
  endforeach()
endforeach()

# The fixtures' LoRA files fit the tiny Qwen-Image and LTX-2 (same block widths); FLUX.2's does not.
set(QWEN_LORA ${DITGEN_FIXTURES}/models/qwenimage_transformer_lora_r4_b1_h6w8_t12/lora.safetensors)
set(FLUX2_LORA ${DITGEN_FIXTURES}/models/flux2_transformer_lora_r4_b1_h6w8_t20/lora.safetensors)
set(LTX2_LORA ${DITGEN_FIXTURES}/models/ltx2_transformer_lora_r4_split_b1_f2h4w6_a9/lora.safetensors)
add_test(NAME cli.lora_scale0_is_no_lora
         COMMAND ${LORA_COMPARE} -DCMD=qwen-image -DREQUIRES=${QWEN_LORA} "-DARGS_A=--steps;2"
                 "-DARGS_B=--steps;2;--lora;${QWEN_LORA}:0" -DTOLERANCE=0 -DWORK=${LORA_WORK}/scale0
                 -P ${CMAKE_CURRENT_SOURCE_DIR}/run_compare.cmake)
add_test(NAME cli.lora_changes_the_image
         COMMAND ${LORA_COMPARE} -DCMD=qwen-image -DREQUIRES=${QWEN_LORA} "-DARGS_A=--steps;2"
                 "-DARGS_B=--steps;2;--lora;${QWEN_LORA}:1.5" -DEXPECT=different -DTOLERANCE=0
                 -DWORK=${LORA_WORK}/changes -P ${CMAKE_CURRENT_SOURCE_DIR}/run_compare.cmake)
# Two --lora add up: the same file twice at 0.5 is the file once at 1.
add_test(NAME cli.lora_files_add_up
         COMMAND ${LORA_COMPARE} -DCMD=qwen-image -DREQUIRES=${QWEN_LORA} "-DARGS_A=--steps;2;--lora;${QWEN_LORA}"
                 "-DARGS_B=--steps;2;--lora;${QWEN_LORA}:0.5;--lora;${QWEN_LORA}:0.5" -DTOLERANCE=1
                 -DWORK=${LORA_WORK}/add_up -P ${CMAKE_CURRENT_SOURCE_DIR}/run_compare.cmake)
set_tests_properties(cli.lora_scale0_is_no_lora cli.lora_changes_the_image cli.lora_files_add_up
                     PROPERTIES LABELS "cli;lora" TIMEOUT 300 SKIP_REGULAR_EXPRESSION "SKIP: ")
foreach(mesh "np2_tp|2|--parallel,tp" "np2_ulysses|2|--parallel,ulysses" "np4_ulysses_tp|4|--parallel,ulysses_tp")
  string(REPLACE "|" ";" m "${mesh}")
  list(GET m 0 name)
  list(GET m 1 np)
  list(GET m 2 flags)
  string(REPLACE "," ";" flags "${flags}")
  add_test(NAME mpi.lora_pipeline.qwen.${name}
           COMMAND ${LORA_COMPARE} -DCMD=qwen-image -DREQUIRES=${QWEN_LORA} "-DARGS_A=--steps;2;--lora;${QWEN_LORA}:0.8"
                   "-DARGS_B=--steps;2;--lora;${QWEN_LORA}:0.8;${flags}" -DNP_B=${np} -DTOLERANCE=1
                   -DWORK=${LORA_WORK}/mesh_${name} -P ${CMAKE_CURRENT_SOURCE_DIR}/run_compare.cmake)
  set_tests_properties(mpi.lora_pipeline.qwen.${name} PROPERTIES LABELS "mpi;lora" TIMEOUT 300 PROCESSORS ${np}
                       SKIP_REGULAR_EXPRESSION "SKIP: ")
endforeach()

set(LORA_SKIP_UNLESS ${CMAKE_CURRENT_SOURCE_DIR}/skip_unless.sh)
set(LORA_EXPECT_FAIL ${CMAKE_CURRENT_SOURCE_DIR}/expect_fail.sh)
add_test(NAME cli.error.lora_missing_file
         COMMAND ${LORA_EXPECT_FAIL} "--lora.*no such file" $<TARGET_FILE:ditgen> flux2 --warmup 0 --steps 1
                 --lora ${LORA_WORK}/none.safetensors:0.5 -o ${LORA_WORK}/x.png)
add_test(NAME cli.error.lora_bad_scale
         COMMAND ${LORA_EXPECT_FAIL} "--lora.*SCALE 'strong' is not a number"
                 $<TARGET_FILE:ditgen> flux2 --warmup 0 --steps 1 --lora ${LORA_WORK}/style.safetensors:strong
                 -o ${LORA_WORK}/x.png)
add_test(NAME cli.error.lora_for_another_model
         COMMAND ${LORA_SKIP_UNLESS} ${FLUX2_LORA} ${LORA_EXPECT_FAIL}
                 "flux2_transformer_lora.*lora.safetensors.*single_transformer_blocks.*matches no layer of the Qwen-Image transformer"
                 $<TARGET_FILE:ditgen> qwen-image --warmup 0 --steps 1 --lora ${FLUX2_LORA} -o ${LORA_WORK}/x.png)
add_test(NAME cli.error.lora_shape
         COMMAND ${LORA_SKIP_UNLESS} ${FLUX2_LORA} ${LORA_EXPECT_FAIL}
                 "lora.safetensors.*lora_A.weight.*do not fit layer .*weight"
                 $<TARGET_FILE:ditgen> flux2 --warmup 0 --steps 1 --lora ${FLUX2_LORA} -o ${LORA_WORK}/x.png)
# From a checkpoint folder, before any weight loads.
add_test(NAME cli.error.lora_checkpoint_other_model
         COMMAND ${LORA_SKIP_UNLESS} ${LTX2_LORA} ${LORA_EXPECT_FAIL}
                 "ltx2_transformer_lora.*transformer_blocks.0.attn1.to_k.lora_A.weight.*matches no layer of the Qwen-Image transformer"
                 $<TARGET_FILE:ditgen> qwen-image --warmup 0 --steps 1 --model-path ${CMAKE_CURRENT_BINARY_DIR}/cli/qwen_models/good
                 --lora ${LTX2_LORA} -o ${LORA_WORK}/x.png)
set_tests_properties(cli.error.lora_checkpoint_other_model PROPERTIES FIXTURES_REQUIRED qwen_cli_models)
set_tests_properties(cli.error.lora_missing_file cli.error.lora_bad_scale cli.error.lora_for_another_model
                     cli.error.lora_shape cli.error.lora_checkpoint_other_model
                     PROPERTIES LABELS "cli;lora" TIMEOUT 120 SKIP_RETURN_CODE 77)

# A LoRA on an FP8 checkpoint merges into the dequantised weights.
add_test(NAME cli.fp8_folder.qwen_with_lora
         COMMAND ${LORA_COMPARE} -DCMD=qwen-image -DREQUIRES=${QWEN_LORA}
                 "-DARGS_A=--steps;2;--model-path;${FP8_WORK}/qwen/f32;--lora;${QWEN_LORA}"
                 "-DARGS_B=--steps;2;--model-path;${FP8_WORK}/qwen/fp8;--lora;${QWEN_LORA}" -DTOLERANCE=0
                 -DWORK=${FP8_WORK}/qwen/lora -P ${CMAKE_CURRENT_SOURCE_DIR}/run_compare.cmake)
set_tests_properties(cli.fp8_folder.qwen_with_lora PROPERTIES FIXTURES_REQUIRED fp8_qwen LABELS "cli;fp8;lora"
                     TIMEOUT 300 SKIP_REGULAR_EXPRESSION "SKIP: ")

# The run report names each LoRA with its scale and the layers it changed.
add_test(NAME cli.lora_in_report
         COMMAND sh -c "test -f '${QWEN_LORA}' || { echo 'SKIP: no fixture'; exit 0; }; mkdir -p '${LORA_WORK}/report' && \
'$<TARGET_FILE:ditgen>' qwen-image --warmup 0 --steps 1 --lora '${QWEN_LORA}:0.5' -o '${LORA_WORK}/report/r.png' && \
grep -Eq '\"scale\": *0.5' '${LORA_WORK}/report/r.json' && grep -Eq '\"layers\": *[1-9]' '${LORA_WORK}/report/r.json'")
set_tests_properties(cli.lora_in_report PROPERTIES LABELS "cli;lora" TIMEOUT 120 SKIP_REGULAR_EXPRESSION "SKIP: ")
