#include "models/flux2/verify.h"

namespace ditgen::flux2 {
void verify_vae(const verify::Case&, const verify::CaseOptions&, verify::Report& report) {
  verify::expect_equal(report, "vae", false, "not implemented yet");
}
}  // namespace ditgen::flux2
