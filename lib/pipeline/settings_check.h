#pragma once
// One validation (DESIGN §11) for every source of settings: the command line's flags, --prompt-file
// items, presets files (ditgen_presets.json, configs/<model>.json "defaults") and the resolved settings
// of a run. A setting has one rule (integer or number, range, finiteness) and every source is checked
// against it with one wording; only the name of the source differs:
//
//   --steps: must be an integer from 1 to 10000, got '2.5'                    (flag; CLI11 adds the name)
//   --prompt-file p.jsonl line 3: "steps" must be an integer from 1 to 10000, got 2.5
//   'm/ditgen_presets.json' defaults: "steps" must be an integer from 1 to 10000, got 2.5
#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "lib/pipeline/memory_limit.h"
#include "lib/pipeline/model.h"

namespace ditgen::pipeline {

enum class SettingKind {
  Integer,   // a signed integer in [lo, hi]
  Unsigned,  // an unsigned 64-bit integer (seeds)
  Number,    // a finite number in [lo, hi] (or (lo, hi] with lo_open)
  Text,      // a string (prompts)
  IntegerList,  // a non-empty list of integers in [lo, hi] (text-encoder layers)
};

struct SettingRule {
  const char* key;   // the JSON key ("steps")
  const char* flag;  // the command line's flag ("--steps")
  SettingKind kind;
  double lo = 0, hi = 0;
  bool lo_open = false;  // numbers: lo itself is refused
};

// The rules of the settings a generation takes (flags, prompt-file items, presets share them).
const std::vector<SettingRule>& setting_rules();
// The rule of JSON key `key`; throws for a key without one (a programming error).
const SettingRule& setting_rule(const std::string& key);

// "must be an integer from 1 to 10000, got 2.5", or "" when `v` obeys `r` (JSON values).
std::string setting_fault(const SettingRule& r, const nlohmann::json& v);
// The same for a command-line value ("2.5", "nan", "1e400"), quoted as given: got '2.5'.
std::string setting_fault(const SettingRule& r, const std::string& text);

// The plain checks behind the rules, for flags that belong to no generation setting (--comm-timeout,
// --tolerance, cache flags): "" when `text` is fine, else the fault.
std::string integer_fault(const std::string& text, int64_t lo, int64_t hi);
std::string unsigned_fault(const std::string& text);
std::string number_fault(const std::string& text, double lo, bool lo_open, double hi);

// The value of `key` in object `j` after its rule's check; `source` names where `j` came from
// ("--prompt-file p.jsonl line 3"). Throws ditgen::Error "{source}: "{key}" must be ..., got ...".
int64_t checked_integer(const nlohmann::json& j, const std::string& key, const std::string& source);
uint64_t checked_unsigned(const nlohmann::json& j, const std::string& key, const std::string& source);
double checked_number(const nlohmann::json& j, const std::string& key, const std::string& source);
std::string checked_text(const nlohmann::json& j, const std::string& key, const std::string& source);

// A presets "defaults" object (ditgen_presets.json, configs/<model>.json): an object whose every key has a
// rule and whose every value obeys it. Throws naming `source` and the key.
void check_preset_defaults(const nlohmann::json& defaults, const std::string& source);

// A run's resolved settings (flags, item and presets merged): every field within its rule. `source`
// names the generation ("--prompt-file p.jsonl line 3", or "the command line and presets").
void check_settings(const Settings& s, const std::string& source);

// Whether an exception's text is an allocation failure: LibTorch's CPU allocator ("DefaultCPUAllocator:
// can't allocate memory"), CUDA's ("CUDA out of memory"), or any other "out of memory".
bool is_out_of_memory(const std::string& what);
// "out of memory while {stage} on {device} ({first line of what}): reduce ..." for a failed allocation; with
// `cap` (the rank's --gpu-memory-limit, when it is what ran out) it says so and suggests raising it first.
std::string out_of_memory_message(const std::string& stage, const std::string& device,
                                  const std::string& what, const GpuMemoryLimit& cap = {});

}  // namespace ditgen::pipeline
