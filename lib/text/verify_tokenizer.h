#pragma once
#include <string>

#include "lib/verify/case.h"
#include "lib/verify/compare.h"

namespace ditgen::text {
// tokenizers/<name>: tokenizer.json(.gz) + golden.json ({"cases": [{text, ids, ids_with_special,
// decoded}]}). Per case: encode without and with special tokens, and decode(ids) == decoded.
void verify_tokenizer(const verify::Case& c, const verify::CaseOptions& opt, verify::Report& report);
// The same for a folder path (tokenizer folders hold no io.safetensors).
void verify_tokenizer_folder(const std::string& dir, verify::Report& report);
}  // namespace ditgen::text
