#pragma once
#include "lib/verify/case.h"
#include "lib/verify/compare.h"

namespace ditgen::text {
// tokenizers/<name>: tokenizer.json(.gz) + golden.json (ids, ids_with_special, decoded per string).
void verify_tokenizer(const verify::Case& c, const verify::CaseOptions& opt, verify::Report& report);
}
