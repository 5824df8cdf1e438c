#include "models/llm/verify.h"

namespace ditgen::llm {
void verify_text_encoder(const verify::Case&, const verify::CaseOptions&, verify::Report& report) {
  verify::expect_equal(report, "text_encoder", false, "not implemented yet");
}
}  // namespace ditgen::llm
