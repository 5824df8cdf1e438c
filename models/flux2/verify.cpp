#include "models/flux2/verify.h"

namespace ditgen::flux2 {
void verify_transformer(const verify::Case&, const verify::CaseOptions&, verify::Report& report) {
  verify::expect_equal(report, "transformer", false, "not implemented yet");
}
void verify_pipeline(const verify::Case&, const verify::CaseOptions&, verify::Report& report) {
  verify::expect_equal(report, "pipeline", false, "not implemented yet");
}
}  // namespace ditgen::flux2
