#!/usr/bin/env bash
# Builds the CUDA binary on a GPU machine and runs the GPU checks and benchmarks in one call.
# Needs the dependency bundle in .gpu/ made by scripts/gpu_bundle.sh (headers, libutf8proc, libonig, fixture cases).
# Results and logs go to $OUT (default ./gpu_out).
# Usage: scripts/gpu_check.sh [build|checks|blocks|bench|quick|final|qwen|ltx2|cache|attention|fp8|fp8models|profile|shared|offload|all]
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-$PWD/gpu_out}; mkdir -p "$OUT"
export NCCL_NVLS_ENABLE=0 TORCH_CUDA_ARCH_LIST=9.0a
what=${1:-all}
G=$PWD/.gpu
B=build-gpu
MPI="mpirun --allow-run-as-root --bind-to none -x NCCL_NVLS_ENABLE"
summary=$OUT/summary.txt; : > "$summary"
note() { echo "$*" | tee -a "$summary"; }
D=$B/ditgen; mkdir -p /tmp/bench /tmp/tiny
# Qwen-Image at its real size with random weights: true CFG (two passes per step) at 1024^2 and 1328^2,
# and one pass per step with exactly 128 text tokens (the reference tool's measured workload).
run_qwen() {  # tag flags...
  local tag=$1; shift
  timeout 420 $D -v qwen-image --random-weights --warmup 1 --warmup-steps 2 --steps 10 --track-memory "$@" \
    -o /tmp/bench/qwen_$tag.png > /tmp/qwen_$tag.log 2>&1
  note "qwen $tag ($*): rc=$?"; grep -E "text tokens|Memory" /tmp/qwen_$tag.log | tee -a "$summary"
  tail -14 /tmp/qwen_$tag.log | tee -a "$summary"; cp /tmp/bench/qwen_$tag.json "$OUT/" 2>/dev/null
}
# LTX-2 at its real size with random weights (19B transformer, Gemma 3 12B, VAEs, vocoder): the reference
# tool's default video (768x512, 121 frames at 24 fps, 6144 video + 126 audio tokens) with CFG on both streams.
run_ltx2() {  # tag flags...
  local tag=$1; shift
  timeout 540 $D -v ltx2 --random-weights --warmup 1 --warmup-steps 1 --track-memory --save-frames "$@" \
    -o /tmp/bench/ltx2_$tag.mp4 > /tmp/ltx2_$tag.log 2>&1
  note "ltx2 $tag ($*): rc=$?"; grep -E "Memory|error" /tmp/ltx2_$tag.log | tee -a "$summary"
  tail -14 /tmp/ltx2_$tag.log | tee -a "$summary"; cp /tmp/bench/ltx2_$tag.json "$OUT/" 2>/dev/null
}

if [[ $what == build || $what == all || $what == profile || $what == shared || $what == offload || $what == quick || $what == final || $what == qwen || $what == ltx2 || $what == cache || $what == attention || $what == kernels || $what == fp8 || $what == fp8models ]]; then
  nvidia-smi -L | tee -a "$summary"
  TP=$(python3 -c 'import torch;print(torch.utils.cmake_prefix_path)')
  # cuDNN's headers and library (FP8 attention): PyTorch's nvidia-cudnn package, else the CUDA toolkit's.
  CUDNN_ROOT=$(python3 - <<'PY'
import glob, os
roots = []
try:
    import nvidia.cudnn as m
    roots += list(m.__path__)
except Exception:
    pass
roots += ["/usr/local/cuda", "/usr"]
for r in roots:
    if glob.glob(r + "/include/cudnn.h") and (glob.glob(r + "/lib*/libcudnn.so*") or glob.glob(r + "/lib/x86_64-linux-gnu/libcudnn.so*")):
        print(r)
        break
PY
)
  # CUTLASS's headers (the cutlass_gemm probe row), carried as a tarball by scripts/gpu_bundle.sh.
  [[ -f $G/cutlass.tar.xz && ! -f $G/cutlass/include/cutlass/cutlass.h ]] && tar -xJf $G/cutlass.tar.xz -C $G
  t0=$(date +%s)
  cmake -S . -B $B -G Ninja -DCMAKE_BUILD_TYPE=Release -DDITGEN_CUDA=ON -DCMAKE_PREFIX_PATH="$TP" \
    -DCLI11_ROOT=$G/include -DSTB_ROOT=$G/include/stb -DFMT_ROOT=$G/include -DSPDLOG_ROOT=$G/include -DNLOHMANN_JSON_ROOT=$G/include \
    -DUTF8PROC_ROOT=$G -DUTF8PROC_INCLUDE_DIR=$G/include -DUTF8PROC_LIBRARY=$G/lib/libutf8proc.so \
    -DONIGURUMA_ROOT=$G -DONIGURUMA_INCLUDE_DIR=$G/include -DONIGURUMA_LIBRARY=$G/lib/libonig.so.5 \
    -DCATCH2_ROOT=$G/include -DZLIB_INCLUDE_DIR=$G/include -DZLIB_LIBRARY=$(ls /usr/lib/x86_64-linux-gnu/libz.so.1) \
    -DOPENSSL_INCLUDE_DIR=$G/include -DOPENSSL_CRYPTO_LIBRARY=$(ls /usr/lib/x86_64-linux-gnu/libcrypto.so.3) \
    -DCUDNN_FRONTEND_ROOT=$G/cudnn_frontend/include -DCUDNN_ROOT="$CUDNN_ROOT" \
    -DDITGEN_FFMPEG=OFF -DDITGEN_FIXTURES=$G/fixtures -DCMAKE_CATCH_DISCOVER_TESTS_DISCOVERY_MODE=PRE_TEST > /tmp/cmake.log 2>&1 || { cp /tmp/cmake.log "$OUT/"; tail -30 /tmp/cmake.log; exit 1; }
  targets="ditgen ditgen_parallel_check ditgen_bench_blocks ditgen_bench_fp8 ditgen_bench_floor"
  [[ $what == profile ]] && targets="ditgen ditgen_tests png_diff"
  [[ $what == shared ]] && targets="ditgen"
  [[ $what == offload ]] && targets="ditgen ditgen_tests"
  targets=${TARGETS:-$targets}
  # PRE_TEST above: the machine's Catch2 scripts (v3) read the carried v2 header's --list-tests exit code (the
  # test count) as a failure when run after the link.
  ninja -C $B $targets > /tmp/build.log 2>&1 || { cp /tmp/build.log "$OUT/"; grep -E "error|Error" -A5 /tmp/build.log | head -60; exit 1; }
  note "build: $(( $(date +%s) - t0 )) s; $(grep -m1 'FP8 attention' /tmp/cmake.log)"
fi

if [[ $what == checks || $what == all ]]; then
  D=$B/ditgen; P=$B/test/ditgen_parallel_check; F=$G/fixtures
  for c in models/flux2_transformer_b1_h6w8_t20 models/flux2_vae_b1_6x8 models/text_encoder_mistral pipelines/flux2_pipeline_64x96_s4; do
    $D verify $F/$c --device cuda --dtype fp32 2>&1 | sed 's/^/[1gpu fp32] /' | tee -a "$summary"
    $D verify $F/$c --device cuda --dtype bf16 --tolerance 5e-2 2>&1 | sed 's/^/[1gpu bf16] /' | tee -a "$summary"
  done
  ngpu=$(nvidia-smi -L | wc -l)
  meshes2=("--tp 2" "--ulysses 2" "--ring 2")
  meshes4=("--ulysses 2 --tp 2" "--parallel usp" "--tp 4" "--ulysses 4")
  run_mesh() {  # np flags...
    local np=$1; shift
    for dt in fp32 bf16; do
      local tol=1e-5; [[ $dt == bf16 ]] && tol=2e-2
      timeout 120 $MPI -np $np $P "$@" --device cuda --dtype $dt --tolerance $tol --img-h 32 --img-w 48 --txt 77 --batch 2 2>&1 | grep -E "PASS|FAIL|error" | sed "s/^/[nccl np$np] /" | tee -a "$summary"
      timeout 120 $MPI -np $np $P "$@" --device cuda --dtype $dt --tolerance $tol --fixture $F/models/flux2_transformer_b1_h6w8_t20 2>&1 | grep -E "PASS|FAIL|error" | sed "s/^/[nccl np$np] /" | tee -a "$summary"
    done
    timeout 120 $MPI -np $np $D verify $F/models/flux2_transformer_b1_h6w8_t20 --device cuda --dtype fp32 "$@" 2>&1 | grep -E "PASS|FAIL|error" | sed "s/^/[nccl np$np verify $*] /" | tee -a "$summary"
  }
  if (( ngpu >= 2 )); then for m in "${meshes2[@]}"; do run_mesh 2 $m; done; fi
  if (( ngpu >= 4 )); then for m in "${meshes4[@]}"; do run_mesh 4 $m; done; fi
  $D flux2 --warmup 1 -o /tmp/tiny/ > /tmp/tiny_1gpu.log 2>&1; tail -14 /tmp/tiny_1gpu.log | tee -a "$summary"
  # A stuck rank under NCCL: the watchdog ends the job with the rank, group and operation.
  t0=$(date +%s)
  timeout 120 $MPI -np 2 $P --device cuda --tp 2 --stall-rank 1 --comm-timeout 5 > /tmp/stall.log 2>&1
  note "nccl stuck rank: rc=$? after $(( $(date +%s) - t0 )) s: $(grep -m1 'timed out' /tmp/stall.log)"
fi

if [[ $what == fp8 || $what == all ]]; then
  # --fp8: the fixture's error against the fp32 reference next to bf16's, then the real-size transformer
  # (error and forward time against bf16), then the real-size denoising loop.
  D=$B/ditgen; F=$G/fixtures; mkdir -p /tmp/bench
  $D verify $F/models/flux2_transformer_b1_h6w8_t20 --device cuda --dtype bf16 --tolerance 5e-2 2>&1 | sed "s/^/[bf16] /" | tee -a "$summary"
  $D verify $F/models/flux2_transformer_b1_h6w8_t20 --device cuda --dtype bf16 --fp8 2>&1 | sed "s/^/[fp8] /" | tee -a "$summary"
  $D flux2 --fp8 --device cpu > /tmp/fp8_cpu.log 2>&1; note "--fp8 --device cpu: rc=$? $(tail -1 /tmp/fp8_cpu.log)"
  for c in models/qwenimage_transformer_b1_h6w8_t12 models/ltx2_transformer_split_b1_f2h4w6_a9; do
    $D verify $F/$c --device cuda --dtype bf16 --tolerance 5e-2 2>&1 | sed "s/^/[bf16] /" | tee -a "$summary"
    $D verify $F/$c --device cuda --dtype bf16 --fp8 2>&1 | sed "s/^/[fp8] /" | tee -a "$summary"
  done
  for fa in 0 1; do
    DITGEN_FP8_FAST_ACCUM=$fa $B/ditgen_bench_fp8 --reps 5 --json "$OUT/fp8_transformer_1024_fastaccum$fa.json" 2>&1 | sed "s/^/[fast accum $fa] /" | tee -a "$summary"
  done
  # The real-size denoising loop in bf16 and FP8 (and with the cache): the sweep, with its floor probe.
  DITGEN_BIN=$B/ditgen DITGEN_FLOOR_BIN=$B/ditgen_bench_floor ./scripts/bench_sweep.sh bench/sweeps/flux2_h200.txt \
    --out "$OUT/sweep" --tag h200_flux2 2>&1 | tail -20 | tee -a "$summary"
fi

if [[ $what == fp8models ]]; then
  # --fp8 on Qwen-Image (1024^2, true CFG) and LTX-2 (the default video) at real size, next to bf16.
  run_qwen cfg_1024_bf16 -H 1024 -W 1024
  run_qwen cfg_1024_fp8 -H 1024 -W 1024 --fp8
  run_ltx2 default_s8_bf16 --steps 8
  run_ltx2 default_s8_fp8 --steps 8 --fp8
fi

if [[ $what == final ]]; then
  D=$B/ditgen; F=$G/fixtures
  for dt in fp32 bf16; do
    $D verify $F/models/flux2_transformer_b1_h6w8_t20 --device cuda --dtype $dt --tolerance 5e-2 2>&1 | sed "s/^/[1gpu $dt] /" | tee -a "$summary"
  done
  timeout 60 $MPI -np 4 $D verify $F/models/flux2_transformer_b1_h6w8_t20 --device cuda --ulysses 2 --tp 2 2>&1 | grep -E "PASS|FAIL|error" | sed "s/^/[nccl np4 U2xTP2] /" | tee -a "$summary"
  timeout 150 $MPI -np 4 $D flux2 --random-weights --warmup 1 --warmup-steps 1 --tp 4 -o /tmp/bench/bench_tp4.png > /tmp/bench_tp4.log 2>&1
  note "bench --tp 4: rc=$?"; tail -16 /tmp/bench_tp4.log | tee -a "$summary"; cp /tmp/bench/bench_tp4.json "$OUT/" 2>/dev/null
fi

if [[ $what == quick ]]; then
  D=$B/ditgen; P=$B/test/ditgen_parallel_check; F=$G/fixtures
  $D verify $F/models/flux2_transformer_b1_h6w8_t20 --device cuda --dtype fp32 2>&1 | tee -a "$summary"
  timeout 120 $MPI -np 2 $P --ulysses 2 --device cuda --dtype bf16 --tolerance 2e-2 2>&1 | grep -E "PASS|FAIL|error" | tee -a "$summary"
  for stall in 0 1; do
    t0=$(date +%s)
    timeout 120 $MPI -np 2 $P --device cuda --tp 2 --stall-rank $stall --comm-timeout 5 > /tmp/stall.log 2>&1
    note "nccl stuck rank $stall: rc=$? after $(( $(date +%s) - t0 )) s: $(grep -m1 'timed out' /tmp/stall.log)"
  done
fi

if [[ $what == qwen || $what == all ]]; then
  D=$B/ditgen; F=$G/fixtures
  for c in models/qwenimage_transformer_b1_h6w8_t12 models/qwenimage_vae_b1_6x8 models/text_encoder_qwen25vl \
           pipelines/qwenimage_pipeline_64x96_s4_cfg4.0; do
    $D verify $F/$c --device cuda --dtype fp32 2>&1 | sed 's/^/[1gpu fp32] /' | tee -a "$summary"
    $D verify $F/$c --device cuda --dtype bf16 --tolerance 5e-2 2>&1 | sed 's/^/[1gpu bf16] /' | tee -a "$summary"
  done
  $D qwen-image --warmup 1 -o /tmp/tiny/ > /tmp/qwen_tiny.log 2>&1; note "qwen tiny: rc=$?"; tail -12 /tmp/qwen_tiny.log | tee -a "$summary"
  run_qwen cfg_1024 -H 1024 -W 1024
  run_qwen cfg_1328 -H 1328 -W 1328
  run_qwen nocfg_1024_t128 -H 1024 -W 1024 --true-cfg-scale 1 --max-sequence-length 128
fi

if [[ $what == ltx2 || $what == all ]]; then
  D=$B/ditgen; F=$G/fixtures
  for c in models/ltx2_transformer_split_b1_f2h4w6_a9 models/ltx2_connectors_b2_L8 models/ltx2_video_vae_b1_f3_4x6 \
           models/ltx2_audio_vae_vocoder models/text_encoder_gemma3 pipelines/ltx2_pipeline_64x96x9_s3_cfg4.0; do
    $D verify $F/$c --device cuda --dtype fp32 2>&1 | sed 's/^/[1gpu fp32] /' | tee -a "$summary"
    $D verify $F/$c --device cuda --dtype bf16 --tolerance 5e-2 2>&1 | sed 's/^/[1gpu bf16] /' | tee -a "$summary"
  done
  $D ltx2 --warmup 1 --save-frames -o /tmp/tiny/ > /tmp/ltx2_tiny.log 2>&1; note "ltx2 tiny: rc=$?"; tail -12 /tmp/ltx2_tiny.log | tee -a "$summary"
  run_ltx2 default_s8 --steps 8
fi

if [[ $what == cache ]]; then
  D=$B/ditgen
  # FLUX.2-dev real size, random weights, 1024x1024, 28 steps: no cache, the reference CLI's --cache
  # defaults, and the static fast mask; then the VAE decode at 2048x2048 (and the per-stage peaks).
  run_flux() {  # tag flags...
    local tag=$1; shift
    timeout 400 $D -v flux2 --random-weights --warmup 1 --warmup-steps 2 --track-memory "$@" \
      -o /tmp/bench/flux2_$tag.png > /tmp/flux2_$tag.log 2>&1
    note "flux2 $tag ($*): rc=$?"; grep -E "^cache|Memory|error" /tmp/flux2_$tag.log | tee -a "$summary"
    tail -12 /tmp/flux2_$tag.log | tee -a "$summary"; cp /tmp/bench/flux2_$tag*.json "$OUT/" 2>/dev/null
  }
  run_flux nocache_1024
  DITGEN_MEMORY_PLAN=off run_flux nocache_1024_noplan
  run_flux cache_1024 --cache
  run_flux cache_fast_1024 --cache --scm fast --scm-policy static
  run_flux nocache_2048_s2 -H 2048 -W 2048 --steps 2
  # LTX-2 at its default size: the decode's parts timed on their own, and the per-stage peaks.
  timeout 300 $D ltx2 --random-weights --warmup 0 --steps 2 --track-memory --save-frames -o /tmp/bench/ltx2_decode.mp4 \
    > /tmp/ltx2_decode.log 2>&1; note "ltx2 decode parts: rc=$?"; tail -30 /tmp/ltx2_decode.log | tee -a "$summary"
  cp /tmp/bench/ltx2_decode.json "$OUT/" 2>/dev/null
  note "FFmpeg on this machine: $(ls /usr/lib/x86_64-linux-gnu/libavcodec.so* 2>/dev/null | head -3 | tr '\n' ' ') $(pkg-config --modversion libavcodec 2>/dev/null)"
fi

if [[ $what == attention ]]; then
  # The attention kernels (--attention auto = cuDNN, flash, sdpa): fixtures, kernel check, steps.
  D=$B/ditgen; F=$G/fixtures
  for c in models/flux2_transformer_b1_h6w8_t20 models/qwenimage_transformer_b1_h6w8_t12 pipelines/flux2_pipeline_64x96_s4; do
    for a in auto flash sdpa; do
      $D verify $F/$c --device cuda --dtype bf16 --tolerance 0.2 --attention $a 2>&1 | sed "s/^/[bf16 $a] /" | tee -a "$summary"
    done
  done
  $B/ditgen_bench_blocks --tp 1 --json "$OUT/blocks_tp1.json" 2>&1 | grep -E "attention|check|kernel" | sed "s/^/[blocks] /" | tee -a "$summary"
  bench() {  # tag flags...
    local tag=$1; shift
    timeout 300 $D "$@" --random-weights --warmup 1 --warmup-steps 2 --steps 10 --track-memory -o /tmp/bench/$tag.png \
      > /tmp/$tag.log 2>&1
    note "$tag ($*): rc=$? $(grep -E 'per step' /tmp/$tag.log)"; cp /tmp/bench/$tag.json "$OUT/" 2>/dev/null
  }
  for a in auto flash; do
    bench qwen_t128_$a qwen-image -H 1024 -W 1024 --true-cfg-scale 1 --max-sequence-length 128 --attention $a
    bench qwen_cfg_1024_$a qwen-image -H 1024 -W 1024 --attention $a
    bench flux2_1024_$a flux2 --attention $a
  done
  bench qwen_cfg_1328_auto qwen-image -H 1328 -W 1328
  grep -h "declined" /tmp/*.log | sort | uniq -c | tee -a "$summary"
fi

if [[ $what == profile ]]; then
  # --profile on each model's real-size default step (random weights): the kernel-class tables and traces.
  D=$B/ditgen; F=$G/fixtures; mkdir -p "$OUT/profile"
  if [[ ${CHECKS:-1} == 1 || ${CHECKS:-1} == tests ]]; then
    # The fused kernels and the block graphs against their ATen compositions / eager runs (bf16 and fp32).
    $B/test/ditgen_tests "[cuda]" > "$OUT/cuda_tests.log" 2>&1
    note "[cuda] tests: rc=$? $(grep -E '^(test cases|All tests)' "$OUT/cuda_tests.log")"
    grep -B3 -A12 "FAILED" "$OUT/cuda_tests.log" | grep -v "^  frame #" | head -80 | tee -a "$summary"
    # A failed graph capture (its test) leaves the process's CUDA generator unusable: a process of its own.
    note "[cuda_alone] tests: $($B/test/ditgen_tests "[cuda_alone]" 2>&1 | grep -E '^(test cases|All tests)')"
    grep -A2 "FP8 attention \[" "$OUT/cuda_tests.log" | tee -a "$summary"
  fi
  if [[ ${CHECKS:-1} == 1 ]]; then
    # The golden pipelines (4 steps: CUDA graphs from the second) and the tiny models with graphs on and off.
    for c in pipelines/flux2_pipeline_64x96_s4 pipelines/qwenimage_pipeline_64x96_s4_cfg4.0 pipelines/ltx2_pipeline_64x96x9_s3_cfg4.0; do
      $D verify $F/$c --device cuda --dtype fp32 2>&1 | grep -E "PASS|FAIL|error" | head -3 | sed "s|^|[graphs fp32 $c] |" | tee -a "$summary"
    done
    for m in flux2 qwen-image; do
      for g in on off; do $D $m --device cuda --steps 4 --cuda-graphs $g -o /tmp/tiny/$m.$g.png > /tmp/tiny/$m.$g.log 2>&1; done
      note "[tiny $m graphs on vs off] $($B/test/png_diff /tmp/tiny/$m.on.png /tmp/tiny/$m.off.png 0 0 2>&1 | tail -1)"
    done
  fi
  # Then each model's step with the kernel profile, each model's compiled peer right after it in the same job
  # (bench/peers; needs the .peers bundle from scripts/peers_bundle.sh). Two warm-up steps: the CUDA graphs
  # are captured there, so the timed steps replay them.
  peers() { [[ -d .peers/diffusers ]] && PEER_REPS=${PEER_REPS:-3} OUT=$OUT bash bench/peers/run_peers.sh "$@" 2>&1 | tail -3 | tee -a "$summary"; }
  prof() {  # tag flags...
    local tag=$1; shift
    timeout 400 $D "$@" --random-weights --warmup 1 --warmup-steps 2 --track-memory --profile "$OUT/profile/$tag" \
      -o /tmp/bench/$tag.${EXT:-png} > /tmp/$tag.log 2>&1
    note "$tag ($*): rc=$? $(grep -E 'per step' /tmp/$tag.log)"; tail -40 /tmp/$tag.log > "$OUT/profile/$tag.log"
    # Where the GPU idles in the profiled step (host syncs, launch gaps): the first line into the summary.
    [[ -e $OUT/profile/$tag/trace_rank0.json ]] && python3 scripts/trace_gaps.py "$OUT/profile/$tag/trace_rank0.json" \
      > "$OUT/profile/$tag.gaps.md" 2>&1 && note "  gaps: $(head -1 "$OUT/profile/$tag.gaps.md")"
    cp /tmp/bench/$tag.json "$OUT/profile/" 2>/dev/null; gzip -f "$OUT"/profile/$tag/trace_rank*.json 2>/dev/null
  }
  qwen=(qwen-image -H 1024 -W 1024 --steps 4 --true-cfg-scale 1 --max-sequence-length 128)
  # ROWS: which rows (default all); *_nograph rows are the same step with --cuda-graphs off.
  for row in ${ROWS:-ltx2 ltx2_peer ltx2_nograph flux2 flux2_peer flux2_nograph qwen qwen_peer ltx2_fp8 flux2_fp8 qwen_fp8}; do
    case $row in
      ltx2) EXT=mp4 prof ltx2_default ltx2 --steps 4 --save-frames ;;
      ltx2_nograph) EXT=mp4 prof ltx2_default_nograph ltx2 --steps 4 --save-frames --cuda-graphs off ;;
      ltx2_fp8) EXT=mp4 prof ltx2_default_fp8 ltx2 --steps 4 --fp8 --save-frames ;;
      flux2) prof flux2_1024 flux2 --steps 4 ;;
      flux2_nograph) prof flux2_1024_nograph flux2 --steps 4 --cuda-graphs off ;;
      flux2_fp8) prof flux2_1024_fp8 flux2 --steps 4 --fp8 ;;
      qwen) prof qwen_t128 "${qwen[@]}" ;;
      qwen_nograph) prof qwen_t128_nograph "${qwen[@]}" --cuda-graphs off ;;
      qwen_fp8) prof qwen_t128_fp8 "${qwen[@]}" --fp8 ;;
      qwen_cfg) prof qwen_cfg_1024 qwen-image -H 1024 -W 1024 --steps 4 ;;  # true CFG, a padded negative prompt
      # FP8 attention (--attention fp8) with bf16 GEMMs (*_attn8) and with FP8 GEMMs (*_fp8attn).
      ltx2_attn8) EXT=mp4 prof ltx2_default_attn8 ltx2 --steps 4 --save-frames --attention fp8 ;;
      ltx2_fp8attn) EXT=mp4 prof ltx2_default_fp8attn ltx2 --steps 4 --fp8 --save-frames --attention fp8 ;;
      flux2_attn8) prof flux2_1024_attn8 flux2 --steps 4 --attention fp8 ;;
      flux2_fp8attn) prof flux2_1024_fp8attn flux2 --steps 4 --fp8 --attention fp8 ;;
      qwen_fp8attn) prof qwen_t128_fp8attn "${qwen[@]}" --fp8 --attention fp8 ;;
      # --fp8 with the partial sums promoted to fp32 (DITGEN_FP8_FAST_ACCUM=0), for the A/B of fast accumulation.
      ltx2_fp8attn_promoted) DITGEN_FP8_FAST_ACCUM=0 EXT=mp4 prof ltx2_default_fp8attn_promoted ltx2 --steps 4 --fp8 --save-frames --attention fp8 ;;
      flux2_fp8attn_promoted) DITGEN_FP8_FAST_ACCUM=0 prof flux2_1024_fp8attn_promoted flux2 --steps 4 --fp8 --attention fp8 ;;
      flux2_fp8_promoted) DITGEN_FP8_FAST_ACCUM=0 prof flux2_1024_fp8_promoted flux2 --steps 4 --fp8 ;;
      verify_fp8)  # the transformer fixtures' --fp8 error against fp32, both accumulations, beside bf16's
        for c in models/flux2_transformer_b1_h6w8_t20 models/qwenimage_transformer_b1_h6w8_t12 models/ltx2_transformer_split_b1_f2h4w6_a9; do
          $D verify $F/$c --device cuda --dtype bf16 --tolerance 5e-2 2>&1 | grep -vE "^\s*$" | tail -3 | sed "s|^|[bf16 $c] |" | tee -a "$summary"
          for fa in 1 0; do
            DITGEN_FP8_FAST_ACCUM=$fa $D verify $F/$c --device cuda --dtype bf16 --fp8 2>&1 | grep -vE "^\s*$" | tail -3 | sed "s|^|[fp8 fast accum $fa $c] |" | tee -a "$summary"
          done
        done ;;
      diff_attn8)  # FP8 attention's and FP8 GEMMs' effect on the real-size outputs (random weights), against bf16
        for t in ltx2_default_fp8 ltx2_default_fp8attn ltx2_default_attn8; do
          [[ -d /tmp/bench/$t.frames ]] || continue
          r=$(for f in /tmp/bench/ltx2_default.frames/*.png; do $B/test/png_diff $f /tmp/bench/$t.frames/$(basename $f) 255 255; done 2>&1 |
              awk '{split($6, a, "/"); split($8, b, "/"); if (a[1] > x) x = a[1]; u += b[1]; k++} END {printf "frames max %d/255 mean %.2f/255", x, u / k}')
          note "[output vs bf16] $t: $r"
        done
        for t in flux2_1024_fp8 flux2_1024_fp8attn flux2_1024_attn8; do
          [[ -e /tmp/bench/$t.png ]] && note "[output vs bf16] $t: $($B/test/png_diff /tmp/bench/flux2_1024.png /tmp/bench/$t.png 255 255 2>&1 | tail -1)"
        done ;;
      floor_attn)  # the attention kernels alone at the models' shapes: cuDNN bf16 against FP8 (its error too)
        shapes="--attention 2,32,6144,128 --attention 2,32,6144,128,1024 --attention 2,32,126,64 --attention 2,32,126,64,1024
                --attention 2,32,6144,64,126 --attention 2,32,126,64,6144 --attention 1,48,4608,128 --attention 1,24,4224,128
                --attention 1,32,6144,128 --attention 1,32,6144,64,126"
        for be in auto fp8; do
          $B/ditgen_bench_floor $shapes --attention-backend $be --reps 20 --json "$OUT/floor_attn_$be.json" 2>&1 | tee -a "$summary"
        done
        # FP8 at every shape, the short ones too (what the 2048-token threshold avoids).
        DITGEN_FP8_ATTENTION_MIN_TOKENS=1 $B/ditgen_bench_floor $shapes --attention-backend fp8 --reps 20 \
          --json "$OUT/floor_attn_fp8_all.json" 2>&1 | tee -a "$summary" ;;
      verify_attn8)  # the golden pipelines in bf16: FP8 attention's error beside bf16 attention's
        for c in pipelines/flux2_pipeline_64x96_s4 pipelines/qwenimage_pipeline_64x96_s4_cfg4.0 pipelines/ltx2_pipeline_64x96x9_s3_cfg4.0; do
          for be in auto fp8; do
            $D verify $F/$c --device cuda --dtype bf16 --attention $be --tolerance 1 2>&1 | grep -vE "^\s*$" | tail -6 | sed "s|^|[bf16 attention $be $c] |" | tee -a "$summary"
          done
        done ;;
      # -v: LTX-2's text-key decisions and the CUDA graph keys of each forward.
      ltx2_verbose) EXT=mp4 prof ltx2_default_verbose -v ltx2 --steps 4 --save-frames
        grep -E "text keys|CUDA graphs" /tmp/ltx2_default_verbose.log | head -24 | tee -a "$summary" ;;
      # The same step with the residual's GEMM epilogue off (nn::linear_residual: LTX-2's ungated residuals).
      ltx2_unfused) DITGEN_FUSED_RESIDUAL=0 EXT=mp4 prof ltx2_default_unfused ltx2 --steps 4 --save-frames ;;
      # The GEMMs of the feed-forward whole at both CFG branches' rows (DITGEN_GEMM_ROWS=0), for the A/B.
      ltx2_wholegemm) DITGEN_GEMM_ROWS=0 EXT=mp4 prof ltx2_default_wholegemm ltx2 --steps 4 --save-frames ;;
      # The audio stream on the video's stream (DITGEN_SIDE_STREAM=0), for the A/B; *_fp8: the same under --fp8.
      ltx2_onestream) DITGEN_SIDE_STREAM=0 EXT=mp4 prof ltx2_default_onestream ltx2 --steps 4 --save-frames ;;
      ltx2_fp8_onestream) DITGEN_SIDE_STREAM=0 EXT=mp4 prof ltx2_default_fp8_onestream ltx2 --steps 4 --fp8 --save-frames ;;
      # cuBLAS with LibTorch's default workspaces (ditgen runs its GEMMs without: nn::gemms_without_workspace), for the A/B.
      ltx2_workspace) CUBLASLT_WORKSPACE_SIZE=32768 CUBLAS_WORKSPACE_CONFIG=:4096:8 EXT=mp4 prof ltx2_default_workspace ltx2 --steps 4 --save-frames ;;
      flux2_fp8_workspace) CUBLASLT_WORKSPACE_SIZE=32768 CUBLAS_WORKSPACE_CONFIG=:4096:8 prof flux2_1024_fp8_workspace flux2 --steps 4 --fp8 ;;
      # Probes of LibTorch's GEMM variants and fused attention kernels at the models' shapes (Python, this card).
      gemm_bias_fused) python3 bench/probes/gemm_bias_fused.py 7 > "$OUT/gemm_bias_fused.txt" 2>&1
        note "gemm_bias_fused: rc=$?"; grep -E "^\S|one GEMM|no bias" "$OUT/gemm_bias_fused.txt" | tee -a "$summary" ;;
      attn_backends) python3 bench/probes/attention_backends.py 5 > "$OUT/attention_backends.txt" 2>&1
        note "attn_backends: rc=$?"; grep -vE "^$" "$OUT/attention_backends.txt" | tee -a "$summary" ;;
      # Guidance off: one forward a step, of one item (*_nocfg) or of two (*_nocfg_b2): what batching costs.
      ltx2_nocfg) EXT=mp4 prof ltx2_nocfg ltx2 --steps 4 --guidance 1 --audio-guidance 1 --save-frames ;;
      ltx2_nocfg_b2) EXT=mp4 prof ltx2_nocfg_b2 ltx2 --steps 4 --guidance 1 --audio-guidance 1 --batch-count 2 --save-frames ;;
      gemm_algos)  # cuBLASLt's first heuristic choice against its fastest candidate at the models' shapes
        nvcc -O2 -std=c++17 -arch=sm_90a bench/probes/cublaslt_algos.cu -lcublasLt -o /tmp/probe_algos &&
          /tmp/probe_algos 20 > "$OUT/gemm_algos.txt" 2>&1; note "gemm_algos: rc=$? $(tail -1 "$OUT/gemm_algos.txt")"
        grep -E "faster|^\S" "$OUT/gemm_algos.txt" | tee -a "$summary" ;;
      cutlass_gemm)  # CUTLASS's Hopper GEMMs against cuBLASLt's, and SwiGLU / gated residual epilogues, at the models' shapes
        nvcc -O3 -std=c++17 -arch=sm_90a --expt-relaxed-constexpr -diag-suppress 20012 -I$G/cutlass/include \
          bench/probes/cutlass_gemm.cu -lcublasLt -o /tmp/probe_cutlass && /tmp/probe_cutlass 10 > "$OUT/cutlass_gemm.txt" 2>&1
        note "cutlass_gemm: rc=$?"; grep -E "^\S|best|today|fused" "$OUT/cutlass_gemm.txt" | tee -a "$summary" ;;
      gemm_fp8)  # FP8 GEMMs by scale mode and accumulation, first choice against fastest candidate
        nvcc -O2 -std=c++17 -arch=sm_90a bench/probes/cublaslt_fp8.cu -lcublasLt -o /tmp/probe_fp8 &&
          /tmp/probe_fp8 20 > "$OUT/gemm_fp8.txt" 2>&1; note "gemm_fp8: rc=$?"
        grep -E "faster|^all|^\S" "$OUT/gemm_fp8.txt" | tee -a "$summary" ;;
      attn_plans)  # cuDNN's bf16 attention plans at the models' shapes, first choice against fastest
        cudnn_lib=$(ls "$CUDNN_ROOT"/lib*/libcudnn.so* 2>/dev/null | head -1)
        g++ -O2 -std=c++17 bench/probes/cudnn_sdpa_plans.cpp -I$G/cudnn_frontend/include -I"$CUDNN_ROOT/include" \
          -I/usr/local/cuda/include "$cudnn_lib" -Wl,-rpath,$(dirname "$cudnn_lib") -L/usr/local/cuda/lib64 -lcudart \
          -o /tmp/probe_sdpa > "$OUT/attn_plans.txt" 2>&1 && /tmp/probe_sdpa 10 >> "$OUT/attn_plans.txt" 2>&1
        note "attn_plans: rc=$?"
        grep -E "faster|^\S|does not" "$OUT/attn_plans.txt" | tee -a "$summary" ;;
      *_peer) PEER_MODES=${PEER_MODES:-compile} peers ${row%_peer} ;;  # PEER_MODES="eager compile": both
    esac
  done
  # One file back: the device tool returns a limited number of files.
  tar -czf "$OUT/profile.tgz" -C "$OUT" profile peers 2>/dev/null && rm -rf "$OUT/profile" "$OUT/peers"
fi

if [[ $what == shared ]]; then
  # Ranks sharing the one GPU (issue 19; --comm auto: MPI through pinned host buffers): the smoke table of every
  # tiny model at 2 and 4 ranks, then every carried fixture under 2- and 4-rank meshes in fp32.
  D=$B/ditgen; F=$G/fixtures
  ninja -C $B ditgen png_diff wav_diff > /tmp/build_shared.log 2>&1 || { tail -30 /tmp/build_shared.log; exit 1; }
  for n in ${SMOKE_RANKS:-2 4}; do
    timeout ${SMOKE_TIMEOUT:-200} ./scripts/smoke.sh --build $B --ranks $n --out /tmp/smoke$n > "$OUT/smoke_np$n.log" 2>&1
    note "smoke --ranks $n on one GPU: rc=$?"; grep -E "^\| |smoke:" "$OUT/smoke_np$n.log" >> "$summary"
    # FP8's own error: each FP8 output (one process, Ulysses, TP) against the exact single-process output,
    # so a mesh's FP8 difference can be told from FP8's own rounding.
    for m in flux2 qwen-image ltx2; do
      d=/tmp/smoke$n/$m
      for tag in single_fp8 fp8 fp8_tp; do
        [[ -e $d/$tag.png || -e $d/$tag.wav ]] || continue  # a row the rank count does not fit
        if [[ $m == ltx2 ]]; then
          r=$(for f in $d/single.frames/*.png; do $B/test/png_diff $f $d/$tag.frames/$(basename $f) 255 255; done 2>&1 |
              awk '{split($6, a, "/"); split($8, b, "/"); if (a[1] > x) x = a[1]; u += b[1]; k++} END {printf "frames max %d/255 mean %.2f/255", x, u / k}')
          r="$r, sound: $($B/test/wav_diff $d/single.wav $d/$tag.wav 32767 32767 2>&1 | tail -1)"
        else
          r=$($B/test/png_diff $d/single.png $d/$tag.png 255 255 2>&1 | tail -1)
        fi
        note "[fp8 error np$n] $m $tag vs exact single: $r"
      done
    done
  done
  for c in $(cd $F && ls -d models/* pipelines/*); do
    IFS=',' read -ra meshes <<< "${FIXTURE_MESHES-2 --tp 2,2 --ulysses 2,2 --ring 2,4 --ulysses 2 --tp 2,4 --ring 2 --ulysses 2}"
    for mesh in "${meshes[@]}"; do
      np=${mesh%% *}
      r=$(timeout 90 $MPI --oversubscribe -np $np $D verify $F/$c --device cuda --dtype fp32 ${mesh#* } 2>&1 | grep -E "PASS|FAIL|error" | head -2 | tr '\n' ' ')
      note "[one GPU np$np ${mesh#* }] $c: ${r:-no result (timeout?)}"
    done
  done
fi

if [[ $what == offload ]]; then
  # --offload (issue 21): the copy engine's CUDA tests, golden cases streamed on the GPU, then FLUX.2-dev at
  # real size (random weights, 1024^2): resident --fp8 next to --fp8 --offload under a 20 GiB cap (a 24 GB
  # card), end to end, in the same job.
  D=$B/ditgen; F=$G/fixtures; mkdir -p "$OUT/offload"
  $B/test/ditgen_tests "[cuda]" 2>&1 | tail -6 | tee -a "$summary"
  for c in models/flux2_transformer_b1_h6w8_t20 models/text_encoder_mistral cache/F2B1_W4_MCinf_rdt0.75 \
           models/qwenimage_transformer_b1_h6w8_t12 models/ltx2_transformer_split_b1_f2h4w6_a9; do
    [[ -d $F/$c ]] || continue
    $D verify $F/$c --device cuda --dtype fp32 --offload 2>&1 | grep -E "PASS|FAIL|error|offload" | head -3 | sed "s|^|[offload fp32 $c] |" | tee -a "$summary"
  done
  timeout 60 $MPI --oversubscribe -np 2 $D verify $F/models/flux2_transformer_b1_h6w8_t20 --device cuda --dtype fp32 --offload --tp 2 2>&1 \
    | grep -E "PASS|FAIL|error" | head -2 | sed "s/^/[offload np2 tp2] /" | tee -a "$summary"
  off() {  # tag flags...
    local tag=$1; shift
    timeout ${OFF_TIMEOUT:-240} $D flux2 --random-weights --warmup 1 --warmup-steps 1 --steps ${STEPS:-3} --track-memory "$@" \
      -o /tmp/bench/$tag.png > "$OUT/offload/$tag.log" 2>&1
    note "$tag ($*): rc=$? $(grep -E 'per step' "$OUT/offload/$tag.log")"
    grep -E "^offload|Memory|peak|out of memory|error" "$OUT/offload/$tag.log" | head -8 | tee -a "$summary"
    cp /tmp/bench/$tag.json "$OUT/offload/" 2>/dev/null
  }
  off flux2_fp8 --fp8
  off flux2_fp8_offload_cap20 --fp8 --offload --gpu-memory-limit 20
  [[ ${OFF_BF16:-0} == 1 ]] && off flux2_bf16_offload_cap39 --offload --gpu-memory-limit 39
  tar -czf "$OUT/offload.tgz" -C "$OUT" offload && rm -rf "$OUT/offload"
fi

if [[ $what == kernels ]]; then
  $B/ditgen_bench_blocks --tp 1 --json "$OUT/blocks_tp1_kernels.json" 2>&1 | sed "s/^/[blocks tp1] /" | tee -a "$summary"
  $B/ditgen_bench_blocks --tp 4 --json "$OUT/blocks_tp4_kernels.json" 2>&1 | grep -E "kernel|attention" | sed "s/^/[blocks tp4] /" | tee -a "$summary"
fi

if [[ $what == blocks || $what == all ]]; then
  for tp in 1 4; do
    $B/ditgen_bench_blocks --tp $tp --json "$OUT/blocks_tp$tp.json" 2>&1 | sed "s/^/[blocks tp$tp] /" | tee -a "$summary"
  done
fi

if [[ $what == bench || $what == all ]]; then
  D=$B/ditgen
  ngpu=$(nvidia-smi -L | wc -l)
  # FLUX.2-dev at its real size with random weights, 1024x1024, 28 steps, guidance 4.
  for mesh in "--tp 4" "--ulysses 2 --tp 2" "--ring 2 --tp 2"; do
    (( ngpu >= 4 )) || break
    tag=$(echo $mesh | tr -d ' -')
    timeout 420 $MPI -np 4 $D flux2 --random-weights --warmup 1 --warmup-steps 2 --track-memory $mesh \
      -o /tmp/bench/bench_$tag.png > /tmp/bench_$tag.log 2>&1
    note "bench $mesh: rc=$?"; tail -16 /tmp/bench_$tag.log | tee -a "$summary"; cp /tmp/bench/bench_$tag.json "$OUT/" 2>/dev/null
  done
fi
echo "=== summary ==="; cat "$summary"
