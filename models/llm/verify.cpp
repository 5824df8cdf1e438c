#include "models/llm/verify.h"

#include "lib/io/checkpoint.h"
#include "lib/nn/weights.h"
#include "lib/parallel/context.h"
#include "lib/runtime/error.h"
#include "models/llm/decoder.h"

namespace ditgen::llm {

namespace {

// text_encoder_<family>[_anything] -> family.
DecoderFamily family_of_case(const std::string& name) {
  const std::string prefix = "text_encoder_";
  DITGEN_CHECK(name.rfind(prefix, 0) == 0, "case '{}': expected a name starting with '{}'", name, prefix);
  std::string rest = name.substr(prefix.size());
  for (const char* f : {"mistral", "qwen25vl", "gemma3"})
    if (rest.rfind(f, 0) == 0) return *family_from_name(f);
  fail("case '{}': unknown text-encoder family (expected text_encoder_mistral, _qwen25vl or _gemma3)", name);
}

}  // namespace

void verify_text_encoder(const verify::Case& c, const verify::CaseOptions& opt, verify::Report& report) {
  const DecoderConfig cfg =
      DecoderConfig::from_json(c.config(), c.file("config.json"), family_of_case(c.name()));
  auto store = io::TensorStore::open_files({c.file("weights.safetensors")});
  auto source = open_decoder_source(store, cfg, cfg.num_hidden_layers);
  // Under mpirun with --parallel-text: TE-P over every rank, each reading only its slices; every rank then
  // holds the whole hidden states and compares them.
  const auto streamer = opt.streamer();  // --offload
  const auto lm = load_decoder(cfg, nn::Weights(source, opt.dtype, opt.device), cfg.num_hidden_layers, opt.parallel,
                               opt.parallel_text, streamer);
  source->check_all_used();  // anything besides the ignored vision tower / lm_head is a config mismatch

  std::vector<int> wanted;
  for (int k = 0; k <= cfg.num_hidden_layers; ++k)
    if (c.has("out.hidden_states." + std::to_string(k))) wanted.push_back(k);
  if (wanted.empty()) {
    verify::expect_equal(report, "out.hidden_states", false, "no out.hidden_states.N in io.safetensors");
    return;
  }

  const auto ours = lm->forward(c.tensor("in.input_ids"), c.tensor("in.attention_mask"), wanted);
  verify::expect_streamed(report, "offload", streamer ? &streamer->stats() : nullptr);
  const double tol = opt.tolerance > 0 ? opt.tolerance : 1e-4;
  for (size_t i = 0; i < wanted.size(); ++i) {
    const std::string name = "out.hidden_states." + std::to_string(wanted[i]);
    verify::compare(report, name, ours[i].to(at::kCPU), c.tensor(name), tol);
  }
  if (!opt.parallel_text || !opt.parallel || opt.parallel->text_tp().size() == 1) return;
  // TE-P must give the one-rank encoder's states, not merely stay within the reference's tolerance: the
  // whole encoder on this rank too, compared at 1e-5 (fp32; the sums differ only in their order).
  auto whole_source = open_decoder_source(store, cfg, cfg.num_hidden_layers);
  const DecoderLM whole(cfg, nn::Weights(whole_source, opt.dtype, opt.device), cfg.num_hidden_layers);
  const auto single = whole.forward(c.tensor("in.input_ids"), c.tensor("in.attention_mask"), wanted);
  const double tep_tol = opt.dtype == at::kFloat ? 1e-5 : tol;
  for (size_t i = 0; i < wanted.size(); ++i)
    verify::compare(report,
                    fmt::format("out.hidden_states.{} TE-P x{} vs one rank", wanted[i], opt.parallel->text_tp().size()),
                    ours[i].to(at::kCPU), single[i].to(at::kCPU), tep_tol);
}

}  // namespace ditgen::llm
