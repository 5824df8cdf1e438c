#include "models/verify_cases.h"

#include <spdlog/spdlog.h>

#include <functional>
#include <map>

#include "lib/io/json.h"
#include "lib/nn/linear.h"
#include "lib/runtime/error.h"
#include "lib/text/verify_tokenizer.h"
#include "lib/verify/compare.h"
#include "models/flux2/verify.h"
#include "models/llm/verify.h"
#include "models/ltx2/verify.h"
#include "models/qwen_image/verify.h"

namespace ditgen {

namespace {

using Runner = std::function<void(const verify::Case&, const verify::CaseOptions&, verify::Report&)>;

// Folder-name prefix -> runner. Longest prefix wins.
const std::map<std::string, Runner>& runners() {
  static const std::map<std::string, Runner> r = {
      {"flux2_transformer", flux2::verify_transformer},
      {"flux2_transformer_lora", flux2::verify_transformer_lora},
      {"flux2_vae", flux2::verify_vae},
      {"flux2_pipeline", flux2::verify_pipeline},
      {"flux2_edit_pipeline", flux2::verify_pipeline},
      {"text_encoder_mistral", llm::verify_text_encoder},
      {"text_encoder_qwen25vl", llm::verify_text_encoder},
      {"qwenimage_transformer", qwen_image::verify_transformer},
      {"qwenimage_transformer_lora", qwen_image::verify_transformer_lora},
      {"qwenimage_vae", qwen_image::verify_vae},
      {"qwenimage_vae_encode", qwen_image::verify_vae_encode},
      {"qwenimage_pipeline", qwen_image::verify_pipeline},
      {"qwenimage_img2img_pipeline", qwen_image::verify_pipeline},
      {"ltx2_transformer", ltx2::verify_transformer},
      {"ltx2_transformer_lora", ltx2::verify_transformer_lora},
      {"ltx2_connectors", ltx2::verify_connectors},
      {"ltx2_video_vae", ltx2::verify_vae},
      {"ltx2_video_vae_encode", ltx2::verify_vae_encode},
      {"ltx2_audio_vae_vocoder", ltx2::verify_audio_vae_vocoder},
      {"ltx2_pipeline", ltx2::verify_pipeline},
      {"ltx2_i2v_pipeline", ltx2::verify_pipeline},
      {"text_encoder_gemma3", llm::verify_text_encoder},
      {"tokenizer", text::verify_tokenizer},
      {"cache", flux2::verify_cache},  // also picked by a case.json with a "cache" section
  };
  return r;
}

}  // namespace

std::vector<std::string> verify_kinds() {
  std::vector<std::string> out;
  for (const auto& kv : runners()) out.push_back(kv.first);
  return out;
}

int run_verify(const VerifyRequest& req) {
  if (!io::dir_exists(req.dir)) {
    DITGEN_CHECK(req.skip_missing, "verify: case folder '{}' does not exist", req.dir);
    spdlog::info("SKIP {}: fixture folder not found", req.dir);
    return 77;
  }
  verify::Case c(req.dir);
  std::string kind = req.kind;
  if (kind.empty()) {
    for (const auto& kv : runners())
      if (c.name().rfind(kv.first, 0) == 0 && kv.first.size() > kind.size()) kind = kv.first;
    // DBCache cases are named by their settings (F1B0_W8_MC3_rdt0.8): their case.json says what they are.
    if (kind.empty() && c.case_json().contains("cache") && c.case_json()["cache"].is_object()) kind = "cache";
  }
  auto it = runners().find(kind);
  if (it == runners().end()) {
    std::string known;
    for (const auto& k : verify_kinds()) known += (known.empty() ? "" : ", ") + k;
    fail("cannot tell the kind of case '{}' from its name; pass --kind (one of: {})", c.name(), known);
  }
  DITGEN_CHECK(!req.options.fp8 || kind.find("_transformer") != std::string::npos,
               "verify --fp8 applies to transformer cases; '{}' is a {} case", c.name(), kind);
  DITGEN_CHECK(!req.options.offload || kind.find("_transformer") != std::string::npos ||
                   kind.rfind("text_encoder", 0) == 0 || kind == "cache",
               "verify --offload applies to transformer, text-encoder and cache cases; '{}' is a {} case", c.name(),
               kind);
  if (req.options.fp8) {
    const std::string why = nn::fp8_unavailable_reason(req.options.device);
    DITGEN_CHECK(why.empty(), "{}", why);
  }
  verify::Report report;
  report.case_name = c.name();
  it->second(c, req.options, report);
  report.print();
  return report.ok() ? 0 : 1;
}

}  // namespace ditgen
