#include "models/verify_lora.h"

#include "lib/io/checkpoint.h"
#include "lib/io/json.h"
#include "lib/runtime/error.h"

namespace ditgen {

namespace {

// Python's str() of an adapter weight, as the fixture names its outputs: 1.0 -> "1.0", 0.5 -> "0.5".
std::string py_float(double w) {
  std::string s = fmt::format("{}", w);
  if (s.find_first_of(".e") == std::string::npos) s += ".0";
  return s;
}

}  // namespace

void verify_lora_case(const verify::Case& c, const verify::CaseOptions& opt, nn::LoraModel model,
                      const LoraCaseRun& run, verify::Report& report) {
  const auto& sc = c.case_json().value("scalars", nlohmann::json::object());
  DITGEN_CHECK(sc.contains("adapter_weights") && sc["adapter_weights"].is_array() && !sc["adapter_weights"].empty(),
               "case '{}': case.json needs scalars.adapter_weights", c.dir());
  const std::string lora_file = c.file("lora.safetensors");
  DITGEN_CHECK(io::file_exists(lora_file), "case '{}' has no lora.safetensors", c.dir());
  auto ctx = opt.parallel ? opt.parallel : parallel::Context::single();
  auto base = [&] {
    return std::make_shared<nn::CheckpointSource>(io::TensorStore::open_files({c.file("weights.safetensors")}));
  };
  // The case's weights with the LoRA at adapter weight w, as `--lora lora.safetensors:w` wraps them.
  auto with_lora = [&](double w) {
    auto set = std::make_shared<const nn::LoraSet>(std::vector<nn::LoraFile>{{lora_file, w}}, model);
    return nn::lora_wrapper(set)("transformer", base());
  };
  // FP8 (e4m3: 3 mantissa bits) in every block linear: a few percent relative error is its resolution.
  const double tol = opt.tolerance > 0 ? opt.tolerance : (opt.fp8 ? 0.08 : 1e-4);

  const auto plain = run(base(), ctx);
  for (const auto& [name, t] : plain) verify::compare(report, "out." + name, t, c.tensor("out." + name), tol);

  std::vector<std::pair<std::string, at::Tensor>> at_one;
  for (const auto& wj : sc["adapter_weights"]) {
    const double w = wj.get<double>();
    const auto outs = run(with_lora(w), ctx);
    for (const auto& [name, t] : outs) {
      const std::string ref = "out." + name + "_lora" + py_float(w);
      verify::compare(report, ref, t, c.tensor(ref), tol);
    }
    if (w == 1.0) at_one = outs;
  }

  // --lora FILE:0 is the model without it, bit for bit (and the LoRA must change something at all).
  const auto zero = run(with_lora(0.0), ctx);
  for (size_t i = 0; i < zero.size(); ++i) {
    verify::expect_equal(report, "out." + zero[i].first + "_lora0 == out." + zero[i].first,
                         at::equal(zero[i].second, plain[i].second));
    if (!at_one.empty())
      verify::expect_equal(report, "out." + zero[i].first + "_lora1.0 != out." + zero[i].first,
                           !at::equal(at_one[i].second, plain[i].second));
  }

  // Under a mesh: every rank's merged slices give the single-process result.
  if (ctx->world().size() > 1) {
    DITGEN_CHECK(!at_one.empty(), "case '{}': adapter_weights needs 1.0 for the mesh check", c.dir());
    const auto single = run(with_lora(1.0), parallel::Context::single());
    for (size_t i = 0; i < single.size(); ++i)
      verify::compare(report, "mesh_vs_single." + single[i].first + "_lora1.0", at_one[i].second, single[i].second,
                      opt.fp8 ? tol : 1e-5);
  }
}

}  // namespace ditgen
