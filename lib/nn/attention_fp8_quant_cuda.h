#pragma once
// Launchers of FP8 attention's quantisers (CUDA build only; no ATen in the .cu file): q, k and v to e4m3 with
// one scale per tensor (cuDNN's FP8 attention on Hopper takes per-tensor scales), and its e4m3 output back
// to bf16.
#include <cstdint>

namespace ditgen::nn {

// The scalars FP8 attention reads and writes, one float each at a 16-byte step (cuDNN wants aligned
// tensors): index i lives at scalars[4 * i].
enum Fp8AttentionScalar : int {
  kAmaxQ = 0, kAmaxK, kAmaxV,           // max |x| of each input (written by the quantiser)
  kDescaleQ, kDescaleK, kDescaleV,      // x ~= x8 * descale
  kDescaleS, kScaleS,                   // the softmax's e4m3 copy: p8 = p * 448
  kScaleO, kDescaleO,                   // o8 = o * scale_o, o ~= o8 * descale_o
  kAmaxS, kAmaxO,                       // written by cuDNN
  kFp8AttentionScalars
};

// A bf16 tensor [batch, seq, width] whose rows of `width` values are contiguous, at `row_stride` (between
// tokens) and `batch_stride` (between batch items), in elements.
struct Bf16Rows {
  const void* data;
  int64_t batch, seq, width, batch_stride, row_stride;
};

// q, k, v -> contiguous e4m3 [batch, seq, width] each (q8, k8, v8), each scaled by 448 / max |x| (a zero
// tensor: by 1), and the scalars above (all but kAmaxS / kAmaxO). scale_o leaves o half of e4m3's range:
// |o| <= max |v|, since softmax weights sum to 1, and the rounded weights may sum to a little more.
// Widths multiples of 8, rows 16-byte aligned. Two passes over the inputs (the maxima, then the
// conversion). Returns false if the launch failed or the layout does not suit.
bool quantize_attention_fp8(const Bf16Rows in[3], void* const out[3], float* scalars, void* stream);

// o (bf16, n values, contiguous) = o8 * scalars[4 * kDescaleO]; n a multiple of 8, 16-byte aligned.
bool dequantize_attention_output_fp8(const void* o8, void* o, int64_t n, const float* scalars, void* stream);

}  // namespace ditgen::nn
