// --profile: kernel classes by name, CPU operators' self time, the summary table.
#include <catch2/catch.hpp>

#include "lib/runtime/profile.h"

using namespace ditgen::runtime;

TEST_CASE("profile: kernels are classed by their names", "[profile]") {
  CHECK(kernel_class("sm90_xmma_gemm_bf16bf16_bf16f32_f32_tn_n_tilesize128x128x64") == "GEMM");
  CHECK(kernel_class("nvjet_tst_128x256_64x4_2x1_v_bz_coopA_TNN") == "GEMM");
  CHECK(kernel_class("aten::addmm") == "GEMM");
  CHECK(kernel_class("ditgen::nn::(anonymous namespace)::gated_residual_kernel(ditgen::nn::Bf16x8 const*)") == "elementwise");
  CHECK(kernel_class("ditgen::nn::(anonymous namespace)::swiglu_concat_kernel(__nv_bfloat16 const*)") == "elementwise");
  CHECK(kernel_class("ditgen::nn::(anonymous namespace)::quantize_rows_kernel<true>(__nv_bfloat16 const*)") == "copy / cast");
  CHECK(kernel_class("cudnn_generated_fort_native_sdpa_sm90_flash_fprop_wgmma_f16_knob_3") == "attention");
  CHECK(kernel_class("void pytorch_flash::flash_fwd_kernel<Flash_fwd_kernel_traits<128, 128>>") == "attention");
  CHECK(kernel_class("aten::_softmax") == "attention");
  CHECK(kernel_class("void at::native::(anonymous namespace)::vectorized_layer_norm_kernel<float>") == "norm");
  CHECK(kernel_class("ncclDevKernel_AllGather_RING_LL(ncclDevKernelArgsStorage<4096ul>)") == "communication");
  CHECK(kernel_class("Memcpy DtoD (Device -> Device)") == "copy / cast");
  CHECK(kernel_class("aten::copy_") == "copy / cast");
  CHECK(kernel_class("void at::native::vectorized_elementwise_kernel<4, at::native::CUDAFunctor_add<c10::BFloat16>>") ==
        "elementwise");
  CHECK(kernel_class("aten::silu") == "elementwise");
  CHECK(kernel_class("aten::empty") == "other");
}

TEST_CASE("profile: the summary sums per class and ranks kernels by total time", "[profile]") {
  std::vector<ProfiledKernel> k = {{"gemm_a", 0, 5, 0, true},   {"gemm_a", 10, 5, 0, true},
                                   {"flash_fwd", 20, 6, 0, true}, {"ncclDevKernel_AllReduce", 30, 4, 0, true},
                                   {"aten::mm", 0, 100, 1, false}};  // a CPU operator: not in a device summary
  const ProfileSummary s = summarize(k, /*device=*/true, /*top=*/2);
  CHECK(s.total_us == Approx(20));
  REQUIRE(s.classes.size() == 7);
  CHECK(s.classes[0].name == "GEMM");
  CHECK(s.classes[0].total_us == Approx(10));
  CHECK(s.classes[0].count == 2);
  CHECK(s.classes[1].total_us == Approx(6));  // attention
  CHECK(s.classes[5].total_us == Approx(4));  // communication
  REQUIRE(s.kernels.size() == 2);
  CHECK(s.kernels[0].name == "gemm_a");
  CHECK(s.kernels[0].count == 2);
  CHECK(s.kernels[1].name == "flash_fwd");
  const std::string md = summary_markdown(s, "step");
  CHECK(md.find("| GEMM | 0.010 | 50.0 % | 2 |") != std::string::npos);
}

TEST_CASE("profile: off without a folder", "[profile]") {
  StepProfiler off("", 0, false);
  CHECK_FALSE(off.on());
  off.start();
  CHECK(off.stop("x").empty());
}
