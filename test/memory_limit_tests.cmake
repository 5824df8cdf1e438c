# --gpu-memory-limit GiB and DITGEN_GPU_MEMORY_LIMIT (docs/memory.md): values that are not a positive number
# are refused naming the flag or the variable, the flag wins over the variable, and a CPU run refuses the cap
# on every rank instead of ignoring it. (The cap itself and the card's total need a GPU: the unit tests
# [memory_limit] cover that arithmetic with injected numbers.)
set(FAIL ${CMAKE_CURRENT_SOURCE_DIR}/expect_fail.sh)
set(D $<TARGET_FILE:ditgen>)
set(MLWORK ${CMAKE_CURRENT_BINARY_DIR}/memory_limit)
# (`.` for the message's semicolon, which CMake would take for a list separator.)
set(CPU_REFUSED "error: --gpu-memory-limit caps a GPU's memory. this run is on the CPU")

# name | environment value (- for none) | regex | flags (comma-separated)
set(MEMORY_LIMIT_CASES
  "flag_not_a_number|-|--gpu-memory-limit: must be a finite number > 0 and at most 100000, got 'lots'|--gpu-memory-limit,lots"
  "flag_zero|-|--gpu-memory-limit: must be a finite number > 0 .*got '0'|--gpu-memory-limit,0"
  "flag_negative|-|--gpu-memory-limit: must be a finite number > 0 .*got '-4'|--gpu-memory-limit,-4"
  "flag_on_cpu|-|${CPU_REFUSED}|--gpu-memory-limit,39.5"
  "flag_on_device_cpu|-|${CPU_REFUSED}|--device,cpu,--gpu-memory-limit,8"
  "env_not_a_number|lots|error: DITGEN_GPU_MEMORY_LIMIT: must be a finite number > 0 .*got 'lots'|"
  "env_zero|0|error: DITGEN_GPU_MEMORY_LIMIT: must be a finite number > 0 .*got '0'|"
  "env_on_cpu|8|error: DITGEN_GPU_MEMORY_LIMIT caps a GPU's memory. this run is on the CPU|"
  "flag_wins_over_env|lots|${CPU_REFUSED}|--gpu-memory-limit,8"
)
foreach(entry ${MEMORY_LIMIT_CASES})
  string(REPLACE "|" ";" parts "${entry}")
  list(GET parts 0 name)
  list(GET parts 1 env)
  list(GET parts 2 regex)
  list(LENGTH parts n)
  set(flags "")
  if(n GREATER 3)
    list(GET parts 3 flags)
    string(REPLACE "," ";" flags "${flags}")
  endif()
  set(prefix ${CMAKE_COMMAND} -E env --unset=DITGEN_GPU_MEMORY_LIMIT)
  if(NOT env STREQUAL "-")
    set(prefix ${CMAKE_COMMAND} -E env DITGEN_GPU_MEMORY_LIMIT=${env})
  endif()
  add_test(NAME cli.memory_limit.${name}
           COMMAND ${prefix} ${FAIL} "${regex}" ${D} flux2 --warmup 0 --steps 1 ${flags} -o ${MLWORK}/out/)
  set_tests_properties(cli.memory_limit.${name} PROPERTIES LABELS cli TIMEOUT 60)
endforeach()

# Every model command takes the flag (and refuses it on the CPU alike).
foreach(cmd qwen-image ltx2)
  add_test(NAME cli.memory_limit.flag_on_cpu_${cmd}
           COMMAND ${CMAKE_COMMAND} -E env --unset=DITGEN_GPU_MEMORY_LIMIT
                   ${FAIL} "${CPU_REFUSED}" ${D} ${cmd} --warmup 0 --steps 1 --gpu-memory-limit 8 -o ${MLWORK}/out/)
  set_tests_properties(cli.memory_limit.flag_on_cpu_${cmd} PROPERTIES LABELS cli TIMEOUT 60)
endforeach()

# Under mpirun every rank refuses it (each with its own message), and the job exits non-zero.
add_test(NAME mpi.memory_limit_on_cpu_every_rank
         COMMAND ${CMAKE_CURRENT_SOURCE_DIR}/expect_fail_every_rank.sh 2
                 "error: DITGEN_GPU_MEMORY_LIMIT caps a GPU's memory. this run is on the CPU"
                 ${MPIRUN} -np 2 -x DITGEN_GPU_MEMORY_LIMIT=39 ${D} flux2 --warmup 0 --steps 1 --tp 2 -o ${MLWORK}/mpi/)
set_tests_properties(mpi.memory_limit_on_cpu_every_rank PROPERTIES LABELS "mpi;cli" TIMEOUT 120 PROCESSORS 2)

# Ranks whose environments give different caps were not asked the same thing: refused, naming the variable.
add_test(NAME mpi.memory_limit_env_disagrees
         COMMAND ${FAIL} "the 2 ranks were not started with the same request: DITGEN_GPU_MEMORY_LIMIT is '39' on rank 0 but '20' on rank 1"
                 ${MPIRUN} -np 1 -x DITGEN_GPU_MEMORY_LIMIT=39 ${D} flux2 --warmup 0 --steps 1 --tp 2 -o ${MLWORK}/mpmd/ :
                 -np 1 -x DITGEN_GPU_MEMORY_LIMIT=20 ${D} flux2 --warmup 0 --steps 1 --tp 2 -o ${MLWORK}/mpmd/)
set_tests_properties(mpi.memory_limit_env_disagrees PROPERTIES LABELS "mpi;cli" TIMEOUT 120 PROCESSORS 2)
