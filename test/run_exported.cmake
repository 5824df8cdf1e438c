# Loads an exported tiny folder with default flags (its presets travel with it) and compares with the
# built-in model's image: they must be identical. CMD: the model command (default flux2).
if(NOT CMD)
  set(CMD flux2)
endif()
file(REMOVE_RECURSE ${WORK})
execute_process(COMMAND ${DITGEN} ${CMD} --warmup 0 --steps 2 -o ${WORK}/builtin.png RESULT_VARIABLE rc1)
execute_process(COMMAND ${DITGEN} ${CMD} --warmup 0 --steps 2 --model-path ${MODEL}
                        -o ${WORK}/folder.png RESULT_VARIABLE rc2)
if(NOT rc1 EQUAL 0 OR NOT rc2 EQUAL 0)
  message(FATAL_ERROR "a run failed (${rc1}, ${rc2})")
endif()
execute_process(COMMAND ${PNG_DIFF} ${WORK}/builtin.png ${WORK}/folder.png 0 RESULT_VARIABLE rc)
if(NOT rc EQUAL 0)
  message(FATAL_ERROR "the folder model's image differs from the built-in model's")
endif()
