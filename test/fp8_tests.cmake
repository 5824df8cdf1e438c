# FP8 checkpoints as published (lib/nn/fp8_source.h) end to end: the tiny models exported, their
# transformers rewritten as FP8 files (test/tools/fp8_folder.cpp: e4m3 + per-channel `weight_scale`, or
# ComfyUI's legacy per-tensor `scale_weight` with the `scaled_fp8` marker), each loading to the image of
# its dequantised float32 twin bit for bit, alone and under TP.
set(FP8_WORK ${CMAKE_CURRENT_BINARY_DIR}/fp8)
set(FP8_COMPARE ${CMAKE_COMMAND} -DDITGEN=$<TARGET_FILE:ditgen> -DPNG_DIFF=$<TARGET_FILE:png_diff>
                -DMPIRUN=${MPIEXEC_EXECUTABLE})
add_executable(ditgen_fp8_folder tools/fp8_folder.cpp)
target_link_libraries(ditgen_fp8_folder PRIVATE ditgen_engine CLI11::CLI11)
target_precompile_headers(ditgen_fp8_folder REUSE_FROM ditgen_engine)
foreach(spec "flux2|flux2|--per-channel" "qwen|qwen-image|--legacy")
  string(REPLACE "|" ";" s "${spec}")
  list(GET s 0 short)
  list(GET s 1 cmd)
  list(GET s 2 how)
  add_test(NAME cli.fp8_folder.${short}_prepare
           COMMAND sh -c "$<TARGET_FILE:ditgen> export-tiny ${cmd} ${FP8_WORK}/${short}/src --shards 2 --replace && $<TARGET_FILE:ditgen_fp8_folder> ${FP8_WORK}/${short}/src ${FP8_WORK}/${short}/fp8 ${FP8_WORK}/${short}/f32 ${how}")
  set_tests_properties(cli.fp8_folder.${short}_prepare PROPERTIES FIXTURES_SETUP fp8_${short} LABELS "cli;fp8" TIMEOUT 300)
  add_test(NAME cli.fp8_folder.${short}_equals_dequantised
           COMMAND ${FP8_COMPARE} -DCMD=${cmd} "-DARGS_A=--steps;2;--model-path;${FP8_WORK}/${short}/f32"
                   "-DARGS_B=--steps;2;--model-path;${FP8_WORK}/${short}/fp8" -DTOLERANCE=0
                   -DWORK=${FP8_WORK}/${short}/run -P ${CMAKE_CURRENT_SOURCE_DIR}/run_compare.cmake)
  add_test(NAME mpi.fp8_folder.${short}_np2_tp
           COMMAND ${FP8_COMPARE} -DCMD=${cmd} "-DARGS_A=--steps;2;--model-path;${FP8_WORK}/${short}/f32"
                   "-DARGS_B=--steps;2;--model-path;${FP8_WORK}/${short}/fp8;--parallel;tp" -DNP_B=2 -DTOLERANCE=1
                   -DWORK=${FP8_WORK}/${short}/tp -P ${CMAKE_CURRENT_SOURCE_DIR}/run_compare.cmake)
  set_tests_properties(cli.fp8_folder.${short}_equals_dequantised mpi.fp8_folder.${short}_np2_tp PROPERTIES
                       FIXTURES_REQUIRED fp8_${short} LABELS "cli;fp8" TIMEOUT 300)
  set_tests_properties(mpi.fp8_folder.${short}_np2_tp PROPERTIES PROCESSORS 2 LABELS "mpi;fp8")
endforeach()
