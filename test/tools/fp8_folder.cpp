// Writes an FP8 checkpoint folder from a diffusers folder, as the published FP8 files store weights,
// and its exact float32 twin, for the tests of lib/nn/fp8_source.h:
//
//   ditgen_fp8_folder SRC FP8_DIR F32_DIR [--per-channel] [--legacy]
//
// FP8_DIR: SRC with every 2-D `.weight` of transformer/ as F8_E4M3 plus its scale, quantised as torch
// does (scale = amax / 448 per tensor, or per output channel with --per-channel; (w / scale) clamped to
// +-448, rounded to nearest even e4m3), named `<m>.weight_scale` with an unused `<m>.input_scale`, or with
// --legacy as ComfyUI's scaled_fp8 files name them (`<m>.scale_weight`, `<m>.scale_input`, a `scaled_fp8`
// marker). F32_DIR: SRC with those weights replaced by fp8.float() * scale in float32. A model loaded
// from FP8_DIR must equal the one loaded from F32_DIR bit for bit.
#include <CLI/CLI.hpp>

#include <filesystem>
#include <iostream>

#include "lib/io/checkpoint.h"
#include "test/unit/checkpoint_util.h"

namespace fs = std::filesystem;
using namespace ditgen;

int main(int argc, char** argv) {
  CLI::App app{"FP8 checkpoint folder and its float32 twin"};
  std::string src, fp8_dir, f32_dir;
  bool per_channel = false, legacy = false;
  app.add_option("src", src)->required();
  app.add_option("fp8_dir", fp8_dir)->required();
  app.add_option("f32_dir", f32_dir)->required();
  app.add_flag("--per-channel", per_channel);
  app.add_flag("--legacy", legacy);
  CLI11_PARSE(app, argc, argv);
  try {
    auto store = io::TensorStore::open_dir(src + "/transformer");
    std::map<std::string, test::Stored> q, f;
    int64_t n = 0;
    for (const auto& key : store->keys()) {
      const at::Tensor t = store->read(key, io::Slice::whole(), io::dtype_to_scalar(store->info(key).dtype), at::kCPU);
      const bool weight = key.size() > 7 && key.compare(key.size() - 7, 7, ".weight") == 0;
      if (!weight || t.dim() != 2 || !at::isFloatingType(t.scalar_type())) {
        q[key] = f[key] = test::stored(t);
        continue;
      }
      auto [bits, scale] = test::quantize_e4m3(t, per_channel);
      const std::string m = key.substr(0, key.size() - 6);
      q[key] = test::f8(bits);
      q[m + (legacy ? "scale_weight" : "weight_scale")] = test::stored(per_channel ? scale.view({-1, 1}) : scale);
      q[m + (legacy ? "scale_input" : "input_scale")] = test::stored(at::full({}, 1.0f));
      f[key] = test::stored(test::dequantize_e4m3(bits, scale));
      ++n;
    }
    if (legacy) q["scaled_fp8"] = test::f8(at::zeros({2}, at::kByte));
    for (const auto& [dir, tensors] : {std::make_pair(fp8_dir, &q), std::make_pair(f32_dir, &f)}) {
      fs::remove_all(dir);
      fs::copy(src, dir, fs::copy_options::recursive);
      for (const auto& e : fs::directory_iterator(dir + "/transformer")) {
        const std::string name = e.path().filename().string();
        if (name.find(".safetensors") != std::string::npos) fs::remove(e.path());
      }
      test::write_file(dir + "/transformer/diffusion_pytorch_model.safetensors", *tensors);
    }
    std::cout << "fp8_folder: " << n << " weights in e4m3 with " << (per_channel ? "per-channel" : "per-tensor")
              << (legacy ? " scale_weight" : " weight_scale") << " scales\n";
  } catch (const std::exception& e) {
    std::cerr << "fp8_folder: " << e.what() << "\n";
    return 1;
  }
  return 0;
}
