#pragma once
#include "lib/verify/case.h"
#include "lib/verify/compare.h"

namespace ditgen::flux2 {
void verify_transformer(const verify::Case& c, const verify::CaseOptions& opt, verify::Report& report);
void verify_vae(const verify::Case& c, const verify::CaseOptions& opt, verify::Report& report);
void verify_pipeline(const verify::Case& c, const verify::CaseOptions& opt, verify::Report& report);
}  // namespace ditgen::flux2
