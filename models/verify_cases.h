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
  bool skip_missing = false;  // a missing folder is a skip (exit 77, for test suites), not an error
  verify::CaseOptions options;
};

// Exit code: 0 all checks passed, 1 a check failed, 77 the folder does not exist and skip_missing
// is set (skipped); a missing folder is an error otherwise.
int run_verify(const VerifyRequest& request);

// Kinds `run_verify` knows, with the folder-name prefix that selects each.
std::vector<std::string> verify_kinds();

}  // namespace ditgen
