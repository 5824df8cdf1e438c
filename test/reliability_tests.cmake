# Hostile inputs (issue 22): the probe's reproducers, each ending with a message naming the file, line,
# key or flag, in seconds (a crash, a hang or a silently lost output fails). make_hostile_models.sh builds
# the inputs from tiny exports and `ditgen_fuzz write`.
set(R_FAIL ${CMAKE_CURRENT_SOURCE_DIR}/expect_fail.sh)
set(R_D $<TARGET_FILE:ditgen>)
set(R_WORK ${CMAKE_CURRENT_BINARY_DIR}/reliability)
set(R_M ${R_WORK}/models)
set(R_PF ${R_M}/pf)
add_test(NAME reliability.prepare
         COMMAND ${CMAKE_CURRENT_SOURCE_DIR}/make_hostile_models.sh ${R_D} $<TARGET_FILE:ditgen_fuzz> ${R_M})
set_tests_properties(reliability.prepare PROPERTIES FIXTURES_SETUP hostile_models TIMEOUT 300 LABELS cli)

set(R_RUN ${R_D} flux2 --warmup 0 --steps 1 -o ${R_WORK}/out/)
set(R_QRUN ${R_D} qwen-image --warmup 0 --steps 1 -H 64 -W 64 -o ${R_WORK}/qout/)
set(R_SHARD "diffusion_pytorch_model-00002-of-00003.safetensors")
string(REPLACE ";" "," R_RUN "${R_RUN}")
string(REPLACE ";" "," R_QRUN "${R_QRUN}")
# name | regex | command (comma-separated)
set(R_CASES
  "deep_header|${R_SHARD}' is corrupt: its header nests deeper than 64 levels|${R_RUN},--model-path,${R_M}/deepshard"
  "wide_header|${R_SHARD}|${R_RUN},--model-path,${R_M}/wideshard"
  "relabelled_dtype|${R_SHARD}': tensor '.*' is stored as I32, but ditgen reads floating-point values there|${R_RUN},--model-path,${R_M}/relabel"
  "deep_presets|ditgen_presets.json' nests deeper than 64 levels|${R_RUN},--model-path,${R_M}/deeppresets"
  "presets_wrong_type|ditgen_presets.json' defaults: \"steps\" must be an integer from 1 to 10000, got \"many\"|${R_RUN},--model-path,${R_M}/presets_type"
  "presets_float_steps|ditgen_presets.json' defaults: \"steps\" must be an integer from 1 to 10000, got 2.5|${R_RUN},--model-path,${R_M}/presets_float"
  "presets_huge_steps|\"steps\" must be an integer from 1 to 10000, got 1000000000|${R_D},flux2,--warmup,0,-o,${R_WORK}/out/,--model-path,${R_M}/presets_huge"
  "presets_negative_guidance|ditgen_presets.json' defaults: \"guidance\" must be a finite number >= 0|${R_RUN},--model-path,${R_M}/presets_guidance"
  "presets_repeated_key|ditgen_presets.json': key 'steps' appears twice in 'defaults'|${R_RUN},--model-path,${R_M}/presets_dup"
  "presets_negative_cfg|ditgen_presets.json' defaults: \"true_cfg_scale\" must be a finite number >= 0|${R_QRUN},--model-path,${R_M}/qpresets_cfg"
  "index_repeated_key|safetensors.index.json': key '.*' appears twice in 'weight_map'|${R_RUN},--model-path,${R_M}/dupindex"
  "model_index_repeated_key|model_index.json': key '_class_name' appears twice in the top-level object|${R_RUN},--model-path,${R_M}/dupmodelindex"
  "te_max_positions|text_encoder/config.json\\): the prompt has .* tokens but max_position_embeddings is 1|${R_QRUN},--model-path,${R_M}/te_maxpos"
  "te_other_family|model_type says gemma3 but|${R_QRUN},--model-path,${R_M}/te_family"
  "scheduler_base_zero|scheduler_config.json: base_image_seq_len must be a positive token count, got 0|${R_QRUN},--model-path,${R_M}/sched_base"
  "scheduler_max_equals_base|max_image_seq_len \\(256\\) must be larger than base_image_seq_len \\(256\\)|${R_QRUN},--model-path,${R_M}/sched_equal"
  "scheduler_train_steps|num_train_timesteps must be 1000 .*got 0|${R_QRUN},--model-path,${R_M}/sched_train"
  "flux2_scheduler_train_steps|num_train_timesteps must be 1000 .*got 0|${R_RUN},--model-path,${R_M}/fsched_train"
  "verify_deep_header|io.safetensors' is corrupt: its header nests deeper than 64 levels|${R_D},verify,${R_M}/cases/flux2_vae_b1_6x8"
  "trace_diff_deep_header|deep.safetensors' is corrupt: its header nests deeper than 64 levels|${R_D},trace-diff,${R_M}/files/deep.safetensors,${R_M}/files/deep.safetensors"
  "prompt_file_steps|--prompt-file .*steps.jsonl line 1: \"steps\" must be an integer from 1 to 10000, got 100000|${R_RUN},--prompt-file,${R_PF}/steps.jsonl"
  "prompt_file_height|--prompt-file .*height.jsonl line 2: \"height\" must be an integer from 1 to 16384, got 16388|${R_RUN},--prompt-file,${R_PF}/height.jsonl"
  "prompt_file_repeated_key|--prompt-file .*dupkey.jsonl line 1: key 'seed' appears twice|${R_RUN},--prompt-file,${R_PF}/dupkey.jsonl"
  "prompt_file_not_utf8|--prompt-file .*latin1.txt line 2: not UTF-8 text \\(byte 0xe9 at column 4\\)|${R_RUN},--prompt-file,${R_PF}/latin1.txt"
  "output_dot|line 1 .* and --prompt-file .* line 2 .*write the same file '.*/o/a.png'|${R_RUN},--prompt-file,${R_PF}/dot.jsonl"
  "output_slashes|write the same file '.*/o/a.png'|${R_RUN},--prompt-file,${R_PF}/slashes.jsonl"
  "output_dotdot|write the same file '.*/o/a.png'|${R_RUN},--prompt-file,${R_PF}/dotdot.jsonl"
  "output_symlinked_folder|write the same file '.*/o/a.png'|${R_RUN},--prompt-file,${R_PF}/symlink.jsonl"
  "output_report_is_prompt_file|line 1 \\(its report\\) .* would overwrite --prompt-file|${R_RUN},--prompt-file,${R_PF}/items.json"
  "output_report_is_summary|line 2 \\(its report\\) .* and the prompt-file summary .*write the same file|${R_D},flux2,--warmup,0,--steps,1,-o,${R_PF}/o/,--prompt-file,${R_PF}/summary.jsonl"
)
foreach(entry ${R_CASES})
  string(REPLACE "|" ";" parts "${entry}")
  list(GET parts 0 name)
  list(GET parts 1 regex)
  list(GET parts 2 command)
  string(REPLACE "," ";" command "${command}")
  add_test(NAME reliability.${name} COMMAND ${R_FAIL} "${regex}" ${command})
  set_tests_properties(reliability.${name} PROPERTIES FIXTURES_REQUIRED hostile_models LABELS cli TIMEOUT 60)
endforeach()

# An explicit output equal to another item's automatic name: known only once the model's name and the
# run's tag are (the runner's check over planned_outputs).
add_test(NAME reliability.output_equals_auto_name
         COMMAND ${R_FAIL} "line 1 .*and --prompt-file .* line 2 .*write the same file"
                 ${R_D} flux2 --warmup 0 --steps 1 -o ${R_PF}/o/ --prompt-file ${R_PF}/autoname.jsonl)
set_tests_properties(reliability.output_equals_auto_name PROPERTIES FIXTURES_REQUIRED hostile_models LABELS cli
                     TIMEOUT 60)

# Global flags after the model command.
add_test(NAME reliability.log_level_after_command
         COMMAND ${R_D} flux2 --warmup 0 --steps 1 -H 64 -W 64 -o ${R_WORK}/global/ --log-level warn)
add_test(NAME reliability.verbose_after_command COMMAND ${R_D} flux2 --warmup 0 --steps 1 -H 64 -W 64 -o ${R_WORK}/global/ -v)
set_tests_properties(reliability.log_level_after_command reliability.verbose_after_command PROPERTIES LABELS cli TIMEOUT 120)

# --steps-mask "" used to spin forever in the argument parser (through sh: CMake drops empty arguments).
add_test(NAME reliability.empty_steps_mask
         COMMAND ${R_FAIL} "--steps-mask: must not be empty"
                 sh -c "'${R_D}' flux2 --warmup 0 --steps 1 -H 64 -W 64 -o '${R_WORK}/mask/' --cache --steps-mask ''")
set_tests_properties(reliability.empty_steps_mask PROPERTIES LABELS cli TIMEOUT 60)

# export-tiny --replace through a symlink: the folder it points to is replaced, nothing is left beside it.
add_test(NAME reliability.export_replace_symlink
         COMMAND sh -c "set -e; w='${R_WORK}/symlink'; rm -rf \"$w\"; mkdir -p \"$w/real\"; ln -s real \"$w/link\"
                        '${R_D}' export-tiny flux2 \"$w/link\" --replace
                        '${R_D}' export-tiny flux2 \"$w/link\" --replace
                        test -L \"$w/link\"; test -f \"$w/real/model_index.json\"
                        left=$(ls -A \"$w\" | tr '\\n' ' '); test \"$left\" = 'link real ' || { echo \"left behind: $left\"; exit 1; }")
set_tests_properties(reliability.export_replace_symlink PROPERTIES LABELS cli TIMEOUT 120)

# Out of memory on the CPU (an address-space limit makes the allocator fail): reported as such, exit 2,
# not as an internal error; the second wants the stage named (the runner's in_stage).
add_test(NAME reliability.cpu_out_of_memory
         COMMAND ${R_FAIL} "error: out of memory.*can't allocate memory"
                 sh -c "ulimit -v 1500000; exec '${R_D}' flux2 --warmup 0 --steps 1 -H 2048 -W 2048 -b 8 -o '${R_WORK}/oom/'")
add_test(NAME reliability.cpu_out_of_memory_stage
         COMMAND ${R_FAIL} "out of memory while [a-z ]+ on cpu"
                 sh -c "ulimit -v 1500000; exec '${R_D}' flux2 --warmup 0 --steps 1 -H 2048 -W 2048 -b 8 -o '${R_WORK}/oom/'")
set_tests_properties(reliability.cpu_out_of_memory reliability.cpu_out_of_memory_stage PROPERTIES LABELS cli TIMEOUT 120)
