#pragma once
#include "lib/verify/case.h"
#include "lib/verify/compare.h"

namespace ditgen::llm {
// models/text_encoder_<family>: every hidden state of the decoder for input_ids + attention_mask.
void verify_text_encoder(const verify::Case& c, const verify::CaseOptions& opt, verify::Report& report);
}
