if(NOT MODEL)
  set(MODEL flux2)
endif()
if(NOT DEFINED TOLERANCE)
  set(TOLERANCE 1)
endif()
# Runs a model's tiny pipeline under a mesh and compares its PNG with the single-process one
# (at most TOLERANCE/255 per channel; MODEL defaults to flux2).
file(MAKE_DIRECTORY ${WORK})
execute_process(COMMAND ${MPIRUN} --oversubscribe --allow-run-as-root --bind-to none -np ${NP} ${DITGEN} ${MODEL}
                        --warmup 0 --steps 4 ${FLAGS} -o ${WORK}/mesh.png
                RESULT_VARIABLE rc)
if(NOT rc EQUAL 0)
  message(FATAL_ERROR "ditgen ${MODEL} under the mesh failed (${rc})")
endif()
execute_process(COMMAND ${PNG_DIFF} ${REFERENCE} ${WORK}/mesh.png ${TOLERANCE} RESULT_VARIABLE rc)
if(NOT rc EQUAL 0)
  message(FATAL_ERROR "the mesh image differs from the single-process image by more than ${TOLERANCE}/255")
endif()
