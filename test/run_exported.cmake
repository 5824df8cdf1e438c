# Loads the exported tiny folder and compares with the built-in model's image (must be identical).
file(REMOVE_RECURSE ${WORK})
execute_process(COMMAND ${DITGEN} flux2 --warmup 0 --steps 2 -o ${WORK}/builtin.png RESULT_VARIABLE rc1)
execute_process(COMMAND ${DITGEN} flux2 --warmup 0 --steps 2 --model-path ${MODEL} -p "a hermit crab in a soda can"
                        -H 128 -W 128 --max-sequence-length 256 --text-encoder-out-layers 1,2,3 -o ${WORK}/folder.png RESULT_VARIABLE rc2)
if(NOT rc1 EQUAL 0 OR NOT rc2 EQUAL 0)
  message(FATAL_ERROR "a run failed (${rc1}, ${rc2})")
endif()
execute_process(COMMAND ${PNG_DIFF} ${WORK}/builtin.png ${WORK}/folder.png 0 RESULT_VARIABLE rc)
if(NOT rc EQUAL 0)
  message(FATAL_ERROR "the folder model's image differs from the built-in model's")
endif()
