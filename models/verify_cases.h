#pragma once
// `ditgen verify <case-folder>`: runs any golden case folder of a known kind and compares every
// output with its reference. The kind comes from the folder name (e.g. "flux2_transformer_*") or
// from --kind.
#include <string>
#include <vector>

#include "lib/verify/case.h"

namespace ditgen {

struct VerifyRequest {
  std::string dir;
  std::string kind;  // empty: from the folder name
  verify::CaseOptions options;
};

// Exit code: 0 all checks passed, 1 a check failed, 77 the folder does not exist (skipped).
int run_verify(const VerifyRequest& request);

// Kinds `run_verify` knows, with the folder-name prefix that selects each.
std::vector<std::string> verify_kinds();

}  // namespace ditgen
