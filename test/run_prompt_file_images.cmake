# --prompt-file items with their own "image" and "strength" (Qwen-Image image-to-image): an item with the
# image and the presets' strength equals the command-line run (REFERENCE), an item without one is
# text-to-image, and each output name says its mode.
file(REMOVE_RECURSE ${WORK})
file(MAKE_DIRECTORY ${WORK})
file(WRITE ${WORK}/items.jsonl
  "{\"image\": \"${IMAGE}\", \"strength\": 0.6}\n"
  "{\"prompt\": \"a red fox\", \"steps\": 2}\n"
  "{\"image\": [\"${IMAGE}\"], \"strength\": 1.0, \"steps\": 2}\n")
execute_process(COMMAND ${DITGEN} qwen-image --warmup 0 --steps 4 --prompt-file ${WORK}/items.jsonl -o ${WORK}/out/
                RESULT_VARIABLE rc)
if(NOT rc EQUAL 0)
  message(FATAL_ERROR "ditgen qwen-image --prompt-file failed (${rc})")
endif()
foreach(f qwen_image_img2img-tiny.128x128.C0.0001.png qwen_image-tiny.128x128.C0.0002.png
          qwen_image_img2img-tiny.128x128.C0.0003.png)
  if(NOT EXISTS ${WORK}/out/${f})
    file(GLOB got ${WORK}/out/*)
    message(FATAL_ERROR "missing ${WORK}/out/${f}; found: ${got}")
  endif()
endforeach()
execute_process(COMMAND ${PNG_DIFF} ${REFERENCE} ${WORK}/out/qwen_image_img2img-tiny.128x128.C0.0001.png 0
                RESULT_VARIABLE rc)
if(NOT rc EQUAL 0)
  message(FATAL_ERROR "the prompt-file image item differs from the command-line run with the same image")
endif()
