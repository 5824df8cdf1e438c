#include "lib/text/verify_tokenizer.h"

namespace ditgen::text {
void verify_tokenizer(const verify::Case&, const verify::CaseOptions&, verify::Report& report) {
  verify::expect_equal(report, "tokenizer", false, "not implemented yet");
}
}  // namespace ditgen::text
