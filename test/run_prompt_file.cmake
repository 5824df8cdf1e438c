# --prompt-file: three JSON Lines items (one with its own output) and a plain-text file, each item's
# image equal to the single run with the same flags, the summary listing every item. With MPIRUN/NP
# set, the prompt file runs under that mesh (FLAGS) and must give the single-process images. 64x64 unless
# an item sets its size.
file(REMOVE_RECURSE ${WORK})
file(MAKE_DIRECTORY ${WORK})
file(WRITE ${WORK}/items.jsonl
  "{\"prompt\": \"a red fox\", \"seed\": 1}\n"
  "\n"
  "{\"prompt\": \"a blue car\", \"seed\": 2, \"steps\": 2, \"height\": 64, \"width\": 96}\n"
  "{\"prompt\": \"a red fox\", \"seed\": 1, \"output\": \"${WORK}/named.png\"}\n")
set(launch "")
if(NP)
  set(launch ${MPIRUN} --oversubscribe --allow-run-as-root --bind-to none -np ${NP})
endif()
execute_process(COMMAND ${launch} ${DITGEN} flux2 --warmup 0 --steps 1 -H 64 -W 64 ${FLAGS} --prompt-file ${WORK}/items.jsonl
                        -o ${WORK}/out/ RESULT_VARIABLE rc)
if(NOT rc EQUAL 0)
  message(FATAL_ERROR "ditgen flux2 --prompt-file failed (${rc})")
endif()
set(first ${WORK}/out/flux2-tiny.64x64.C0.0001.png)
set(second ${WORK}/out/flux2-tiny.64x96.C0.0002.png)
if(NP)
  string(REPLACE "flux2-tiny.64x64.C0" "flux2-tiny.64x64.C0_${TAG}" first ${first})
  string(REPLACE "flux2-tiny.64x96.C0" "flux2-tiny.64x96.C0_${TAG}" second ${second})
endif()
foreach(f ${first} ${second} ${WORK}/named.png ${WORK}/named.json)
  if(NOT EXISTS ${f})
    message(FATAL_ERROR "missing ${f}")
  endif()
endforeach()
file(READ ${WORK}/out/items.summary.json summary)
string(JSON n LENGTH "${summary}" items)
string(JSON line2 GET "${summary}" items 1 line)
string(JSON steps2 GET "${summary}" items 1 steps)
if(NOT n EQUAL 3 OR NOT line2 EQUAL 3 OR NOT steps2 EQUAL 2)
  message(FATAL_ERROR "summary: ${n} items, item 2 line ${line2} steps ${steps2} (want 3, 3, 2)")
endif()

# The same generations one per launch.
execute_process(COMMAND ${DITGEN} flux2 --warmup 0 --steps 1 -H 64 -W 64 -p "a red fox" -s 1 -o ${WORK}/single1.png
                RESULT_VARIABLE rc1)
execute_process(COMMAND ${DITGEN} flux2 --warmup 0 --steps 2 -p "a blue car" -s 2 -H 64 -W 96 -o ${WORK}/single2.png
                RESULT_VARIABLE rc2)
if(NOT rc1 EQUAL 0 OR NOT rc2 EQUAL 0)
  message(FATAL_ERROR "single runs failed (${rc1}, ${rc2})")
endif()
foreach(pair "${first}|${WORK}/single1.png" "${second}|${WORK}/single2.png" "${WORK}/named.png|${WORK}/single1.png")
  string(REPLACE "|" ";" pair "${pair}")
  list(GET pair 0 a)
  list(GET pair 1 b)
  execute_process(COMMAND ${PNG_DIFF} ${a} ${b} ${TOLERANCE} RESULT_VARIABLE rc)
  if(NOT rc EQUAL 0)
    message(FATAL_ERROR "${a} differs from the single run ${b}")
  endif()
endforeach()

if(NOT NP)
  # Plain text: one prompt per non-blank line, taken as written.
  file(WRITE ${WORK}/plain.txt "a red fox\n\n  spaces kept  \n")
  execute_process(COMMAND ${DITGEN} flux2 --warmup 0 --steps 1 -H 64 -W 64 -s 1 --prompt-file ${WORK}/plain.txt
                          -o ${WORK}/plain/
                  RESULT_VARIABLE rc)
  if(NOT rc EQUAL 0)
    message(FATAL_ERROR "ditgen flux2 --prompt-file plain.txt failed (${rc})")
  endif()
  file(READ ${WORK}/plain/flux2-tiny.64x64.C0.0002.json report)
  string(JSON prompt GET "${report}" settings prompt)
  string(JSON line GET "${report}" settings prompt_file line)
  if(NOT prompt STREQUAL "  spaces kept  " OR NOT line EQUAL 3)
    message(FATAL_ERROR "plain item 2: prompt '${prompt}' from line ${line}")
  endif()
  execute_process(COMMAND ${PNG_DIFF} ${WORK}/plain/flux2-tiny.64x64.C0.0001.png ${WORK}/single1.png 0 RESULT_VARIABLE rc)
  if(NOT rc EQUAL 0)
    message(FATAL_ERROR "plain item 1 differs from the single run")
  endif()
endif()
