# Images in (--image): FLUX.2 editing, Qwen-Image image-to-image, LTX-2 image-to-video on the tiny
# models. The input PNGs are written by test/make_images.py (no fixtures needed); every mesh must give the
# single-process image (at most 1/255 per channel), and every bad image is refused before anything loads.
set(IMG_DIR ${CMAKE_CURRENT_BINARY_DIR}/images)
set(IMG_FAIL ${CMAKE_CURRENT_SOURCE_DIR}/expect_fail.sh)
add_test(NAME images.make_inputs COMMAND python3 ${CMAKE_CURRENT_SOURCE_DIR}/make_images.py ${IMG_DIR}/in)
set_tests_properties(images.make_inputs PROPERTIES FIXTURES_SETUP image_inputs LABELS images)

# FLUX.2 multi-reference editing: two references (RGB 64x64 and RGBA 96x72); the output takes the first's size.
set(EDIT_FLAGS --image ${IMG_DIR}/in/good_rgb_64x64.png --image ${IMG_DIR}/in/good_rgba_96x72.png)
add_test(NAME images.flux2_edit_single
         COMMAND ditgen flux2 --warmup 0 --steps 4 ${EDIT_FLAGS} -o ${IMG_DIR}/flux2_edit/single.png)
add_test(NAME images.flux2_edit_auto_name
         COMMAND ${CMAKE_COMMAND} -DDITGEN=$<TARGET_FILE:ditgen> -DWORK=${IMG_DIR}/flux2_edit_auto
                 "-DFLAGS=flux2;--steps;1;${EDIT_FLAGS}" -DEXPECT=flux2_edit-tiny.64x64.C0.png
                 -DSHA=${IMG_DIR}/in/good_rgb_64x64.png -P ${CMAKE_CURRENT_SOURCE_DIR}/run_image_names.cmake)
set_tests_properties(images.flux2_edit_single PROPERTIES FIXTURES_SETUP flux2_edit_single
                     FIXTURES_REQUIRED image_inputs LABELS images)
set_tests_properties(images.flux2_edit_auto_name PROPERTIES FIXTURES_REQUIRED image_inputs LABELS images)
# name  np  flags
foreach(entry "np2_ulysses|2|--parallel,ulysses" "np2_ring|2|--parallel,ring" "np2_tp|2|--parallel,tp"
              "np4_usp|4|--parallel,usp" "np4_ulysses_tp|4|--parallel,ulysses_tp")
  string(REPLACE "|" ";" parts "${entry}")
  list(GET parts 0 name)
  list(GET parts 1 np)
  list(GET parts 2 flags)
  string(REPLACE "," ";" flags "${flags}")
  add_test(NAME images.flux2_edit.${name}
           COMMAND ${CMAKE_COMMAND} -DMPIRUN=${MPIEXEC_EXECUTABLE} -DNP=${np} "-DFLAGS=${flags};${EDIT_FLAGS}"
                   -DDITGEN=$<TARGET_FILE:ditgen> -DPNG_DIFF=$<TARGET_FILE:png_diff> -DWORK=${IMG_DIR}/flux2_edit/${name}
                   -DREFERENCE=${IMG_DIR}/flux2_edit/single.png -P ${CMAKE_CURRENT_SOURCE_DIR}/run_pipeline_mesh.cmake)
  set_tests_properties(images.flux2_edit.${name} PROPERTIES FIXTURES_REQUIRED "image_inputs;flux2_edit_single"
                       LABELS "images;mpi" PROCESSORS ${np} TIMEOUT 300)
endforeach()
# TE-P, VAE-P and the block cache together, against a cached single-process run.
add_test(NAME images.flux2_edit_cache_single
         COMMAND ditgen flux2 --warmup 0 --steps 4 --cache ${EDIT_FLAGS} -o ${IMG_DIR}/flux2_edit/cache_single.png)
add_test(NAME images.flux2_edit.np2_tep_vaep_cached
         COMMAND ${CMAKE_COMMAND} -DMPIRUN=${MPIEXEC_EXECUTABLE} -DNP=2
                 "-DFLAGS=--parallel;ulysses;--parallel-text;--parallel-vae;--cache;${EDIT_FLAGS}"
                 -DDITGEN=$<TARGET_FILE:ditgen> -DPNG_DIFF=$<TARGET_FILE:png_diff> -DWORK=${IMG_DIR}/flux2_edit/cached
                 -DREFERENCE=${IMG_DIR}/flux2_edit/cache_single.png -P ${CMAKE_CURRENT_SOURCE_DIR}/run_pipeline_mesh.cmake)
set_tests_properties(images.flux2_edit_cache_single PROPERTIES FIXTURES_SETUP flux2_edit_cache_single
                     FIXTURES_REQUIRED image_inputs LABELS images)
set_tests_properties(images.flux2_edit.np2_tep_vaep_cached PROPERTIES
                     FIXTURES_REQUIRED "image_inputs;flux2_edit_cache_single" LABELS "images;mpi" PROCESSORS 2)

# Bad images: refused naming the file before any model loads.
set(IMG_RUN $<TARGET_FILE:ditgen> flux2 --warmup 0 --steps 1 -o ${IMG_DIR}/refused/)
foreach(case "missing|no such file|${IMG_DIR}/in/does_not_exist.png"
             "folder|is a folder|${IMG_DIR}/in"
             "not_an_image|is not a PNG or JPEG|${IMG_DIR}/in/bad_not_an_image.png"
             "empty|is an empty file|${IMG_DIR}/in/bad_empty.png"
             "truncated|is truncated or corrupt|${IMG_DIR}/in/bad_truncated.png"
             "16bit|16-bit samples|${IMG_DIR}/in/bad_16bit.png"
             "too_large|a side over 8192 px|${IMG_DIR}/in/bad_wide_9000x8.png"
             "too_small|at least 64 px|${IMG_DIR}/in/bad_tiny_32x32.png"
             "aspect|aspect ratio over 8|${IMG_DIR}/in/bad_aspect_640x64.png")
  string(REPLACE "|" ";" parts "${case}")
  list(GET parts 0 name)
  list(GET parts 1 regex)
  list(GET parts 2 file)
  add_test(NAME images.refused.${name} COMMAND ${IMG_FAIL} "--image '.*'.*${regex}"
           ${IMG_RUN} --image ${file})
  set_tests_properties(images.refused.${name} PROPERTIES FIXTURES_REQUIRED image_inputs LABELS images)
endforeach()
set(ELEVEN "")
foreach(i RANGE 10)
  list(APPEND ELEVEN --image ${IMG_DIR}/in/good_rgb_64x64.png)
endforeach()
add_test(NAME images.refused.too_many COMMAND ${IMG_FAIL} "--image is given 11 times.*at most 10" ${IMG_RUN} ${ELEVEN})
set_tests_properties(images.refused.too_many PROPERTIES FIXTURES_REQUIRED image_inputs LABELS images)

# Qwen-Image image-to-image (one RGBA 96x72 image resized to the tiny model's 128x128, strength 0.6 from
# the presets: 3 of 4 steps) and LTX-2 image-to-video (the image as the first frame, re-encoded as an
# H.264 frame where FFmpeg is built in), single-process and under meshes: every mesh equals one process.
set(I2I_FLAGS --image ${IMG_DIR}/in/good_rgba_96x72.png)
set(I2V_ARGS --warmup 0 --steps 2 --num-frames 9 --image ${IMG_DIR}/in/good_rgb_64x64.png)
if(NOT DITGEN_FFMPEG)
  list(APPEND I2V_ARGS --image-crf 0)
endif()
add_test(NAME images.qwen_img2img_single
         COMMAND ditgen qwen-image --warmup 0 --steps 4 ${I2I_FLAGS} -o ${IMG_DIR}/qwen_img2img/single.png)
add_test(NAME images.qwen_img2img_cache_single
         COMMAND ditgen qwen-image --warmup 0 --steps 4 --cache ${I2I_FLAGS} -o ${IMG_DIR}/qwen_img2img/cache_single.png)
add_test(NAME images.ltx2_i2v_single
         COMMAND ditgen ltx2 ${I2V_ARGS} --save-frames -o ${IMG_DIR}/ltx2_i2v/single.mp4)
add_test(NAME images.ltx2_i2v_cache_single
         COMMAND ditgen ltx2 ${I2V_ARGS} --cache --save-frames -o ${IMG_DIR}/ltx2_i2v/cache_single.mp4)
set_tests_properties(images.qwen_img2img_single PROPERTIES FIXTURES_SETUP qwen_img2img_single)
set_tests_properties(images.qwen_img2img_cache_single PROPERTIES FIXTURES_SETUP qwen_img2img_cache_single)
set_tests_properties(images.ltx2_i2v_single PROPERTIES FIXTURES_SETUP ltx2_i2v_single)
set_tests_properties(images.ltx2_i2v_cache_single PROPERTIES FIXTURES_SETUP ltx2_i2v_cache_single)
set_tests_properties(images.qwen_img2img_single images.qwen_img2img_cache_single images.ltx2_i2v_single
                     images.ltx2_i2v_cache_single PROPERTIES FIXTURES_REQUIRED image_inputs LABELS images TIMEOUT 300)
# name  np  flags  reference (single or cache_single)
foreach(entry "np2_ulysses|2|--parallel,ulysses|single" "np2_ring|2|--parallel,ring|single"
              "np2_tp|2|--parallel,tp|single" "np4_usp|4|--parallel,usp|single"
              "np2_tep_vaep_cached|2|--parallel,ulysses,--parallel-text,--parallel-vae,--cache|cache_single")
  string(REPLACE "|" ";" parts "${entry}")
  list(GET parts 0 name)
  list(GET parts 1 np)
  list(GET parts 2 flags)
  list(GET parts 3 ref)
  string(REPLACE "," ";" flags "${flags}")
  add_test(NAME images.qwen_img2img.${name}
           COMMAND ${CMAKE_COMMAND} -DMPIRUN=${MPIEXEC_EXECUTABLE} -DNP=${np} -DMODEL=qwen-image
                   "-DFLAGS=${flags};${I2I_FLAGS}" -DDITGEN=$<TARGET_FILE:ditgen> -DPNG_DIFF=$<TARGET_FILE:png_diff>
                   -DWORK=${IMG_DIR}/qwen_img2img/${name} -DREFERENCE=${IMG_DIR}/qwen_img2img/${ref}.png
                   -P ${CMAKE_CURRENT_SOURCE_DIR}/run_pipeline_mesh.cmake)
  add_test(NAME images.ltx2_i2v.${name}
           COMMAND ${CMAKE_COMMAND} -DMPIRUN=${MPIEXEC_EXECUTABLE} -DNP=${np} "-DFLAGS=${flags}" "-DARGS=${I2V_ARGS}"
                   -DDITGEN=$<TARGET_FILE:ditgen> -DPNG_DIFF=$<TARGET_FILE:png_diff> -DWAV_DIFF=$<TARGET_FILE:wav_diff>
                   -DTOLERANCE=1 -DWAV_TOLERANCE=2 -DWORK=${IMG_DIR}/ltx2_i2v/${name}
                   -DREFERENCE=${IMG_DIR}/ltx2_i2v/${ref} -P ${CMAKE_CURRENT_SOURCE_DIR}/run_video_mesh.cmake)
  set_tests_properties(images.qwen_img2img.${name} PROPERTIES FIXTURES_REQUIRED "image_inputs;qwen_img2img_${ref}"
                       LABELS "images;mpi" PROCESSORS ${np} TIMEOUT 300)
  set_tests_properties(images.ltx2_i2v.${name} PROPERTIES FIXTURES_REQUIRED "image_inputs;ltx2_i2v_${ref}"
                       LABELS "images;mpi" PROCESSORS ${np} TIMEOUT 600)
endforeach()
# The golden image-conditioned pipelines under meshes (upstream's draws injected): CFG on the mesh axis with
# Ulysses, and USP.
foreach(entry "qwen_img2img|pipelines/qwenimage_img2img_pipeline_64x96_s4_str0.6_cfg4.0|4|--cfg,2,--ulysses,2"
              "ltx2_i2v|pipelines/ltx2_i2v_pipeline_64x96x9_s3_cfg4.0|4|--parallel,usp")
  string(REPLACE "|" ";" parts "${entry}")
  list(GET parts 0 name)
  list(GET parts 1 case)
  list(GET parts 2 np)
  list(GET parts 3 flags)
  string(REPLACE "," ";" flags "${flags}")
  add_test(NAME images.${name}_verify_mesh
           COMMAND ${MPIEXEC_EXECUTABLE} --oversubscribe --allow-run-as-root --bind-to none -np ${np}
                   $<TARGET_FILE:ditgen> verify --skip-missing ${DITGEN_FIXTURES}/${case} ${flags})
  set_tests_properties(images.${name}_verify_mesh PROPERTIES LABELS "images;mpi;golden" SKIP_RETURN_CODE 77
                       PROCESSORS ${np} TIMEOUT 300)
endforeach()
# Output names carry the mode; the report records the image's SHA-256.
add_test(NAME images.qwen_img2img_auto_name
         COMMAND ${CMAKE_COMMAND} -DDITGEN=$<TARGET_FILE:ditgen> -DWORK=${IMG_DIR}/qwen_img2img_auto
                 "-DFLAGS=qwen-image;--steps;2;${I2I_FLAGS}" -DEXPECT=qwen_image_img2img-tiny.128x128.C0.png
                 -DSHA=${IMG_DIR}/in/good_rgba_96x72.png -P ${CMAKE_CURRENT_SOURCE_DIR}/run_image_names.cmake)
set_tests_properties(images.qwen_img2img_auto_name PROPERTIES FIXTURES_REQUIRED image_inputs LABELS images)
if(DITGEN_FFMPEG)
  add_test(NAME images.ltx2_i2v_auto_name
           COMMAND ${CMAKE_COMMAND} -DDITGEN=$<TARGET_FILE:ditgen> -DWORK=${IMG_DIR}/ltx2_i2v_auto
                   "-DFLAGS=ltx2;--steps;1;--num-frames;9;--image;${IMG_DIR}/in/good_rgb_64x64.png"
                   -DEXPECT=ltx2_i2v-tiny.128x192x9.C0.mp4 -DSHA=${IMG_DIR}/in/good_rgb_64x64.png
                   -P ${CMAKE_CURRENT_SOURCE_DIR}/run_image_names.cmake)
  set_tests_properties(images.ltx2_i2v_auto_name PROPERTIES FIXTURES_REQUIRED image_inputs LABELS images TIMEOUT 300)
else()
  # Without FFmpeg the default CRF re-encoding is refused, naming the way out.
  add_test(NAME images.refused.ltx2_crf_without_ffmpeg
           COMMAND ${IMG_FAIL} "--image-crf 33 .*without FFmpeg.*--image-crf 0" $<TARGET_FILE:ditgen> ltx2 --warmup 0
                   --steps 1 --save-frames --image ${IMG_DIR}/in/good_rgb_64x64.png -o ${IMG_DIR}/refused/)
  set_tests_properties(images.refused.ltx2_crf_without_ffmpeg PROPERTIES FIXTURES_REQUIRED image_inputs LABELS images)
endif()
# Prompt-file items with their own "image" and "strength": the image item equals the command-line run.
add_test(NAME images.qwen_img2img_prompt_file
         COMMAND ${CMAKE_COMMAND} -DDITGEN=$<TARGET_FILE:ditgen> -DPNG_DIFF=$<TARGET_FILE:png_diff>
                 -DIMAGE=${IMG_DIR}/in/good_rgba_96x72.png -DREFERENCE=${IMG_DIR}/qwen_img2img/single.png
                 -DWORK=${IMG_DIR}/qwen_img2img_prompt_file -P ${CMAKE_CURRENT_SOURCE_DIR}/run_prompt_file_images.cmake)
set_tests_properties(images.qwen_img2img_prompt_file PROPERTIES FIXTURES_REQUIRED "image_inputs;qwen_img2img_single"
                     LABELS images TIMEOUT 300)

# Bad images and image flags on the other models: refused naming the file or the flag, before loading.
foreach(case "qwen_truncated|--image '.*'.*is truncated or corrupt|qwen-image;--image;${IMG_DIR}/in/bad_truncated.png"
             "ltx2_16bit|--image '.*'.*16-bit samples|ltx2;--save-frames;--image;${IMG_DIR}/in/bad_16bit.png"
             "qwen_two_images|--image is given 2 times.*img2img.*at most 1|qwen-image;--image;${IMG_DIR}/in/good_rgb_64x64.png;--image;${IMG_DIR}/in/good_rgb_64x64.png"
             "qwen_strength_without_image|--strength .*give the image with --image|qwen-image;--strength;0.5"
             "ltx2_crf_without_image|--image-crf .*give the image with --image|ltx2;--save-frames;--image-crf;10"
             "qwen_strength_zero|--strength: must be a finite number > 0|qwen-image;--strength;0;${I2I_FLAGS}")
  string(REPLACE "|" ";" parts "${case}")
  list(GET parts 0 name)
  list(GET parts 1 regex)
  list(SUBLIST parts 2 -1 args)
  add_test(NAME images.refused.${name} COMMAND ${IMG_FAIL} "${regex}" $<TARGET_FILE:ditgen> ${args} --warmup 0
           --steps 1 -o ${IMG_DIR}/refused/)
  set_tests_properties(images.refused.${name} PROPERTIES FIXTURES_REQUIRED image_inputs LABELS images)
endforeach()
