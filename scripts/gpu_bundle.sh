#!/usr/bin/env bash
# Prepares .gpu/ (git-ignored) for scripts/gpu_check.sh on GPU machines that have CUDA LibTorch, NCCL,
# MPI, CMake and ninja but none of our Debian packages and no network: the header-only dependencies,
# libutf8proc, libonig, the OpenSSL headers, and the golden fixture cases the GPU checks read. Carry .gpu with the device call.
# FFmpeg is not carried: Debian's libavcodec needs about 160 MiB of shared libraries (x265, codec2, rsvg,
# aom, SVT-AV1, ...), over the 64 MiB a device call carries, so the CUDA build there is configured with
# -DDITGEN_FFMPEG=OFF (videos as PNG frames + WAV).
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh
rm -rf .gpu
mkdir -p .gpu/include/stb .gpu/include/catch2 .gpu/lib .gpu/fixtures/models .gpu/fixtures/pipelines .gpu/fixtures/cache
cp -r /usr/include/CLI /usr/include/nlohmann /usr/include/fmt /usr/include/spdlog .gpu/include/
cp /usr/include/stb/stb_image_write.h /usr/include/stb/stb_image.h /usr/include/stb/stb_image_resize.h .gpu/include/stb/
# OpenSSL 3 headers (libcrypto's ABI is the one of Ubuntu 24.04's libcrypto.so.3, which gpu_check.sh links).
cp -r /usr/include/openssl .gpu/include/ && cp /usr/include/x86_64-linux-gnu/openssl/*.h .gpu/include/openssl/
cp /usr/include/utf8proc.h /usr/include/oniguruma.h /usr/include/zlib.h /usr/include/zconf.h .gpu/include/
cp /usr/include/catch2/catch.hpp .gpu/include/catch2/
cp -L /usr/lib/x86_64-linux-gnu/libutf8proc.so .gpu/lib/libutf8proc.so
cp -L /usr/lib/x86_64-linux-gnu/libutf8proc.so .gpu/lib/libutf8proc.so.2
cp -L /usr/lib/x86_64-linux-gnu/libonig.so.5 .gpu/lib/libonig.so.5
ln -s libonig.so.5 .gpu/lib/libonig.so  # gpu_check.sh names libonig.so.5 itself, should a carry drop links
fixtures=${DITGEN_FIXTURES:-../shared/fixtures}
for c in models/flux2_transformer_b1_h6w8_t20 models/flux2_vae_b1_6x8 models/text_encoder_mistral \
         pipelines/flux2_pipeline_64x96_s4 models/qwenimage_transformer_b1_h6w8_t12 models/qwenimage_vae_b1_6x8 \
         models/text_encoder_qwen25vl pipelines/qwenimage_pipeline_64x96_s4_cfg4.0 \
         models/ltx2_transformer_split_b1_f2h4w6_a9 models/ltx2_connectors_b2_L8 models/ltx2_video_vae_b1_f3_4x6 \
         models/ltx2_audio_vae_vocoder models/text_encoder_gemma3 pipelines/ltx2_pipeline_64x96x9_s3_cfg4.0 \
         cache/model cache/F2B1_W4_MCinf_rdt0.75; do
  cp -r "$fixtures/$c" ".gpu/fixtures/$c"
done
# The cuDNN frontend's headers (header-only, MIT; FP8 attention, --attention fp8) at a recorded tag, from a
# clone of github.com/NVIDIA/cudnn-frontend (CUDNN_FRONTEND_GIT, default: this workplace's mirror). Without
# them the CUDA build has no FP8 attention.
fe_git=${CUDNN_FRONTEND_GIT:-/work/.mirror/NVIDIA+cudnn-frontend/repo}
fe_tag=v1.18.0
if git --git-dir="$fe_git" rev-parse -q --verify "$fe_tag^{commit}" > /dev/null 2>&1; then
  mkdir -p .gpu/cudnn_frontend
  git --git-dir="$fe_git" archive "$fe_tag" include LICENSE.txt | tar -x -C .gpu/cudnn_frontend
  rm -rf .gpu/cudnn_frontend/include/cudnn_frontend/thirdparty  # nlohmann-json: CUDNN_FRONTEND_SKIP_JSON_LIB
  echo "$fe_tag" > .gpu/cudnn_frontend/VERSION
else
  echo "gpu_bundle: no cudnn-frontend clone at $fe_git (CUDNN_FRONTEND_GIT): the GPU build gets no FP8 attention"
fi
# CUTLASS's headers (header-only, BSD-3-Clause; the probe bench/probes/cutlass_gemm.cu, not the build) at a
# recorded tag, from a clone of github.com/NVIDIA/cutlass (CUTLASS_GIT, default: this workplace's mirror), as an
# xz tarball (1 MB against 27 MB of headers: the carry limit); scripts/gpu_check.sh unpacks it.
cutlass_git=${CUTLASS_GIT:-/work/.mirror/NVIDIA+cutlass/repo}
cutlass_tag=v4.7.0
if git --git-dir="$cutlass_git" rev-parse -q --verify "$cutlass_tag^{commit}" > /dev/null 2>&1; then
  ct=$(mktemp -d)  # (the tree, not pathspecs: the mirror lacks some large blobs elsewhere in the repository)
  git --git-dir="$cutlass_git" archive --prefix=cutlass/include/ "$cutlass_tag:include" | tar -x -C "$ct"
  git --git-dir="$cutlass_git" show "$cutlass_tag:LICENSE.txt" > "$ct/cutlass/LICENSE.txt"
  tar -C "$ct" -cJf .gpu/cutlass.tar.xz cutlass && rm -rf "$ct"
  echo "$cutlass_tag" > .gpu/CUTLASS_VERSION
else
  echo "gpu_bundle: no CUTLASS clone at $cutlass_git (CUTLASS_GIT): no cutlass_gemm probe row"
fi
du -sh .gpu
