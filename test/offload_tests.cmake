# --offload (lib/nn/offload.h) without a GPU. The model commands refuse it with the reason on every rank
# (failure_tests.cmake: one rank per model; here under mpirun). `ditgen verify --offload` runs golden cases
# with their blocks streamed through host copies, alone and under meshes (TP ranks stream their own slices):
# each must still match the reference and end with a passing offload check (every block copied, no copy
# wasted; the DBCache cases: the skipped blocks never copied). The unit tests (test_offload.cpp) check
# the streamer's order, depth and releases, and the bit-identity of every model with its resident self.
set(OFFLOAD_VERIFY ${CMAKE_CURRENT_SOURCE_DIR}/run_offload_verify.sh)
set(OFFLOAD_MPIRUN ${MPIEXEC_EXECUTABLE} --oversubscribe --allow-run-as-root --bind-to none)
# name | case folder | ranks | flags
set(OFFLOAD_CASES
  "flux2_transformer|models/flux2_transformer_b1_h6w8_t20|1|"
  "qwen_transformer|models/qwenimage_transformer_b1_h6w8_t12|1|"
  "ltx2_transformer|models/ltx2_transformer_split_b1_f2h4w6_a9|1|"
  "flux2_transformer_lora|models/flux2_transformer_lora_r4_b1_h6w8_t20|1|"
  "text_encoder_mistral|models/text_encoder_mistral|1|"
  "text_encoder_qwen25vl|models/text_encoder_qwen25vl|1|"
  "text_encoder_gemma3|models/text_encoder_gemma3|1|"
  "cache_F2B1|cache/F2B1_W4_MCinf_rdt0.75|1|"
  "cache_F1B0|cache/F1B0_W8_MC3_rdt0.8|1|"
  "flux2_transformer.np2_tp|models/flux2_transformer_b1_h6w8_t20|2|--parallel,tp"
  "flux2_transformer.np2_ring|models/flux2_transformer_b1_h6w8_t20|2|--parallel,ring"
  "qwen_transformer.np2_ulysses|models/qwenimage_transformer_b1_h6w8_t12|2|--parallel,ulysses"
  "ltx2_transformer.np2_tp|models/ltx2_transformer_split_b1_f2h4w6_a9|2|--parallel,tp"
  "text_encoder_mistral.np2_tep|models/text_encoder_mistral|2|--parallel-text,--tp,2"
  "cache_F2B1.np2_tp|cache/F2B1_W4_MCinf_rdt0.75|2|--parallel,tp"
)
foreach(entry ${OFFLOAD_CASES})
  string(REPLACE "|" ";" parts "${entry}")
  list(GET parts 0 name)
  list(GET parts 1 case)
  list(GET parts 2 np)
  list(SUBLIST parts 3 -1 flags)
  string(REPLACE "," ";" flags "${flags}")
  set(cmd $<TARGET_FILE:ditgen> verify --skip-missing --offload ${DITGEN_FIXTURES}/${case} ${flags})
  if(np GREATER 1)
    add_test(NAME mpi.offload_verify.${name} COMMAND ${OFFLOAD_VERIFY} ${OFFLOAD_MPIRUN} -np ${np} ${cmd})
    set_tests_properties(mpi.offload_verify.${name} PROPERTIES LABELS "mpi;offload" PROCESSORS ${np})
    set(t mpi.offload_verify.${name})
  else()
    add_test(NAME golden.offload.${name} COMMAND ${OFFLOAD_VERIFY} ${cmd})
    set_tests_properties(golden.offload.${name} PROPERTIES LABELS "golden;offload")
    set(t golden.offload.${name})
  endif()
  set_tests_properties(${t} PROPERTIES SKIP_RETURN_CODE 77 TIMEOUT 600)
endforeach()

# verify --offload applies to the cases whose blocks stream.
add_test(NAME cli.flag.offload_verify_vae
         COMMAND ${CMAKE_CURRENT_SOURCE_DIR}/expect_fail.sh "verify --offload applies to transformer, text-encoder and cache cases"
                 $<TARGET_FILE:ditgen> verify --offload ${DITGEN_FIXTURES}/models/flux2_vae_b1_6x8)
set_tests_properties(cli.flag.offload_verify_vae PROPERTIES LABELS "cli;offload" TIMEOUT 60)

# Without a GPU every rank refuses --offload, with the reason, before anything loads.
add_test(NAME mpi.offload_refused_on_every_rank
         COMMAND sh -c "out=$(\"$0\" \"$@\" 2>&1); rc=$?; printf '%s\\n' \"$out\"; [ $rc -ne 0 ] && for r in 0 1; do printf '%s\\n' \"$out\" | grep -q \"\\[rank $r/2\\] error: --offload streams the model's blocks from host memory to the GPU\" || exit 1; done"
                 ${OFFLOAD_MPIRUN} -np 2 $<TARGET_FILE:ditgen> qwen-image --warmup 0 --steps 1 --ulysses 2 --offload
                 -o ${CMAKE_CURRENT_BINARY_DIR}/offload/refused/)
set_tests_properties(mpi.offload_refused_on_every_rank PROPERTIES LABELS "mpi;offload" PROCESSORS 2 TIMEOUT 120)
