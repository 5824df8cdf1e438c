#pragma once
// Launcher of the row-wise FP8 activation quantiser (CUDA build only; no ATen in the .cu file).
#include <cstdint>

namespace ditgen::nn {

// x: contiguous bf16 [rows, K], K a multiple of 8 and x 16-byte aligned. Writes q (e4m3 [rows, K]) and
// scale (float32 [rows]) with x[r, k] ~= q[r, k] * scale[r]: scale = amax(|x[r, :]|) / 448 (a zero row
// gets scale 1), q = x * (1 / scale) rounded to nearest, saturated. One read of x (rows up to 32768 values
// wait in registers; longer ones are read twice, the second time from L2) and one write of q.
// `gelu_tanh`: quantise gelu_tanh(x) instead (rounded to bf16 first, as at::gelu rounds it), the GELU of an
// MLP's hidden state folded into the next GEMM's input pass. Returns false if the launch failed (or x, q
// are not 16-byte aligned, or K % 8 != 0).
bool quantize_rows_fp8_bf16(const void* x, void* q, float* scale, int64_t rows, int64_t K, void* stream,
                            bool gelu_tanh = false);

}  // namespace ditgen::nn

namespace ditgen::nn {

// The FP8 input of a row-parallel projection after a SwiGLU MLP, in one pass: row r of q is
// [a[r, :Da] | silu(gate[r, :F]) * up[r, :F]] (the SwiGLU rounded to bf16 as the unfused bf16 ops round
// it), quantised like quantize_rows_fp8_bf16. `a` may be null (Da = 0). gate_up row r starts at
// gate_up + r * gu_stride (elements) with the gate first, then the up half; a row r at a + r * a_stride.
// Da and F multiples of 8, every row 16-byte aligned. The row waits in shared memory between its maximum
// and the conversion: (Da + F) * 2 bytes up to 96 KB, else F * 2 bytes (`a` then read twice), which must
// fit in shared memory. Returns false if the launch failed.
bool swiglu_concat_quantize_fp8_bf16(const void* a, int64_t a_stride, int64_t Da, const void* gate_up,
                                     int64_t gu_stride, int64_t F, void* q, float* scale, int64_t rows, void* stream);

}  // namespace ditgen::nn
