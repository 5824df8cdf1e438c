#pragma once
// The LoRA golden cases (fixtures models/*_transformer_lora_*): a transformer case plus `lora.safetensors`
// (diffusers layout), with `out.<name>` without the LoRA and `out.<name>_lora<w>` at adapter weight w
// (case.json scalars.adapter_weights), i.e. W + w * B @ A on every listed layer.
#include <ATen/ATen.h>

#include <functional>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "lib/nn/lora.h"
#include "lib/nn/weights.h"
#include "lib/parallel/context.h"
#include "lib/verify/case.h"
#include "lib/verify/compare.h"

namespace ditgen {

// One transformer run of a case: its outputs by name ("sample", "audio_sample"), from `source` under `ctx`.
using LoraCaseRun = std::function<std::vector<std::pair<std::string, at::Tensor>>(
    std::shared_ptr<nn::WeightSource> source, std::shared_ptr<parallel::Context> ctx)>;

// Checks, against the references: the model without the LoRA, then with it at each adapter weight
// (through --lora's own path: LoraSet + LoraSource over the case's weights); exactly: weight 0 equals
// no LoRA bit for bit; under a mesh (opt.parallel with more than one rank): the mesh run at weight 1
// equals the single-process run of our code (relative error <= 1e-5).
void verify_lora_case(const verify::Case& c, const verify::CaseOptions& opt, nn::LoraModel model,
                      const LoraCaseRun& run, verify::Report& report);

}  // namespace ditgen
