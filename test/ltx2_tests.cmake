# LTX-2: golden components and pipeline (also under meshes), the tiny model's MP4 read back with ffprobe,
# --save-frames, the exported folder, bad flags, and the tiny pipeline under a representative set of
# meshes against the single-process frames and sound track.
set(LTX2_WORK ${CMAKE_CURRENT_BINARY_DIR}/ltx2)
set(LTX2_PIPELINE_FIXTURE ${DITGEN_FIXTURES}/pipelines/ltx2_pipeline_64x96x9_s3_cfg4.0)
set(LTX2_TRANSFORMER_FIXTURE ${DITGEN_FIXTURES}/models/ltx2_transformer_split_b1_f2h4w6_a9)
set(LTX2_MPIRUN ${MPIEXEC_EXECUTABLE} --oversubscribe --allow-run-as-root --bind-to none)
set(LTX2_EXE $<TARGET_FILE:ditgen>)

# The tiny model writes 128x192, 25 frames at 24 fps, 16 kHz stereo (configs/ltx2.json "tiny").
set(LTX2_VIDEO -DFRAMES=25 -DRATE=24/1 -DWIDTH=192 -DHEIGHT=128 -DSAMPLE_RATE=16000 -DSTEM=ltx2-tiny.128x192x25.C0)
if(DITGEN_FFMPEG)
  add_test(NAME cli.ltx2_tiny_demo
           COMMAND ${CMAKE_COMMAND} -DDITGEN=${LTX2_EXE} -DWORK=${LTX2_WORK}/demo ${LTX2_VIDEO}
                   -P ${CMAKE_CURRENT_SOURCE_DIR}/run_video_demo.cmake)
  # The files --save-frames adds (one step: the demo above covers the default run).
  add_test(NAME cli.ltx2_save_frames
           COMMAND ${CMAKE_COMMAND} -DDITGEN=${LTX2_EXE} -DWORK=${LTX2_WORK}/frames -DSAVE_FRAMES=ON "-DARGS=--steps;1"
                   ${LTX2_VIDEO}
                   -P ${CMAKE_CURRENT_SOURCE_DIR}/run_video_demo.cmake)
  set_tests_properties(cli.ltx2_tiny_demo cli.ltx2_save_frames PROPERTIES LABELS "cli;ltx2" TIMEOUT 600)
else()
  add_test(NAME cli.error.ltx2_no_ffmpeg COMMAND ${CMAKE_CURRENT_SOURCE_DIR}/expect_fail.sh
           "built without FFmpeg's libraries .* pass --save-frames" ${LTX2_EXE} ltx2 --warmup 0)
endif()

# The exported folder (3 transformer shards, Gemma's model.language_model. names) gives the built-in
# model's frames and sound exactly.
add_test(NAME cli.ltx2_export COMMAND ${LTX2_EXE} export-tiny ltx2 ${LTX2_WORK}/exported --shards 3 --replace)
set_tests_properties(cli.ltx2_export PROPERTIES FIXTURES_SETUP ltx2_exported LABELS "cli;ltx2")
# The built-in model's single-process run is also the reference of every LTX-2 mesh, TE-P and VAE-P pipeline
# test: 2 steps of 9 frames (3 latent frames; the default 25 frames cost about 3x the CPU time).
set(LTX2_MESH_ARGS --warmup 0 --steps 2 -F 9)
set(LTX2_SINGLE ${LTX2_WORK}/builtin/run)
add_test(NAME cli.ltx2_builtin_reference
         COMMAND ${LTX2_EXE} ltx2 ${LTX2_MESH_ARGS} --save-frames -o ${LTX2_SINGLE}.mp4)
set_tests_properties(cli.ltx2_builtin_reference PROPERTIES FIXTURES_SETUP ltx2_builtin LABELS "cli;ltx2")
add_test(NAME cli.ltx2_load_exported_folder
         COMMAND ${CMAKE_COMMAND} -DMPIRUN=${MPIEXEC_EXECUTABLE} -DNP=1 -DDITGEN=${LTX2_EXE} -DPNG_DIFF=$<TARGET_FILE:png_diff>
                 -DWAV_DIFF=$<TARGET_FILE:wav_diff> -DTOLERANCE=0 -DWAV_TOLERANCE=0
                 "-DARGS=${LTX2_MESH_ARGS};--model-path;${LTX2_WORK}/exported" -DWORK=${LTX2_WORK}/load
                 -DREFERENCE=${LTX2_SINGLE} -P ${CMAKE_CURRENT_SOURCE_DIR}/run_video_mesh.cmake)
set_tests_properties(cli.ltx2_load_exported_folder PROPERTIES FIXTURES_REQUIRED "ltx2_exported;ltx2_builtin"
                     LABELS "cli;ltx2" TIMEOUT 600)

set(LTX2_RUN ${LTX2_EXE} ltx2 --warmup 0 --steps 1 --save-frames -o ${LTX2_WORK}/out/)
set(FAIL ${CMAKE_CURRENT_SOURCE_DIR}/expect_fail.sh)
add_test(NAME cli.error.ltx2_num_frames
         COMMAND ${FAIL} "--num-frames 10 is not 1 \\+ a multiple of 4 .*use 9 or 13" ${LTX2_RUN} --num-frames 10)
add_test(NAME cli.error.ltx2_png_output
         COMMAND ${FAIL} "--output '.*x.png': this model writes MP4 videos" ${LTX2_EXE} ltx2 --warmup 0 --steps 1
                 -o ${LTX2_WORK}/x.png)
add_test(NAME cli.error.ltx2_sequence_length
         COMMAND ${FAIL} "--max-sequence-length 30 is not a multiple of 4" ${LTX2_RUN} --max-sequence-length 30)
add_test(NAME cli.error.ltx2_height COMMAND ${FAIL} "--height 100 is not a multiple of 8 .*use 96 or 104" ${LTX2_RUN} -H 100)
add_test(NAME cli.error.ltx2_frame_rate COMMAND ${FAIL} "--frame-rate: must be a finite number > 0" ${LTX2_RUN} --frame-rate 0)
add_test(NAME cli.error.ltx2_wrong_pipeline
         COMMAND ${FAIL} "needs an LTX2Pipeline folder" ${LTX2_RUN} --model-path ${CMAKE_CURRENT_BINARY_DIR}/cli/qwen_models/good)
set_tests_properties(cli.error.ltx2_wrong_pipeline PROPERTIES FIXTURES_REQUIRED qwen_cli_models)
add_test(NAME mpi.ltx2_cfg2_without_cfg
         COMMAND ${FAIL} "--cfg 2 .*--guidance 1 and --audio-guidance 1 are not above 1"
                 ${LTX2_MPIRUN} -np 2 ${LTX2_RUN} --cfg 2 --guidance 1)
set_tests_properties(cli.error.ltx2_num_frames cli.error.ltx2_png_output cli.error.ltx2_sequence_length
                     cli.error.ltx2_height cli.error.ltx2_frame_rate cli.error.ltx2_wrong_pipeline
                     mpi.ltx2_cfg2_without_cfg PROPERTIES LABELS "cli;ltx2" TIMEOUT 120)

# Golden fixtures under meshes: the transformer (every preset at np 2, the 4-rank hybrids, an odd Ring) and
# the pipeline (true CFG on both streams, also on the cfg axis).
set(LTX2_MESHES
  "np2_tp|2|--parallel,tp"
  "np2_ulysses|2|--parallel,ulysses"
  "np2_ring|2|--parallel,ring"
  "np3_ring|3|--ring,3"
  "np4_usp|4|--parallel,usp"
  "np4_ulysses_tp|4|--parallel,ulysses_tp"
  "np4_ring_tp|4|--parallel,ring_tp"
)
set(LTX2_CFG_MESHES
  "np2_cfg2|2|--cfg,2"
  "np4_cfg2_ulysses|4|--cfg,2,--parallel,ulysses"
  "np4_cfg2_tp2|4|--cfg,2,--tp,2"
)
foreach(entry ${LTX2_MESHES} ${LTX2_CFG_MESHES})
  string(REPLACE "|" ";" parts "${entry}")
  list(GET parts 0 name)
  list(GET parts 1 np)
  list(SUBLIST parts 2 -1 flags)
  string(REPLACE "," ";" flags "${flags}")
  set(tests mpi.ltx2_verify_pipeline.${name})
  add_test(NAME mpi.ltx2_verify_pipeline.${name}
           COMMAND ${LTX2_MPIRUN} -np ${np} ${LTX2_EXE} verify --skip-missing ${LTX2_PIPELINE_FIXTURE} ${flags})
  if(NOT name MATCHES "cfg2")
    add_test(NAME mpi.ltx2_verify_transformer.${name}
             COMMAND ${LTX2_MPIRUN} -np ${np} ${LTX2_EXE} verify --skip-missing ${LTX2_TRANSFORMER_FIXTURE} ${flags})
    list(APPEND tests mpi.ltx2_verify_transformer.${name})
  endif()
  # One process runs both CFG branches as one call of batch 2, --cfg 2 each at batch 1: the same arithmetic
  # up to the CPU GEMMs' blocking (within 1/255).
  set(tol 1)
  set(wav_tol 2)
  add_test(NAME mpi.ltx2_pipeline.${name}
           COMMAND ${CMAKE_COMMAND} -DMPIRUN=${MPIEXEC_EXECUTABLE} -DNP=${np} "-DFLAGS=${flags}" -DDITGEN=${LTX2_EXE}
                   -DPNG_DIFF=$<TARGET_FILE:png_diff> -DWAV_DIFF=$<TARGET_FILE:wav_diff> -DTOLERANCE=${tol}
                   -DWAV_TOLERANCE=${wav_tol} "-DARGS=${LTX2_MESH_ARGS}" -DWORK=${LTX2_WORK}/mesh/${name}
                   -DREFERENCE=${LTX2_SINGLE} -P ${CMAKE_CURRENT_SOURCE_DIR}/run_video_mesh.cmake)
  list(APPEND tests mpi.ltx2_pipeline.${name})
  set_tests_properties(${tests} PROPERTIES TIMEOUT 600 LABELS "mpi;ltx2" SKIP_RETURN_CODE 77 PROCESSORS ${np})
  set_tests_properties(mpi.ltx2_pipeline.${name} PROPERTIES FIXTURES_REQUIRED ltx2_builtin)
endforeach()

# Broken copies of the exported folder are refused naming the file and the key (or the config values).
add_test(NAME cli.ltx2_prepare_models
         COMMAND ${CMAKE_CURRENT_SOURCE_DIR}/make_bad_ltx2_models.sh ${LTX2_EXE} ${LTX2_WORK}/models)
set_tests_properties(cli.ltx2_prepare_models PROPERTIES FIXTURES_SETUP ltx2_bad_models LABELS "cli;ltx2")
set(LTX2_BAD ${LTX2_WORK}/models)
add_test(NAME cli.error.ltx2_truncated_audio_vae
         COMMAND ${FAIL} "audio_vae/diffusion_pytorch_model.safetensors' is truncated: tensor '"
                 ${LTX2_RUN} --model-path ${LTX2_BAD}/truncated_audio_vae)
add_test(NAME cli.error.ltx2_misshaped_vae
         COMMAND ${FAIL} "tensor 'decoder.conv_in.conv.weight' in .*vae/diffusion_pytorch_model.safetensors' has shape \\[8, 16, 3, 3, 3\\] but the model config needs \\[16, 8, 3, 3, 3\\]"
                 ${LTX2_RUN} --model-path ${LTX2_BAD}/misshaped_vae)
add_test(NAME cli.error.ltx2_missing_vocoder
         COMMAND ${FAIL} "is missing its 'vocoder' folder" ${LTX2_RUN} --model-path ${LTX2_BAD}/novocoder)
add_test(NAME cli.error.ltx2_vocoder_rate
         COMMAND ${FAIL} "upsamples them 160x, which is not its output_sampling_rate 24000 Hz"
                 ${LTX2_RUN} --model-path ${LTX2_BAD}/vocoder_rate)
set_tests_properties(cli.error.ltx2_truncated_audio_vae cli.error.ltx2_misshaped_vae cli.error.ltx2_missing_vocoder
                     cli.error.ltx2_vocoder_rate PROPERTIES FIXTURES_REQUIRED ltx2_bad_models LABELS "cli;ltx2" TIMEOUT 120)

# Output and memory problems end the run before any model work: an output folder that cannot be created,
# and a checkpoint whose weights cannot fit (the test hook pretends the machine has 100 kB).
add_test(NAME cli.error.ltx2_unwritable_output
         COMMAND ${FAIL} "cannot create output folder '/proc/self/ditgen'" ${LTX2_EXE} ltx2 --warmup 0 -o /proc/self/ditgen/)
add_test(NAME cli.error.weights_do_not_fit
         COMMAND ${CMAKE_COMMAND} -E env DITGEN_TEST_AVAILABLE_BYTES=100000
                 ${FAIL} "the weights need about .* at once on each rank \\(audio_vae .*transformer .*\\) but the host has only 97.66 KiB available: spread the transformer over more ranks \\(--tp\\)"
                 ${LTX2_RUN} --model-path ${LTX2_WORK}/exported)
set_tests_properties(cli.error.ltx2_unwritable_output cli.error.weights_do_not_fit PROPERTIES LABELS "cli;ltx2" TIMEOUT 120)
set_tests_properties(cli.error.weights_do_not_fit PROPERTIES FIXTURES_REQUIRED ltx2_exported)

# Odd inputs: batch 2, 72x104 pixels and 9 frames (3 x 9 x 13 = 351 video tokens and 9 audio rows: neither
# divides by 4 or 8) under USP at np 4 and USP x TP at np 8, against the single-process videos.
set(LTX2_ODD --warmup;0;--steps;2;-b;2;-H;72;-W;104;-F;9)
add_test(NAME cli.ltx2_odd_reference
         COMMAND ${LTX2_EXE} ltx2 ${LTX2_ODD} --save-frames -o ${LTX2_WORK}/odd/run.mp4)
set_tests_properties(cli.ltx2_odd_reference PROPERTIES FIXTURES_SETUP ltx2_odd LABELS "cli;ltx2" TIMEOUT 300)
foreach(mesh "np4_usp|4|--parallel,usp" "np8_usp_tp|8|--parallel,usp_tp")
  string(REPLACE "|" ";" parts "${mesh}")
  list(GET parts 0 name)
  list(GET parts 1 np)
  list(GET parts 2 flags)
  string(REPLACE "," ";" flags "${flags}")
  add_test(NAME mpi.ltx2_odd.${name}
           COMMAND ${CMAKE_COMMAND} -DMPIRUN=${MPIEXEC_EXECUTABLE} -DNP=${np} "-DFLAGS=${flags}" -DDITGEN=${LTX2_EXE}
                   -DPNG_DIFF=$<TARGET_FILE:png_diff> -DWAV_DIFF=$<TARGET_FILE:wav_diff> -DTOLERANCE=1 -DWAV_TOLERANCE=2
                   "-DARGS=${LTX2_ODD}" "-DITEMS=_0;_1" -DWORK=${LTX2_WORK}/odd/${name}
                   -DREFERENCE=${LTX2_WORK}/odd/run -P ${CMAKE_CURRENT_SOURCE_DIR}/run_video_mesh.cmake)
  set_tests_properties(mpi.ltx2_odd.${name} PROPERTIES FIXTURES_REQUIRED ltx2_odd LABELS "mpi;ltx2" TIMEOUT 600
                       PROCESSORS ${np})
endforeach()
