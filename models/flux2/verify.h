#pragma once
#include "lib/verify/case.h"
#include "lib/verify/compare.h"

namespace ditgen::flux2 {
void verify_transformer(const verify::Case& c, const verify::CaseOptions& opt, verify::Report& report);
// The transformer case plus lora.safetensors: without, with the LoRA at each adapter weight, at 0, meshes.
void verify_transformer_lora(const verify::Case& c, const verify::CaseOptions& opt, verify::Report& report);
void verify_vae(const verify::Case& c, const verify::CaseOptions& opt, verify::Report& report);
void verify_pipeline(const verify::Case& c, const verify::CaseOptions& opt, verify::Report& report);
// A DBCache case (fixtures cache/<case>): cached steps per block list, differences, final latents, and
// under a mesh the same decisions on every rank.
void verify_cache(const verify::Case& c, const verify::CaseOptions& opt, verify::Report& report);
}  // namespace ditgen::flux2
