# VAE-P (--parallel-vae: each VAE decoder and encoder split by image rows over the ranks,
# lib/parallel/rows.h), under mpirun on the CPU.
#  - Each VAE fixture over 2, 3, 4 and 8 ranks (6, 4 or 8 latent rows: uneven bands, one-row bands, and at 8
#    ranks ranks without rows): against the reference and, at 1e-5, against the one-rank decode / encode
#    (flux2_vae checks both; the *_encode fixtures the Qwen-Image and LTX-2 encoders).
#  - Random latents with odd row counts (7, 13, 5, fewer rows than ranks), batch 2, both LTX-2 padding modes:
#    the split decode against the one-rank decode at 1e-5 (ditgen_vae_parallel_check); likewise the
#    split encode of random images, also with pixel rows beyond the VAE factor (flux2, qwen-image). The halo exchange
#    itself for zeros / replicate / reflect padding and halos wider than a band.
#  - Each model's tiny pipeline with --parallel-vae under 2 and 4 ranks gives the single-process output; the
#    auto-named output carries _VAEP and the report says VAE-P is on.
set(VAEP_MPIRUN ${MPIEXEC_EXECUTABLE} --oversubscribe --allow-run-as-root --bind-to none)
set(VAEP_WORK ${CMAKE_CURRENT_BINARY_DIR}/vae_parallel)

add_executable(ditgen_vae_parallel_check tools/vae_parallel_check.cpp)
target_link_libraries(ditgen_vae_parallel_check PRIVATE ditgen_engine CLI11::CLI11)
target_precompile_headers(ditgen_vae_parallel_check REUSE_FROM ditgen_engine)

foreach(fixture flux2_vae_b1_6x8 qwenimage_vae_b1_6x8 ltx2_video_vae_b1_f3_4x6 qwenimage_vae_encode_b1_32x48
                ltx2_video_vae_encode_b1_f9_32x48)
  foreach(np 2 3 4 8)
    add_test(NAME vaep.verify.${fixture}.np${np}
             COMMAND ${VAEP_MPIRUN} -np ${np} $<TARGET_FILE:ditgen> verify --skip-missing
                     ${DITGEN_FIXTURES}/models/${fixture} --parallel-vae --ulysses ${np})
    set_tests_properties(vaep.verify.${fixture}.np${np} PROPERTIES TIMEOUT 300 LABELS "mpi;vaep"
                         SKIP_RETURN_CODE 77 PROCESSORS ${np})
  endforeach()
endforeach()

# name | np | ditgen_vae_parallel_check flags
set(VAEP_ODD
  "flux2_r7|2|--model,flux2,--rows,7,--cols,5"
  "flux2_r13_b2|3|--model,flux2,--rows,13,--cols,6,--batch,2"
  "flux2_r7|4|--model,flux2,--rows,7,--cols,3"
  "flux2_r3_idle|4|--model,flux2,--rows,3,--cols,4"
  "qwen_r13|2|--model,qwen-image,--rows,13,--cols,5"
  "qwen_r7_b2|3|--model,qwen-image,--rows,7,--cols,4,--batch,2"
  "qwen_r5|4|--model,qwen-image,--rows,5,--cols,7"
  "ltx2_r7_reflect|2|--model,ltx2,--rows,7,--cols,4,--frames,2"
  "ltx2_r13_zeros_b2|3|--model,ltx2,--rows,13,--cols,3,--frames,2,--padding,zeros,--batch,2"
  "ltx2_r5_reflect|4|--model,ltx2,--rows,5,--cols,4,--frames,2"
  "ltx2_r3_idle|4|--model,ltx2,--rows,3,--cols,3,--frames,1"
  "flux2_enc_r7_x3|2|--model,flux2,--encode,--rows,7,--cols,5,--extra,3"
  "flux2_enc_r5_b2|3|--model,flux2,--encode,--rows,5,--cols,4,--batch,2"
  "flux2_enc_r3_x1_idle|4|--model,flux2,--encode,--rows,3,--cols,4,--extra,1"
  "qwen_enc_r5_b2|2|--model,qwen-image,--encode,--rows,5,--cols,3,--batch,2"
  "qwen_enc_r7_x3|3|--model,qwen-image,--encode,--rows,7,--cols,4,--extra,3"
  "qwen_enc_r2_x2_idle|4|--model,qwen-image,--encode,--rows,2,--cols,3,--extra,2"
  "ltx2_enc_r7_f5_b2|2|--model,ltx2,--encode,--rows,7,--cols,2,--frames,5,--batch,2"
  "ltx2_enc_r5_f9|3|--model,ltx2,--encode,--rows,5,--cols,3,--frames,9"
  "ltx2_enc_r3_reflect_idle|4|--model,ltx2,--encode,--rows,3,--cols,2,--frames,1,--padding,reflect"
  "halo_r7|2|--model,halo,--rows,7"
  "halo_r7|3|--model,halo,--rows,7"
  "halo_r7|4|--model,halo,--rows,7"
  "halo_r5|8|--model,halo,--rows,5"
)
foreach(entry ${VAEP_ODD})
  string(REPLACE "|" ";" parts "${entry}")
  list(GET parts 0 name)
  list(GET parts 1 np)
  list(SUBLIST parts 2 -1 flags)
  string(REPLACE "," ";" flags "${flags}")
  add_test(NAME vaep.odd.${name}.np${np}
           COMMAND ${VAEP_MPIRUN} -np ${np} $<TARGET_FILE:ditgen_vae_parallel_check> ${flags})
  set_tests_properties(vaep.odd.${name}.np${np} PROPERTIES TIMEOUT 300 LABELS "mpi;vaep" PROCESSORS ${np})
endforeach()

# The single-process references are the mesh tests' (mpi_tests.cmake, ltx2_tests.cmake).

# model | name | np | flags
foreach(entry "flux2|np2_ulysses|2|--parallel,ulysses" "flux2|np4_ulysses_tp|4|--parallel,ulysses_tp"
              "qwen-image|np2_cfg2|2|--cfg,2" "qwen-image|np4_ulysses_tp|4|--parallel,ulysses_tp")
  string(REPLACE "|" ";" parts "${entry}")
  list(GET parts 0 model)
  list(GET parts 1 name)
  list(GET parts 2 np)
  list(SUBLIST parts 3 -1 flags)
  string(REPLACE "," ";" flags "${flags}")
  set(ref ${FLUX2_SINGLE})
  set(fixture single_pipeline)
  set(size ${FLUX2_MESH_SIZE})
  if(model STREQUAL "qwen-image")
    set(ref ${QWEN_SINGLE})
    set(fixture qwen_single_pipeline)
    set(size "")
  endif()
  add_test(NAME vaep.pipeline.${model}.${name}
           COMMAND ${CMAKE_COMMAND} -DMPIRUN=${MPIEXEC_EXECUTABLE} -DNP=${np} "-DFLAGS=--parallel-vae;${flags};${size}"
                   -DMODEL=${model} -DDITGEN=$<TARGET_FILE:ditgen> -DPNG_DIFF=$<TARGET_FILE:png_diff>
                   -DWORK=${VAEP_WORK}/${model}/${name} -DREFERENCE=${ref}
                   -P ${CMAKE_CURRENT_SOURCE_DIR}/run_pipeline_mesh.cmake)
  set_tests_properties(vaep.pipeline.${model}.${name} PROPERTIES TIMEOUT 600 LABELS "mpi;vaep" PROCESSORS ${np}
                       FIXTURES_REQUIRED ${fixture})
endforeach()

foreach(entry "np2_ulysses|2|--parallel,ulysses" "np4_ulysses_tp|4|--parallel,ulysses_tp")
  string(REPLACE "|" ";" parts "${entry}")
  list(GET parts 0 name)
  list(GET parts 1 np)
  list(SUBLIST parts 2 -1 flags)
  string(REPLACE "," ";" flags "${flags}")
  add_test(NAME vaep.pipeline.ltx2.${name}
           COMMAND ${CMAKE_COMMAND} -DMPIRUN=${MPIEXEC_EXECUTABLE} -DNP=${np} "-DFLAGS=--parallel-vae;${flags}"
                   -DDITGEN=$<TARGET_FILE:ditgen> -DPNG_DIFF=$<TARGET_FILE:png_diff> -DWAV_DIFF=$<TARGET_FILE:wav_diff>
                   -DTOLERANCE=1 -DWAV_TOLERANCE=2 "-DARGS=${LTX2_MESH_ARGS}" -DWORK=${VAEP_WORK}/ltx2/${name}
                   -DREFERENCE=${LTX2_SINGLE} -P ${CMAKE_CURRENT_SOURCE_DIR}/run_video_mesh.cmake)
  set_tests_properties(vaep.pipeline.ltx2.${name} PROPERTIES TIMEOUT 900 LABELS "mpi;vaep;ltx2" PROCESSORS ${np}
                       FIXTURES_REQUIRED ltx2_builtin)
endforeach()

# The auto-named output carries _VAEP (cache-dit-semantics.md 6.3) and the report says VAE-P is on.
add_test(NAME vaep.name_and_report
         COMMAND ${CMAKE_COMMAND} -DMPIRUN=${MPIEXEC_EXECUTABLE} -DNP=2 -DDITGEN=$<TARGET_FILE:ditgen>
                 -DPNG_DIFF=$<TARGET_FILE:png_diff> -DTOLERANCE=1 -DREFERENCE=${FLUX2_SINGLE}
                 "-DARGS=flux2;--steps;4;${FLUX2_MESH_SIZE};--warmup;0;--tp;2;--parallel-vae"
                 -DNAME=flux2-tiny.64x64.C0_TP2_VAEP.png "-DEXPECT_JSON=parallel_vae.: true"
                 -DWORK=${VAEP_WORK}/name -P ${CMAKE_CURRENT_SOURCE_DIR}/run_memory_plan.cmake)
set_tests_properties(vaep.name_and_report PROPERTIES TIMEOUT 300 LABELS "mpi;vaep" FIXTURES_REQUIRED single_pipeline)
