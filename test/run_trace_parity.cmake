# Traces the tiny pipeline in one process and under TP-2, then compares rank 1's intermediates (a trace
# holds the first step's).
file(REMOVE_RECURSE ${WORK})
file(MAKE_DIRECTORY ${WORK}/one ${WORK}/tp2)
set(ARGS flux2 --warmup 0 --steps 1 -H 64 -W 64)
execute_process(COMMAND ${DITGEN} ${ARGS} --trace ${WORK}/one -o ${WORK}/one/ RESULT_VARIABLE rc1)
execute_process(COMMAND ${MPIRUN} --oversubscribe --allow-run-as-root --bind-to none -np 2 ${DITGEN} ${ARGS} --tp 2
                        --trace ${WORK}/tp2 -o ${WORK}/tp2/ RESULT_VARIABLE rc2)
if(NOT rc1 EQUAL 0 OR NOT rc2 EQUAL 0)
  message(FATAL_ERROR "a traced run failed (${rc1}, ${rc2})")
endif()
execute_process(COMMAND ${DITGEN} trace-diff ${WORK}/one/trace_rank0.safetensors ${WORK}/tp2/trace_rank1.safetensors
                        --tolerance 1e-5 RESULT_VARIABLE rc)
if(NOT rc EQUAL 0)
  message(FATAL_ERROR "TP-2 intermediates differ from the single-process ones")
endif()
