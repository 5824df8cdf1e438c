#pragma once
// FP8 attention (`--attention fp8`): cuDNN's FP8 flash attention on Hopper, through the cuDNN frontend's
// graph API. Only in CUDA builds configured with the frontend's headers (DITGEN_FP8_ATTENTION).
#include <ATen/ATen.h>

#include <optional>
#include <string>

#include "lib/nn/ops.h"

namespace ditgen::nn {

// q [B, Sq, H, D], k/v [B, Sk, H, D] bf16 on a GPU of compute capability 9.x, D a multiple of 16 up to 128.
// q, k and v are quantised to e4m3 with one scale each (max |x| / 448), both products run in FP8 with fp32
// accumulation (softmax weights in e4m3 too), and the e4m3 output returns as bf16 [B, Sq, H, D].
// `want_lse`: also the fp32 log-sum-exp [B, Sq, H] for Ring attention. Nothing, with the reason in *why,
// where it does not apply (the caller then runs the bf16 kernels).
std::optional<AttentionLse> fp8_attention_cuda(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                                               bool want_lse, std::string* why);

}  // namespace ditgen::nn
