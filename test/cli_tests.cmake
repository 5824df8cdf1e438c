# Command-line tests: the tiny demo, loading an exported diffusers folder, and bad input that must
# end the run with a message naming the file, key, flag or number (never a hang, never exit 0).
set(CLI_WORK ${CMAKE_CURRENT_BINARY_DIR}/cli)
set(DITGEN_EXE $<TARGET_FILE:ditgen>)

add_test(NAME cli.tiny_demo
         COMMAND ${CMAKE_COMMAND} -DDITGEN=${DITGEN_EXE} -DWORK=${CLI_WORK}/demo -P ${CMAKE_CURRENT_SOURCE_DIR}/run_tiny_demo.cmake)
add_test(NAME cli.qwen_tiny_demo
         COMMAND ${CMAKE_COMMAND} -DDITGEN=${DITGEN_EXE} -DWORK=${CLI_WORK}/qwen_demo -DCMD=qwen-image
                 -DSTEM=qwen_image-tiny.128x128.C0 -P ${CMAKE_CURRENT_SOURCE_DIR}/run_tiny_demo.cmake)

add_test(NAME cli.prepare_models COMMAND ${CMAKE_CURRENT_SOURCE_DIR}/make_bad_models.sh ${DITGEN_EXE} ${CLI_WORK}/models)
set_tests_properties(cli.prepare_models PROPERTIES FIXTURES_SETUP cli_models)

# The exported folder loads through the checkpoint path (3 transformer shards with an index,
# Mistral3-prefixed text encoder) and gives the built-in model's image exactly.
add_test(NAME cli.load_exported_folder
         COMMAND ${CMAKE_COMMAND} -DDITGEN=${DITGEN_EXE} -DPNG_DIFF=$<TARGET_FILE:png_diff> -DWORK=${CLI_WORK}/load
                 -DMODEL=${CLI_WORK}/models/good
                 -P ${CMAKE_CURRENT_SOURCE_DIR}/run_exported.cmake)
set_tests_properties(cli.load_exported_folder PROPERTIES FIXTURES_REQUIRED cli_models)

set(FAIL ${CMAKE_CURRENT_SOURCE_DIR}/expect_fail.sh)
set(RUN ${DITGEN_EXE} flux2 --warmup 0 --steps 1 -H 128 -W 128 --text-encoder-out-layers 1,2,3 -o ${CLI_WORK}/out/)
set(RUN_TINY ${DITGEN_EXE} flux2 --warmup 0 --steps 1 -o ${CLI_WORK}/out/)
set(M ${CLI_WORK}/models)
add_test(NAME cli.error.unknown_flag COMMAND ${FAIL} "--bogus" ${DITGEN_EXE} flux2 --bogus 1)
add_test(NAME cli.error.bad_height COMMAND ${FAIL} "--height 130 is not a multiple of 4" ${RUN_TINY} -H 130)
add_test(NAME cli.error.bad_width COMMAND ${FAIL} "--width 2 is too small" ${RUN_TINY} -W 2)
add_test(NAME cli.error.zero_steps COMMAND ${FAIL} "steps" ${RUN} --steps 0)
add_test(NAME cli.error.cuda_graphs_value COMMAND ${FAIL} "--cuda-graphs: maybe not in" ${RUN_TINY} --cuda-graphs maybe)
if(NOT DITGEN_CUDA)
  add_test(NAME cli.error.fp8_attention_cpu COMMAND ${FAIL} "--attention fp8 runs cuDNN's FP8 attention on Hopper GPUs: this is a CPU build" ${RUN_TINY} --attention fp8)
endif()
add_test(NAME cli.error.bad_dtype COMMAND ${FAIL} "--dtype must be" ${RUN} --dtype int8)
add_test(NAME cli.error.bad_parallel COMMAND ${FAIL} "unknown --parallel 'foo'" ${RUN} --parallel foo)
add_test(NAME cli.error.mesh_size COMMAND ${FAIL} "does not match the 1 launched ranks" ${RUN} --tp 2)
add_test(NAME cli.error.missing_folder COMMAND ${FAIL} "--model-path '/nonexistent/flux2' is not a folder" ${RUN} --model-path /nonexistent/flux2)
add_test(NAME cli.error.truncated_shard COMMAND ${FAIL} "diffusion_pytorch_model-00002-of-00003.safetensors' is truncated" ${RUN} --model-path ${M}/truncated)
add_test(NAME cli.error.corrupt_shard COMMAND ${FAIL} "diffusion_pytorch_model-00002-of-00003.safetensors' is (truncated or )?corrupt" ${RUN} --model-path ${M}/corrupt)
add_test(NAME cli.error.bad_index COMMAND ${FAIL} "safetensors.index.json' is not valid JSON" ${RUN} --model-path ${M}/badjson)
add_test(NAME cli.error.missing_shard COMMAND ${FAIL} "names shard .*00002-of-00003.safetensors', which does not exist" ${RUN} --model-path ${M}/noshard)
add_test(NAME cli.error.missing_tensor COMMAND ${FAIL} "missing tensor 'transformer_blocks.2.attn.to_q.weight'" ${RUN} --model-path ${M}/missing)
add_test(NAME cli.error.unexpected_tensor COMMAND ${FAIL} "unexpected tensor\\(s\\) in .*single_transformer_blocks.1" ${RUN} --model-path ${M}/unexpected)
# (joint_attention_dim 64 against 96-wide weights: the cross-component check refuses it before any weight is
# read, the transformer being read only after the prompt encoding; qwen_misshaped_tensor covers that read.)
add_test(NAME cli.error.misshaped_tensor COMMAND ${FAIL} "give 96 features, but the transformer's joint_attention_dim is 64" ${RUN} --model-path ${M}/misshaped)
add_test(NAME cli.error.missing_component COMMAND ${FAIL} "is missing its 'vae' folder" ${RUN} --model-path ${M}/novae)
add_test(NAME cli.error.wrong_pipeline COMMAND ${FAIL} "needs a Flux2Pipeline folder" ${RUN} --model-path ${M}/wrongclass)
add_test(NAME cli.error.bad_tokenizer COMMAND ${FAIL} "tokenizer.json" ${RUN} --model-path ${M}/badtok)
get_property(all_tests DIRECTORY PROPERTY TESTS)
foreach(t ${all_tests})
  if(t MATCHES "^cli\\.error\\.")
    set_tests_properties(${t} PROPERTIES FIXTURES_REQUIRED cli_models LABELS cli TIMEOUT 120)
  endif()
endforeach()

# Qwen-Image: the exported tiny folder (3 transformer shards, legacy `model.*` text-encoder names, the
# text encoder's keys at its config's top level) loads to the built-in image exactly; broken copies are
# refused naming the file and the key; CFG and size flags are checked.
add_test(NAME cli.qwen_prepare_models COMMAND ${CMAKE_CURRENT_SOURCE_DIR}/make_bad_qwen_models.sh ${DITGEN_EXE} ${CLI_WORK}/qwen_models)
set_tests_properties(cli.qwen_prepare_models PROPERTIES FIXTURES_SETUP qwen_cli_models)
set(QM ${CLI_WORK}/qwen_models)
add_test(NAME cli.qwen_load_exported_folder
         COMMAND ${CMAKE_COMMAND} -DDITGEN=${DITGEN_EXE} -DPNG_DIFF=$<TARGET_FILE:png_diff> -DWORK=${CLI_WORK}/qwen_load
                 -DMODEL=${QM}/good -DCMD=qwen-image
                 -P ${CMAKE_CURRENT_SOURCE_DIR}/run_exported.cmake)
set_tests_properties(cli.qwen_load_exported_folder PROPERTIES FIXTURES_REQUIRED qwen_cli_models)
set(QRUN ${DITGEN_EXE} qwen-image --warmup 0 --steps 1 -H 64 -W 64 --max-sequence-length 128 -o ${CLI_WORK}/qout/)
set(QRUN_TINY ${DITGEN_EXE} qwen-image --warmup 0 --steps 1 -o ${CLI_WORK}/qout/)
add_test(NAME cli.error.qwen_truncated_shard COMMAND ${FAIL} "diffusion_pytorch_model-00002-of-00003.safetensors' is truncated" ${QRUN} --model-path ${QM}/truncated)
add_test(NAME cli.error.qwen_misshaped_tensor COMMAND ${FAIL} "tensor 'img_in.weight' in .*diffusion_pytorch_model-0000[0-9]-of-00003.safetensors' has shape \\[16, 128\\] but the model config needs \\[128, 16\\]" ${QRUN} --model-path ${QM}/misshaped)
add_test(NAME cli.error.qwen_missing_tensor COMMAND ${FAIL} "missing tensor 'transformer_blocks.2.img_mod.1.weight'" ${QRUN} --model-path ${QM}/missing)
add_test(NAME cli.error.qwen_text_encoder_width COMMAND ${FAIL} "text encoder's hidden_size 32 .* differs from the transformer's joint_attention_dim 48" ${QRUN} --model-path ${QM}/tewidth)
add_test(NAME cli.error.qwen_wrong_pipeline COMMAND ${FAIL} "needs a QwenImagePipeline folder" ${QRUN} --model-path ${M}/good)
add_test(NAME cli.error.qwen_variant COMMAND ${FAIL} "'zero_cond_t' is true" ${QRUN} --model-path ${QM}/variant)
add_test(NAME cli.error.qwen_aspect_ratio COMMAND ${FAIL} "--aspect-ratio '5:4' is not one of 16:9, 1:1, 2:3" ${QRUN_TINY} --aspect-ratio 5:4)
add_test(NAME cli.error.qwen_aspect_and_size COMMAND ${FAIL} "--aspect-ratio 16:9 sets the image size" ${QRUN_TINY} --aspect-ratio 16:9 -H 64)
add_test(NAME cli.error.qwen_long_sequence COMMAND ${FAIL} "--max-sequence-length 2000 is larger than Qwen-Image's limit of 1024" ${QRUN_TINY} --max-sequence-length 2000)
add_test(NAME cli.error.qwen_bad_height COMMAND ${FAIL} "--height 100 is not a multiple of 8 .*use 96 or 104" ${QRUN_TINY} -H 100)
foreach(t cli.error.qwen_truncated_shard cli.error.qwen_misshaped_tensor cli.error.qwen_missing_tensor
          cli.error.qwen_text_encoder_width cli.error.qwen_variant)
  set_tests_properties(${t} PROPERTIES FIXTURES_REQUIRED qwen_cli_models LABELS cli TIMEOUT 120)
endforeach()
set_tests_properties(cli.error.qwen_wrong_pipeline PROPERTIES FIXTURES_REQUIRED cli_models LABELS cli TIMEOUT 120)

# --prompt-file (many prompts per launch, the model loaded once): JSON Lines and plain text, each
# item equal to its single run; bad files end before the first image, naming the line and key.
add_test(NAME cli.prompt_file
         COMMAND ${CMAKE_COMMAND} -DDITGEN=${DITGEN_EXE} -DPNG_DIFF=$<TARGET_FILE:png_diff> -DTOLERANCE=0
                 -DWORK=${CLI_WORK}/prompt_file -P ${CMAKE_CURRENT_SOURCE_DIR}/run_prompt_file.cmake)
set_tests_properties(cli.prompt_file PROPERTIES LABELS cli TIMEOUT 300)
set(PF_WORK ${CLI_WORK}/prompt_file_bad)
file(MAKE_DIRECTORY ${PF_WORK})
file(WRITE ${PF_WORK}/unknown.jsonl "{\"prompt\": \"a\"}\n{\"promt\": \"b\"}\n")
file(WRITE ${PF_WORK}/seed.jsonl "{\"prompt\": \"a\", \"seed\": -3}\n")
file(WRITE ${PF_WORK}/height.jsonl "{\"prompt\": \"a\"}\n{\"prompt\": \"b\", \"height\": 101}\n")
file(WRITE ${PF_WORK}/negative.jsonl "{\"prompt\": \"a\", \"negative_prompt\": \"b\"}\n")
file(WRITE ${PF_WORK}/twice.jsonl "{\"output\": \"${PF_WORK}/x.png\"}\n{\"output\": \"${PF_WORK}/x.png\"}\n")
file(WRITE ${PF_WORK}/notjson.jsonl "{\"prompt\": \"a\"}\nplain words\n")
file(WRITE ${PF_WORK}/blank.txt "\n  \n")
file(WRITE ${PF_WORK}/two.txt "a\nb\n")
set(PF_CASES
  "unknown_key|unknown.jsonl|line 2: unknown key \"promt\"|"
  "negative_seed|seed.jsonl|line 1: \"seed\" must be an integer from 0 to 18446744073709551615, got -3|"
  "bad_height|height.jsonl|line 2: --height 101 is not a multiple of 4|"
  "negative_prompt|negative.jsonl|line 1: \"negative_prompt\": `ditgen flux2` takes no negative prompt|"
  "same_output|twice.jsonl|line 1 .* and --prompt-file .* line 2 .*write the same file|"
  "not_json|notjson.jsonl|line 2: not a JSON object|"
  "empty|blank.txt|has no prompts|"
  "one_file_many_items|two.txt|names one file, but 2 items|-o,${PF_WORK}/one.png"
  "with_prompt|two.txt|excludes|-p,x"
)
foreach(entry ${PF_CASES})
  string(REPLACE "|" ";" parts "${entry}")
  list(GET parts 0 name)
  list(GET parts 1 file)
  list(GET parts 2 regex)
  list(LENGTH parts len)
  set(extra "")
  if(len GREATER 3)
    list(GET parts 3 extra)
    string(REPLACE "," ";" extra "${extra}")
  endif()
  if(NOT extra MATCHES "^-o;")
    list(APPEND extra -o ${PF_WORK}/out/)
  endif()
  add_test(NAME cli.prompt_file.${name}
           COMMAND ${CMAKE_CURRENT_SOURCE_DIR}/expect_fail.sh "${regex}" ${DITGEN_EXE} flux2 --warmup 0 --steps 1
                   --prompt-file ${PF_WORK}/${file} ${extra})
  set_tests_properties(cli.prompt_file.${name} PROPERTIES LABELS cli TIMEOUT 60)
endforeach()

# --profile: every rank's first timed step as a Chrome trace and a kernel-class table.
add_test(NAME cli.profile_np2
         COMMAND ${CMAKE_COMMAND} -DMPIRUN=${MPIEXEC_EXECUTABLE} -DNP=2 -DDITGEN=$<TARGET_FILE:ditgen>
                 -DWORK=${CMAKE_CURRENT_BINARY_DIR}/cli/profile -P ${CMAKE_CURRENT_SOURCE_DIR}/run_profile.cmake)
set_tests_properties(cli.profile_np2 PROPERTIES LABELS cli PROCESSORS 2 TIMEOUT 300)
