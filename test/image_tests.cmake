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
