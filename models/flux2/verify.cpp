#include "models/flux2/verify.h"

#include "lib/io/checkpoint.h"
#include "lib/nn/weights.h"
#include "models/flux2/transformer.h"

namespace ditgen::flux2 {

namespace {
std::shared_ptr<parallel::Context> context_of(const verify::CaseOptions& opt) {
  return opt.parallel ? opt.parallel : parallel::Context::single();
}
}  // namespace

void verify_transformer(const verify::Case& c, const verify::CaseOptions& opt, verify::Report& report) {
  auto cfg = TransformerConfig::from_json(c.config(), c.file("config.json"));
  auto source = std::make_shared<nn::CheckpointSource>(io::TensorStore::open_files({c.file("weights.safetensors")}));
  Transformer model(cfg, nn::Weights(source, opt.dtype, opt.device), context_of(opt));
  source->check_all_used();

  TransformerInput in;
  in.hidden_states = c.tensor("in.hidden_states");
  in.encoder_hidden_states = c.tensor("in.encoder_hidden_states");
  in.timestep = c.tensor("in.timestep");
  in.guidance = c.has("in.guidance") ? c.tensor("in.guidance") : at::Tensor();
  in.img_ids = c.tensor("in.img_ids");
  in.txt_ids = c.tensor("in.txt_ids");
  const at::Tensor out = model.forward(in);
  verify::compare(report, "out.sample", out, c.tensor("out.sample"), opt.tolerance > 0 ? opt.tolerance : 1e-4);
}

void verify_pipeline(const verify::Case&, const verify::CaseOptions&, verify::Report& report) {
  verify::expect_equal(report, "pipeline", false, "not implemented yet");
}

}  // namespace ditgen::flux2
