#pragma once
// The model commands ditgen knows: one registry line per model (models/registry.cpp).
#include <string>
#include <vector>

#include "lib/pipeline/runner.h"

namespace ditgen {

const std::vector<pipeline::ModelEntry>& registered_models();

}  // namespace ditgen
