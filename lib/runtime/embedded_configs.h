#pragma once
// configs/*.json compiled into the binary (see CMakeLists.txt), keyed by file name without ".json".
#include <map>
#include <string>

namespace ditgen {
const std::map<std::string, std::string>& embedded_configs();
}
