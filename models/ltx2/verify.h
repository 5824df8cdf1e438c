#pragma once
// Golden checks of the LTX-2 components (fixtures models/ltx2_*, pipelines/ltx2_*).
#include "lib/verify/case.h"
#include "lib/verify/compare.h"

namespace ditgen::ltx2 {
void verify_transformer(const verify::Case& c, const verify::CaseOptions& opt, verify::Report& report);
// The transformer case plus lora.safetensors: without, with the LoRA at each adapter weight, at 0, meshes.
void verify_transformer_lora(const verify::Case& c, const verify::CaseOptions& opt, verify::Report& report);
void verify_connectors(const verify::Case& c, const verify::CaseOptions& opt, verify::Report& report);
void verify_vae(const verify::Case& c, const verify::CaseOptions& opt, verify::Report& report);
void verify_vae_encode(const verify::Case& c, const verify::CaseOptions& opt, verify::Report& report);
void verify_audio_vae_vocoder(const verify::Case& c, const verify::CaseOptions& opt, verify::Report& report);
void verify_pipeline(const verify::Case& c, const verify::CaseOptions& opt, verify::Report& report);
}  // namespace ditgen::ltx2
