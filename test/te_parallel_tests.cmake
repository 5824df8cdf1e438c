# TE-P (--parallel-text) and the memory plan, under mpirun on the CPU.
#  - Each text-encoder fixture tensor-parallel over 2, 3, 4 and 8 ranks (4 query heads and 2 KV heads: 3 ranks
#    split the heads unevenly, 4 and 8 outnumber the KV heads, 8 also the query heads): every hidden state
#    against the reference and, at 1e-5, against the one-rank encoder (`verify --parallel-text`).
#  - Each model's tiny pipeline with --parallel-text under presets gives the single-process output.
#  - The memory plan: warm-up and repeats reuse the one prompt encoding and give the same image; the report
#    carries the per-stage peaks and the _TEP name tag.
set(TEP_MPIRUN ${MPIEXEC_EXECUTABLE} --oversubscribe --allow-run-as-root --bind-to none)
set(TEP_WORK ${CMAKE_CURRENT_BINARY_DIR}/te_parallel)

foreach(fixture text_encoder_mistral text_encoder_qwen25vl text_encoder_gemma3)
  foreach(np 2 3 4 8)
    add_test(NAME tep.verify.${fixture}.np${np}
             COMMAND ${TEP_MPIRUN} -np ${np} $<TARGET_FILE:ditgen> verify --skip-missing
                     ${DITGEN_FIXTURES}/models/${fixture} --parallel-text --tp ${np})
    set_tests_properties(tep.verify.${fixture}.np${np} PROPERTIES TIMEOUT 300 LABELS "mpi;tep" SKIP_RETURN_CODE 77
                         PROCESSORS ${np})
  endforeach()
endforeach()

# The single-process references (no TE-P, no warm-up) are the mesh tests' (mpi_tests.cmake, ltx2_tests.cmake).

# name | np | flags (the text encoders: FLUX.2 tiny 8 heads / 8 KV, Qwen-Image tiny 4 / 2, LTX-2 tiny 2 / 1)
set(TEP_IMAGE_MESHES
  "np2_tp|2|--parallel,tp"
  "np3_ring|3|--ring,3"
  "np4_ulysses_tp|4|--parallel,ulysses_tp"
  "np8_usp_tp|8|--parallel,usp_tp"
)
foreach(entry ${TEP_IMAGE_MESHES} "qwen:np2_cfg2|2|--cfg,2" "qwen:np4_cfg2_ulysses|4|--cfg,2,--parallel,ulysses")
  string(REPLACE "|" ";" parts "${entry}")
  list(GET parts 0 name)
  list(GET parts 1 np)
  list(SUBLIST parts 2 -1 flags)
  string(REPLACE "," ";" flags "${flags}")
  set(models flux2 qwen-image)
  if(name MATCHES "^qwen:")  # CFG parallelism: true-CFG models only
    string(REPLACE "qwen:" "" name "${name}")
    set(models qwen-image)
  endif()
  foreach(model ${models})
    set(ref ${FLUX2_SINGLE})
    set(fixture single_pipeline)
    set(size ${FLUX2_MESH_SIZE})
    if(model STREQUAL "qwen-image")
      set(ref ${QWEN_SINGLE})
      set(fixture qwen_single_pipeline)
      set(size "")
    endif()
    add_test(NAME tep.pipeline.${model}.${name}
             COMMAND ${CMAKE_COMMAND} -DMPIRUN=${MPIEXEC_EXECUTABLE} -DNP=${np} "-DFLAGS=--parallel-text;${flags};${size}"
                     -DMODEL=${model} -DDITGEN=$<TARGET_FILE:ditgen> -DPNG_DIFF=$<TARGET_FILE:png_diff>
                     -DWORK=${TEP_WORK}/${model}/${name} -DREFERENCE=${ref}
                     -P ${CMAKE_CURRENT_SOURCE_DIR}/run_pipeline_mesh.cmake)
    set_tests_properties(tep.pipeline.${model}.${name} PROPERTIES TIMEOUT 600 LABELS "mpi;tep" PROCESSORS ${np}
                         FIXTURES_REQUIRED ${fixture})
  endforeach()
endforeach()

foreach(entry "np2_tp|2|--parallel,tp" "np3_ring|3|--ring,3" "np4_cfg2_ulysses|4|--cfg,2,--parallel,ulysses"
              "np8_usp_tp|8|--parallel,usp_tp")
  string(REPLACE "|" ";" parts "${entry}")
  list(GET parts 0 name)
  list(GET parts 1 np)
  list(SUBLIST parts 2 -1 flags)
  string(REPLACE "," ";" flags "${flags}")
  add_test(NAME tep.pipeline.ltx2.${name}
           COMMAND ${CMAKE_COMMAND} -DMPIRUN=${MPIEXEC_EXECUTABLE} -DNP=${np} "-DFLAGS=--parallel-text;${flags}"
                   -DDITGEN=$<TARGET_FILE:ditgen> -DPNG_DIFF=$<TARGET_FILE:png_diff> -DWAV_DIFF=$<TARGET_FILE:wav_diff>
                   -DTOLERANCE=1 -DWAV_TOLERANCE=2 "-DARGS=${LTX2_MESH_ARGS}" -DWORK=${TEP_WORK}/ltx2/${name}
                   -DREFERENCE=${LTX2_SINGLE} -P ${CMAKE_CURRENT_SOURCE_DIR}/run_video_mesh.cmake)
  set_tests_properties(tep.pipeline.ltx2.${name} PROPERTIES TIMEOUT 900 LABELS "mpi;tep;ltx2" PROCESSORS ${np}
                       FIXTURES_REQUIRED ltx2_builtin)
endforeach()

# The memory plan: one warm-up run and two timed runs reuse the one encoding and give the single-process
# image bit for bit; the report has every stage's peak per rank. Under TE-P the auto-named output carries
# _TEP and the report says so.
add_test(NAME tep.memory_plan_warmup_repeat
         COMMAND ${CMAKE_COMMAND} -DMPIRUN=${MPIEXEC_EXECUTABLE} -DNP=1 -DDITGEN=$<TARGET_FILE:ditgen>
                 -DPNG_DIFF=$<TARGET_FILE:png_diff> -DTOLERANCE=0 -DREFERENCE=${FLUX2_SINGLE}
                 "-DARGS=flux2;--steps;4;${FLUX2_MESH_SIZE};--warmup;1;--warmup-steps;2;--repeat;2;--track-memory"
                 -DNAME=flux2-tiny.64x64.C0.png
                 "-DEXPECT_JSON=memory_by_stage;stage.: .text_encode.;stage.: .load_transformer.;stage.: .denoise.;stage.: .vae_decode.;parallel_text.: false;attention.: .auto.;cuda_graphs.: .on."
                 -DWORK=${TEP_WORK}/plan_single -P ${CMAKE_CURRENT_SOURCE_DIR}/run_memory_plan.cmake)
add_test(NAME tep.memory_plan_tep_name
         COMMAND ${CMAKE_COMMAND} -DMPIRUN=${MPIEXEC_EXECUTABLE} -DNP=2 -DDITGEN=$<TARGET_FILE:ditgen>
                 -DPNG_DIFF=$<TARGET_FILE:png_diff> -DTOLERANCE=1 -DREFERENCE=${FLUX2_SINGLE}
                 "-DARGS=flux2;--steps;4;${FLUX2_MESH_SIZE};--warmup;0;--tp;2;--parallel-text;--track-memory"
                 -DNAME=flux2-tiny.64x64.C0_TP2_TEP.png
                 "-DEXPECT_JSON=parallel_text.: true;memory_by_stage;.rank.: 1"
                 -DWORK=${TEP_WORK}/plan_tep -P ${CMAKE_CURRENT_SOURCE_DIR}/run_memory_plan.cmake)
set_tests_properties(tep.memory_plan_warmup_repeat tep.memory_plan_tep_name PROPERTIES TIMEOUT 300 LABELS "mpi;tep"
                     FIXTURES_REQUIRED single_pipeline)
