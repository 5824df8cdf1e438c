# DBCache golden cases (../shared/fixtures/cache/<case>, weights in cache/model) through `ditgen verify`:
# the steps each block list cached, the differences measured at every step, the final latents. The
# folders are named by their settings, so `verify` tells their kind from case.json's "cache" section.
set(CACHE_CASES
  nocache_rdt0
  F1B0_W8_MC3_rdt0.7
  F1B0_W8_MC3_rdt0.8
  F1B0_W8_MC3_rdt0.8_taylorseer1
  F2B1_W4_MCinf_rdt0.75
  F1B0_scm_fast_static
)
foreach(case ${CACHE_CASES})
  add_test(NAME golden.cache.${case} COMMAND ditgen verify --skip-missing ${DITGEN_FIXTURES}/cache/${case})
  set_tests_properties(golden.cache.${case} PROPERTIES SKIP_RETURN_CODE 77 LABELS "golden;cache" TIMEOUT 600)
endforeach()

# The same cases under meshes: every rank must take the same decisions and measure the same differences
# (checked bit for bit across ranks), and they must equal the reference's.
set(CACHE_MPIRUN ${MPIEXEC_EXECUTABLE} --oversubscribe --allow-run-as-root --bind-to none)
set(CACHE_MESHES
  "np2_ulysses|2|--parallel,ulysses"
  "np2_ring|2|--parallel,ring"
  "np2_tp|2|--parallel,tp"
  "np4_usp|4|--parallel,usp"
  "np4_ulysses_tp|4|--parallel,ulysses_tp"
)
foreach(entry ${CACHE_MESHES})
  string(REPLACE "|" ";" parts "${entry}")
  list(GET parts 0 name)
  list(GET parts 1 np)
  list(SUBLIST parts 2 -1 flags)
  string(REPLACE "," ";" flags "${flags}")
  foreach(case ${CACHE_CASES})
    add_test(NAME mpi.cache.${name}.${case}
             COMMAND ${CACHE_MPIRUN} -np ${np} $<TARGET_FILE:ditgen> verify --skip-missing ${DITGEN_FIXTURES}/cache/${case}
                     ${flags})
    set_tests_properties(mpi.cache.${name}.${case} PROPERTIES TIMEOUT 600 LABELS "mpi;cache" SKIP_RETURN_CODE 77
                         PROCESSORS ${np})
  endforeach()
endforeach()

# The command line: naming, report and summary; cache flags without --cache are refused; under a mesh the
# cached run gives the single-process cached image.
add_test(NAME cli.cache_flux2
         COMMAND ${CMAKE_COMMAND} -DDITGEN=$<TARGET_FILE:ditgen> -DWORK=${CMAKE_CURRENT_BINARY_DIR}/cache_cli
                 -P ${CMAKE_CURRENT_SOURCE_DIR}/run_cache_cli.cmake)
add_test(NAME cli.error.cache_flag_without_cache
         COMMAND ${CMAKE_CURRENT_SOURCE_DIR}/expect_fail.sh "--rdt sets up the block cache; add --cache"
                 $<TARGET_FILE:ditgen> flux2 --warmup 0 --rdt 0.2)
set(CACHE_RUN_FLAGS --cache --rdt 0.8 --ws 1 --mcc 2)
add_test(NAME cli.cache_single_reference
         COMMAND $<TARGET_FILE:ditgen> flux2 --warmup 0 --steps 4 ${CACHE_RUN_FLAGS}
                 -o ${CMAKE_CURRENT_BINARY_DIR}/cache_mesh/single.png)
set_tests_properties(cli.cache_single_reference PROPERTIES FIXTURES_SETUP cache_single LABELS "cli;cache")
foreach(mesh "np2_ulysses|2|--parallel,ulysses" "np2_tp|2|--parallel,tp" "np4_usp|4|--parallel,usp")
  string(REPLACE "|" ";" parts "${mesh}")
  list(GET parts 0 name)
  list(GET parts 1 np)
  list(GET parts 2 flags)
  string(REPLACE "," ";" flags "${flags}")
  add_test(NAME mpi.cache_pipeline.${name}
           COMMAND ${CMAKE_COMMAND} -DMPIRUN=${MPIEXEC_EXECUTABLE} -DNP=${np} "-DFLAGS=${flags};${CACHE_RUN_FLAGS}"
                   -DTOLERANCE=1 -DDITGEN=$<TARGET_FILE:ditgen> -DPNG_DIFF=$<TARGET_FILE:png_diff>
                   -DWORK=${CMAKE_CURRENT_BINARY_DIR}/cache_mesh/${name}
                   -DREFERENCE=${CMAKE_CURRENT_BINARY_DIR}/cache_mesh/single.png
                   -P ${CMAKE_CURRENT_SOURCE_DIR}/run_pipeline_mesh.cmake)
  set_tests_properties(mpi.cache_pipeline.${name} PROPERTIES FIXTURES_REQUIRED cache_single LABELS "mpi;cache"
                       TIMEOUT 300 PROCESSORS ${np})
endforeach()
set_tests_properties(cli.cache_flux2 cli.error.cache_flag_without_cache PROPERTIES LABELS "cli;cache" TIMEOUT 300)

# Qwen-Image (separate CFG state: _CFG1 in the name) and LTX-2 (video and audio through one list): the
# cached LTX-2 video (9 frames) under Ulysses-2 and under --cfg 2 equals the single-process cached video.
set(CACHE_SMALL --cache --ws 2 --rdt 0.9)
add_test(NAME cli.cache_qwen
         COMMAND $<TARGET_FILE:ditgen> qwen-image --warmup 0 --steps 8 ${CACHE_SMALL} -o ${CMAKE_CURRENT_BINARY_DIR}/cache_qwen/)
set_tests_properties(cli.cache_qwen PROPERTIES LABELS "cli;cache" TIMEOUT 300
                     PASS_REGULAR_EXPRESSION "Image saved to .*qwen_image-tiny.128x128.C0_DBCache_F1B0_W2I1M0MC3_R0.9_CFG1_T0O0_S[0-9]+.png")
add_test(NAME cli.cache_ltx2_reference
         COMMAND $<TARGET_FILE:ditgen> ltx2 --warmup 0 --steps 8 -F 9 ${CACHE_SMALL} --save-frames
                 -o ${CMAKE_CURRENT_BINARY_DIR}/cache_ltx2/single.mp4)
set_tests_properties(cli.cache_ltx2_reference PROPERTIES FIXTURES_SETUP cache_ltx2 LABELS "cli;cache" TIMEOUT 300
                     PASS_REGULAR_EXPRESSION "cache DBCache_F1B0_W2I1M0MC3_R0.9_CFG0_T0O0: transformer_blocks cached [1-9]")
foreach(mesh "np2_ulysses|2|--parallel,ulysses" "np2_cfg2|2|--cfg,2")
  string(REPLACE "|" ";" parts "${mesh}")
  list(GET parts 0 name)
  list(GET parts 1 np)
  list(GET parts 2 flags)
  string(REPLACE "," ";" flags "${flags}")
  add_test(NAME mpi.cache_ltx2.${name}
           COMMAND ${CMAKE_COMMAND} -DMPIRUN=${MPIEXEC_EXECUTABLE} -DNP=${np} "-DFLAGS=${flags}" -DDITGEN=$<TARGET_FILE:ditgen>
                   -DPNG_DIFF=$<TARGET_FILE:png_diff> -DWAV_DIFF=$<TARGET_FILE:wav_diff> -DTOLERANCE=1 -DWAV_TOLERANCE=2
                   "-DARGS=--warmup;0;--steps;8;-F;9;--cache;--ws;2;--rdt;0.9" -DWORK=${CMAKE_CURRENT_BINARY_DIR}/cache_ltx2/${name}
                   -DREFERENCE=${CMAKE_CURRENT_BINARY_DIR}/cache_ltx2/single -P ${CMAKE_CURRENT_SOURCE_DIR}/run_video_mesh.cmake)
  set_tests_properties(mpi.cache_ltx2.${name} PROPERTIES FIXTURES_REQUIRED cache_ltx2 LABELS "mpi;cache" TIMEOUT 300
                       PROCESSORS ${np})
endforeach()
