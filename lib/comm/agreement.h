#pragma once
// Before any work, the ranks make sure they were all asked the same thing: each rank's request (the
// command, every flag as parsed, the tool version) is gathered on every rank and compared with rank
// 0's. Ranks started with different settings (an MPMD line, a wrapper that varies a flag per rank)
// would otherwise compute different things and silently write a mixed image.
#include <string>
#include <utility>
#include <vector>

#include "lib/comm/launch.h"

namespace ditgen::comm {

// (name, value) pairs in a fixed order, e.g. ("command", "flux2"), ("--seed", "0").
using RequestFields = std::vector<std::pair<std::string, std::string>>;

// Collective over all launched ranks (a no-op for one process). Throws ditgen::Error on every rank,
// naming each field that differs and the value each rank holds, when the requests are not identical.
void check_same_request(const LaunchInfo& info, const RequestFields& fields, double timeout_s);

// The message for differing requests (`requests[r]` is rank r's), or "" when all equal rank 0's.
std::string describe_request_differences(const std::vector<RequestFields>& requests);

}  // namespace ditgen::comm
