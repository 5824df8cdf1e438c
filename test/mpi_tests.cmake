# Parallel-equivalence tests under mpirun on the CPU (MPI backend, oversubscribed). Each mesh must
# reproduce the single-process result: the transformer to 1e-5 (random odd-length inputs and the
# golden fixture), the whole tiny pipeline to 1/255 per pixel.
set(MPIRUN ${MPIEXEC_EXECUTABLE} --oversubscribe --allow-run-as-root --bind-to none)
set(FLUX2_FIXTURE ${DITGEN_FIXTURES}/models/flux2_transformer_b1_h6w8_t20)
# FLUX.2's tiny pipeline under a mesh runs at 64x64 (256 image + 256 text tokens; the default 128x128 costs
# about 3x the CPU time for no other code path). One single-process image, mpi.pipeline_single_reference,
# is the reference of every FLUX.2 mesh, TE-P and VAE-P pipeline test.
set(FLUX2_MESH_SIZE -H 64 -W 64)
set(FLUX2_SINGLE ${CMAKE_CURRENT_BINARY_DIR}/mpi_pipeline/single.png)

# name  np  mesh flags...
set(MESHES
  "np2_tp|2|--parallel,tp"
  "np2_ulysses|2|--parallel,ulysses"
  "np2_ring|2|--parallel,ring"
  "np4_tp|4|--parallel,tp"
  "np4_ulysses|4|--parallel,ulysses"
  "np4_ring|4|--parallel,ring"
  "np4_usp|4|--parallel,usp"
  "np4_ulysses_tp|4|--parallel,ulysses_tp"
  "np4_tp_ulysses|4|--parallel,tp_ulysses"
  "np4_ring_tp|4|--parallel,ring_tp"
  "np4_tp_ring|4|--parallel,tp_ring"
  "np8_usp_tp|8|--parallel,usp_tp"
  "np8_u4_tp2|8|--ulysses,4,--tp,2"
  "np8_u2_tp4|8|--ulysses,2,--tp,4"
  "np8_r2_tp4|8|--ring,2,--tp,4"
  "np8_tp8|8|--tp,8"
  "np8_u8|8|--ulysses,8"
  "np8_r8|8|--ring,8"
)

foreach(entry ${MESHES})
  string(REPLACE "|" ";" parts "${entry}")
  list(GET parts 0 name)
  list(GET parts 1 np)
  list(SUBLIST parts 2 -1 flags)
  string(REPLACE "," ";" flags "${flags}")
  # Random inputs with odd lengths: 35 image tokens (5x7), 13 text tokens, batch 2.
  add_test(NAME mpi.transformer_odd.${name}
           COMMAND ${MPIRUN} -np ${np} $<TARGET_FILE:ditgen_parallel_check> ${flags} --img-h 5 --img-w 7 --txt 13 --batch 2)
  # The golden transformer fixture (48 image + 20 text tokens).
  add_test(NAME mpi.transformer_fixture.${name}
           COMMAND ${MPIRUN} -np ${np} $<TARGET_FILE:ditgen_parallel_check> ${flags} --fixture ${FLUX2_FIXTURE})
  # The fixture checked against its reference through `ditgen verify` under the mesh.
  add_test(NAME mpi.verify_fixture.${name}
           COMMAND ${MPIRUN} -np ${np} $<TARGET_FILE:ditgen> verify --skip-missing ${FLUX2_FIXTURE} ${flags})
  # The whole tiny pipeline: same PNG as the single-process run (at most 1/255 per channel).
  add_test(NAME mpi.pipeline.${name}
           COMMAND ${CMAKE_COMMAND} -DMPIRUN=${MPIEXEC_EXECUTABLE} -DNP=${np} "-DFLAGS=${flags};${FLUX2_MESH_SIZE}"
                   -DDITGEN=$<TARGET_FILE:ditgen> -DPNG_DIFF=$<TARGET_FILE:png_diff> -DWORK=${CMAKE_CURRENT_BINARY_DIR}/mpi_pipeline/${name}
                   -DREFERENCE=${FLUX2_SINGLE}
                   -P ${CMAKE_CURRENT_SOURCE_DIR}/run_pipeline_mesh.cmake)
  set_tests_properties(mpi.transformer_odd.${name} mpi.transformer_fixture.${name} mpi.verify_fixture.${name}
                       mpi.pipeline.${name} PROPERTIES TIMEOUT 300 LABELS mpi SKIP_RETURN_CODE 77 PROCESSORS ${np})
  set_tests_properties(mpi.pipeline.${name} PROPERTIES FIXTURES_REQUIRED single_pipeline)
endforeach()

# The single-process tiny pipeline image every mesh is compared with.
add_test(NAME mpi.pipeline_single_reference
         COMMAND $<TARGET_FILE:ditgen> flux2 --warmup 0 --steps 4 ${FLUX2_MESH_SIZE} -o ${FLUX2_SINGLE})
set_tests_properties(mpi.pipeline_single_reference PROPERTIES FIXTURES_SETUP single_pipeline LABELS mpi TIMEOUT 300)

# Meshes that cannot work are refused at start-up on every rank, with a message, never a hang.
set(EXPECT_FAIL ${CMAKE_CURRENT_SOURCE_DIR}/expect_fail.sh)
add_test(NAME mpi.bad_mesh.product COMMAND ${EXPECT_FAIL} "does not match the 2 launched ranks"
         ${MPIRUN} -np 2 $<TARGET_FILE:ditgen> flux2 --warmup 0 --ulysses 4)
add_test(NAME mpi.bad_mesh.heads COMMAND ${EXPECT_FAIL} "--tp 3 does not divide"
         ${MPIRUN} -np 3 $<TARGET_FILE:ditgen> flux2 --warmup 0 --tp 3)
add_test(NAME mpi.bad_mesh.usp_tp COMMAND ${EXPECT_FAIL} "needs exactly 8 ranks"
         ${MPIRUN} -np 4 $<TARGET_FILE:ditgen> flux2 --warmup 0 --parallel usp_tp)
set_tests_properties(mpi.bad_mesh.product mpi.bad_mesh.heads mpi.bad_mesh.usp_tp PROPERTIES TIMEOUT 120 LABELS mpi)

# A stuck rank: its peers' collectives time out, the job ends on every rank with a message naming
# the rank, the group and the operation, well within the CTest timeout (a hang fails the test).
add_test(NAME mpi.stuck_rank_times_out
         COMMAND ${EXPECT_FAIL} "\\[rank [0-9]/4\\] error: \\[mpi\\] .* on group .* timed out after 3 s"
                 ${MPIRUN} -np 4 $<TARGET_FILE:ditgen_parallel_check> --ulysses 2 --tp 2 --stall-rank 3 --comm-timeout 3)
set_tests_properties(mpi.stuck_rank_times_out PROPERTIES TIMEOUT 90 LABELS mpi)

# Per-rank shard loading: under TP-2 each rank reads about half of the transformer's bytes.
add_test(NAME mpi.shard_loading_tp
         COMMAND ${CMAKE_COMMAND} -DMPIRUN=${MPIEXEC_EXECUTABLE} -DDITGEN=$<TARGET_FILE:ditgen>
                 -DMODEL=${CMAKE_CURRENT_BINARY_DIR}/cli/models/good -DWORK=${CMAKE_CURRENT_BINARY_DIR}/shard_loading
                 -P ${CMAKE_CURRENT_SOURCE_DIR}/run_shard_loading.cmake)
set_tests_properties(mpi.shard_loading_tp PROPERTIES TIMEOUT 300 LABELS mpi FIXTURES_REQUIRED cli_models)

# Sequences shorter than the mesh: some ranks hold no tokens at all.
foreach(mesh "ring;8" "ulysses;8")
  list(GET mesh 0 axis)
  add_test(NAME mpi.transformer_short_seq.np8_${axis}8
           COMMAND ${MPIRUN} -np 8 $<TARGET_FILE:ditgen_parallel_check> --${axis} 8 --img-h 1 --img-w 2 --txt 3 --batch 1)
  set_tests_properties(mpi.transformer_short_seq.np8_${axis}8 PROPERTIES TIMEOUT 300 LABELS mpi PROCESSORS 8)
endforeach()

# A dead rank (exits without a word): mpirun ends the job on every rank; nothing waits forever.
add_test(NAME mpi.dead_rank_ends_job
         COMMAND ${EXPECT_FAIL} "."
                 ${MPIRUN} -np 4 $<TARGET_FILE:ditgen_parallel_check> --ulysses 2 --tp 2 --die-rank 2 --comm-timeout 30)
set_tests_properties(mpi.dead_rank_ends_job PROPERTIES TIMEOUT 90 LABELS mpi)

# Parity tracing: every named intermediate of a TP-2 rank equals the single-process one.
add_test(NAME mpi.trace_parity_tp2
         COMMAND ${CMAKE_COMMAND} -DMPIRUN=${MPIEXEC_EXECUTABLE} -DDITGEN=$<TARGET_FILE:ditgen>
                 -DWORK=${CMAKE_CURRENT_BINARY_DIR}/trace -P ${CMAKE_CURRENT_SOURCE_DIR}/run_trace_parity.cmake)
set_tests_properties(mpi.trace_parity_tp2 PROPERTIES TIMEOUT 300 LABELS mpi)

# ---- Qwen-Image: a representative set of meshes (every preset at np 2 and 4, the 8-rank hybrids, CFG
# parallelism). Random odd inputs with a text mask (batch 2, 35 image + 13 text tokens, padded keys in
# the middle and at the end), the golden transformer and pipeline fixtures under the mesh, and the
# tiny pipeline's PNG against the single-process PNG (8 steps of true CFG 4.0: fp32 sums in another
# order may move a few values by 1/255, no more).
set(QWEN_TRANSFORMER_FIXTURE ${DITGEN_FIXTURES}/models/qwenimage_transformer_b1_h6w8_t12)
set(QWEN_PIPELINE_FIXTURE ${DITGEN_FIXTURES}/pipelines/qwenimage_pipeline_64x96_s4_cfg4.0)
set(QWEN_MESHES
  "np2_tp|2|--parallel,tp"
  "np2_ulysses|2|--parallel,ulysses"
  "np2_ring|2|--parallel,ring"
  "np4_tp|4|--parallel,tp"
  "np4_ulysses|4|--parallel,ulysses"
  "np4_ring|4|--parallel,ring"
  "np4_usp|4|--parallel,usp"
  "np4_ulysses_tp|4|--parallel,ulysses_tp"
  "np4_tp_ulysses|4|--parallel,tp_ulysses"
  "np4_ring_tp|4|--parallel,ring_tp"
  "np4_tp_ring|4|--parallel,tp_ring"
  "np8_usp_tp|8|--parallel,usp_tp"
  "np8_ulysses_tp|8|--parallel,ulysses_tp"
)
# CFG parallelism: the two branches on two halves (a preset applies to each half).
set(QWEN_CFG_MESHES
  "np2_cfg2|2|--cfg,2"
  "np4_cfg2_ulysses|4|--cfg,2,--parallel,ulysses"
  "np4_cfg2_tp2|4|--cfg,2,--tp,2"
  "np8_cfg2_ulysses_tp|8|--cfg,2,--parallel,ulysses_tp"
)
foreach(entry ${QWEN_MESHES} ${QWEN_CFG_MESHES})
  string(REPLACE "|" ";" parts "${entry}")
  list(GET parts 0 name)
  list(GET parts 1 np)
  list(SUBLIST parts 2 -1 flags)
  string(REPLACE "," ";" flags "${flags}")
  set(tests mpi.qwen_pipeline.${name})
  # The pipeline fixture's transformer has 4 heads: ulysses x tp must divide them.
  if(NOT name STREQUAL "np8_ulysses_tp")
    add_test(NAME mpi.qwen_verify_pipeline.${name}
             COMMAND ${MPIRUN} -np ${np} $<TARGET_FILE:ditgen> verify --skip-missing ${QWEN_PIPELINE_FIXTURE} ${flags})
    list(APPEND tests mpi.qwen_verify_pipeline.${name})
  endif()
  if(NOT name MATCHES "cfg2")
    add_test(NAME mpi.qwen_transformer_odd.${name}
             COMMAND ${MPIRUN} -np ${np} $<TARGET_FILE:ditgen_parallel_check> --model qwen-image ${flags}
                     --img-h 5 --img-w 7 --txt 13 --batch 2)
    add_test(NAME mpi.qwen_verify_transformer.${name}
             COMMAND ${MPIRUN} -np ${np} $<TARGET_FILE:ditgen> verify --skip-missing ${QWEN_TRANSFORMER_FIXTURE} ${flags})
    list(APPEND tests mpi.qwen_transformer_odd.${name} mpi.qwen_verify_transformer.${name})
  endif()
  # --cfg 2 alone only moves the unconditional pass to another rank: the image must be bit-identical.
  set(tol 1)
  if(name STREQUAL "np2_cfg2")
    set(tol 0)
  endif()
  add_test(NAME mpi.qwen_pipeline.${name}
           COMMAND ${CMAKE_COMMAND} -DMPIRUN=${MPIEXEC_EXECUTABLE} -DNP=${np} "-DFLAGS=${flags}" -DMODEL=qwen-image
                   -DTOLERANCE=${tol} -DDITGEN=$<TARGET_FILE:ditgen> -DPNG_DIFF=$<TARGET_FILE:png_diff>
                   -DWORK=${CMAKE_CURRENT_BINARY_DIR}/mpi_qwen_pipeline/${name}
                   -DREFERENCE=${CMAKE_CURRENT_BINARY_DIR}/mpi_qwen_pipeline/single.png
                   -P ${CMAKE_CURRENT_SOURCE_DIR}/run_pipeline_mesh.cmake)
  set_tests_properties(${tests} PROPERTIES TIMEOUT 300 LABELS "mpi;qwen_image" SKIP_RETURN_CODE 77 PROCESSORS ${np})
  set_tests_properties(mpi.qwen_pipeline.${name} PROPERTIES FIXTURES_REQUIRED qwen_single_pipeline)
endforeach()
# The reference of every Qwen-Image mesh, TE-P and VAE-P pipeline test.
set(QWEN_SINGLE ${CMAKE_CURRENT_BINARY_DIR}/mpi_qwen_pipeline/single.png)
add_test(NAME mpi.qwen_pipeline_single_reference
         COMMAND $<TARGET_FILE:ditgen> qwen-image --warmup 0 --steps 4 -o ${QWEN_SINGLE})
set_tests_properties(mpi.qwen_pipeline_single_reference PROPERTIES FIXTURES_SETUP qwen_single_pipeline
                     LABELS "mpi;qwen_image" TIMEOUT 300)

# --cfg 2 without a second branch is refused at start-up on every rank, with the reason.
add_test(NAME mpi.qwen_cfg2_without_cfg COMMAND ${EXPECT_FAIL} "--cfg 2 .*--true-cfg-scale 1 is not above 1"
         ${MPIRUN} -np 2 $<TARGET_FILE:ditgen> qwen-image --warmup 0 --steps 1 --cfg 2 --true-cfg-scale 1)
add_test(NAME mpi.flux2_cfg2_refused COMMAND ${EXPECT_FAIL} "--cfg 2 .*guidance-distilled"
         ${MPIRUN} -np 2 $<TARGET_FILE:ditgen> flux2 --warmup 0 --steps 1 --cfg 2)
set_tests_properties(mpi.qwen_cfg2_without_cfg mpi.flux2_cfg2_refused PROPERTIES TIMEOUT 120 LABELS mpi)

# Per-rank slice loading of the Qwen-Image transformer: under TP each rank reads only its slice (the
# per-block modulation included, as cache-dit's plan shards it).
add_test(NAME mpi.qwen_shard_loading_tp
         COMMAND ${CMAKE_COMMAND} -DMPIRUN=${MPIEXEC_EXECUTABLE} -DDITGEN=$<TARGET_FILE:ditgen> -DCMD=qwen-image
                 "-DEXTRA=-H,64,-W,64" -DMODEL=${CMAKE_CURRENT_BINARY_DIR}/cli/qwen_models/good
                 -DWORK=${CMAKE_CURRENT_BINARY_DIR}/qwen_shard_loading -P ${CMAKE_CURRENT_SOURCE_DIR}/run_shard_loading.cmake)
set_tests_properties(mpi.qwen_shard_loading_tp PROPERTIES TIMEOUT 300 LABELS "mpi;qwen_image"
                     FIXTURES_REQUIRED qwen_cli_models)

# --prompt-file under a mesh: every rank reads the same file; each item equals the single-process run.
add_test(NAME mpi.prompt_file_ulysses2
         COMMAND ${CMAKE_COMMAND} -DMPIRUN=${MPIEXEC_EXECUTABLE} -DNP=2 "-DFLAGS=--ulysses;2" -DTAG=Ulysses2
                 -DDITGEN=$<TARGET_FILE:ditgen> -DPNG_DIFF=$<TARGET_FILE:png_diff> -DTOLERANCE=1
                 -DWORK=${CMAKE_CURRENT_BINARY_DIR}/mpi_prompt_file -P ${CMAKE_CURRENT_SOURCE_DIR}/run_prompt_file.cmake)
set_tests_properties(mpi.prompt_file_ulysses2 PROPERTIES TIMEOUT 300 LABELS mpi PROCESSORS 2)
