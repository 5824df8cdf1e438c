#include "lib/pipeline/settings_check.h"

#include <algorithm>
#include <cctype>
#include <cmath>
#include <limits>

#include "lib/io/json.h"
#include "lib/io/printable.h"
#include "lib/runtime/error.h"

namespace ditgen::pipeline {

namespace {

// The range part of a message: "an integer from 1 to 10000", "a finite number > 0 and at most 1000".
std::string expectation(const SettingRule& r) {
  switch (r.kind) {
    case SettingKind::Integer:
      return fmt::format("an integer from {} to {}", static_cast<int64_t>(r.lo), static_cast<int64_t>(r.hi));
    case SettingKind::Unsigned:
      return fmt::format("an integer from 0 to {}", std::numeric_limits<uint64_t>::max());
    case SettingKind::Number:
      return fmt::format("a finite number {} {} and at most {}", r.lo_open ? ">" : ">=", r.lo, r.hi);
    case SettingKind::Text:
      return "a string";
    case SettingKind::IntegerList:
      return fmt::format("a non-empty list of integers from {} to {}", static_cast<int64_t>(r.lo),
                         static_cast<int64_t>(r.hi));
  }
  return "";
}

bool integer_ok(const nlohmann::json& v, double lo, double hi) {
  if (!v.is_number_integer()) return false;  // 2.0, 2.5, true and "2" are not integers
  if (v.is_number_unsigned()) return static_cast<double>(v.get<uint64_t>()) <= hi && lo <= static_cast<double>(v.get<uint64_t>());
  const int64_t x = v.get<int64_t>();
  return static_cast<double>(x) >= lo && static_cast<double>(x) <= hi;
}

bool number_ok(double x, double lo, bool lo_open, double hi) {
  return std::isfinite(x) && x >= lo && !(lo_open && x == lo) && x <= hi;
}

const nlohmann::json& value_of(const nlohmann::json& j, const std::string& key, const std::string& source) {
  DITGEN_CHECK(j.is_object(), "{}: expected a JSON object, got {}", source, j.type_name());
  auto it = j.find(key);
  DITGEN_CHECK(it != j.end(), "{}: \"{}\" is missing", source, key);
  return *it;
}

void check_value(const nlohmann::json& j, const std::string& key, const std::string& source) {
  const std::string fault = setting_fault(setting_rule(key), value_of(j, key, source));
  DITGEN_CHECK(fault.empty(), "{}: \"{}\" {}", source, key, fault);
}

}  // namespace

const std::vector<SettingRule>& setting_rules() {
  using K = SettingKind;
  // The command line's ranges, which prompt-file items and presets now share (issue 22: an item's
  // {"steps": 100000} or a presets file's 1e9 steps ran until killed).
  static const std::vector<SettingRule> rules = {
      {"prompt", "--prompt", K::Text},
      {"negative_prompt", "--negative-prompt", K::Text},
      {"height", "--height", K::Integer, 1, 16384},
      {"width", "--width", K::Integer, 1, 16384},
      {"steps", "--steps", K::Integer, 1, 10000},
      {"num_frames", "--num-frames", K::Integer, 1, 100000},
      {"frame_rate", "--frame-rate", K::Number, 0, 1000, true},
      {"guidance", "--guidance", K::Number, 0, 1e4},
      {"true_cfg_scale", "--true-cfg-scale", K::Number, 0, 1e4},
      {"audio_guidance", "--audio-guidance", K::Number, 0, 1e4},
      {"max_sequence_length", "--max-sequence-length", K::Integer, 1, 1 << 20},
      {"text_encoder_out_layers", "--text-encoder-out-layers", K::IntegerList, -4096, 4096},
      {"seed", "--seed", K::Unsigned},
      {"batch", "--batch-count", K::Integer, 1, 1024},
      {"warmup", "--warmup", K::Integer, 0, 1000},
      {"warmup_steps", "--warmup-steps", K::Integer, 1, 10000},
      {"repeat", "--repeat", K::Integer, 1, 1000},
      {"strength", "--strength", K::Number, 0, 1, true},
      {"image_crf", "--image-crf", K::Integer, 0, 51},
  };
  return rules;
}

const SettingRule& setting_rule(const std::string& key) {
  for (const auto& r : setting_rules())
    if (key == r.key) return r;
  fail("no setting rule for '{}'", key);
}

std::string setting_fault(const SettingRule& r, const nlohmann::json& v) {
  bool ok = false;
  switch (r.kind) {
    case SettingKind::Integer:
      ok = integer_ok(v, r.lo, r.hi);
      break;
    case SettingKind::Unsigned:
      ok = v.is_number_unsigned();
      break;
    case SettingKind::Number:
      ok = v.is_number() && number_ok(v.get<double>(), r.lo, r.lo_open, r.hi);
      break;
    case SettingKind::Text:
      ok = v.is_string();
      break;
    case SettingKind::IntegerList:
      ok = v.is_array() && !v.empty() &&
           std::all_of(v.begin(), v.end(), [&](const nlohmann::json& e) { return integer_ok(e, r.lo, r.hi); });
      break;
  }
  return ok ? "" : fmt::format("must be {}, got {}", expectation(r), io::json_excerpt(v));
}

std::string setting_fault(const SettingRule& r, const std::string& text) {
  std::string fault;
  switch (r.kind) {
    case SettingKind::Integer:
    case SettingKind::IntegerList:  // CLI11 checks each comma-separated element
      fault = integer_fault(text, static_cast<int64_t>(r.lo), static_cast<int64_t>(r.hi));
      break;
    case SettingKind::Unsigned:
      fault = unsigned_fault(text);
      break;
    case SettingKind::Number:
      fault = number_fault(text, r.lo, r.lo_open, r.hi);
      break;
    case SettingKind::Text:
      break;
  }
  return fault;
}

std::string integer_fault(const std::string& text, int64_t lo, int64_t hi) {
  size_t used = 0;
  long long v = 0;
  try {
    v = std::stoll(text, &used);
  } catch (const std::exception&) {
    used = 0;
  }
  if (used != text.size() || text.empty() || v < lo || v > hi)
    return fmt::format("must be an integer from {} to {}, got '{}'", lo, hi, io::printable(text));
  return "";
}

std::string unsigned_fault(const std::string& text) {
  size_t used = 0;
  try {
    if (!text.empty() && text[0] != '-' && text[0] != '+' && !std::isspace(static_cast<unsigned char>(text[0])))
      (void)std::stoull(text, &used);
  } catch (const std::exception&) {
    used = 0;
  }
  if (used != text.size() || text.empty())
    return fmt::format("must be an integer from 0 to {}, got '{}'", std::numeric_limits<uint64_t>::max(),
                       io::printable(text));
  return "";
}

std::string number_fault(const std::string& text, double lo, bool lo_open, double hi) {
  size_t used = 0;
  double v = 0;
  try {
    v = std::stod(text, &used);
  } catch (const std::exception&) {
    used = 0;
  }
  if (used != text.size() || text.empty() || !number_ok(v, lo, lo_open, hi))
    return fmt::format("must be a finite number {} {} and at most {}, got '{}'", lo_open ? ">" : ">=", lo, hi,
                       io::printable(text));
  return "";
}

int64_t checked_integer(const nlohmann::json& j, const std::string& key, const std::string& source) {
  check_value(j, key, source);
  return j.at(key).get<int64_t>();
}

uint64_t checked_unsigned(const nlohmann::json& j, const std::string& key, const std::string& source) {
  check_value(j, key, source);
  return j.at(key).get<uint64_t>();
}

double checked_number(const nlohmann::json& j, const std::string& key, const std::string& source) {
  check_value(j, key, source);
  return j.at(key).get<double>();
}

std::string checked_text(const nlohmann::json& j, const std::string& key, const std::string& source) {
  check_value(j, key, source);
  return j.at(key).get<std::string>();
}

void check_preset_defaults(const nlohmann::json& defaults, const std::string& source) {
  DITGEN_CHECK(defaults.is_object(), "{}: \"defaults\" must be an object of settings, got {}", source,
               io::json_excerpt(defaults));
  std::string known;
  for (const auto& r : setting_rules()) known += (known.empty() ? "" : ", ") + std::string(r.key);
  for (auto it = defaults.begin(); it != defaults.end(); ++it) {
    if (it.key() == "image") {  // the settings a run with --image uses instead (runner.h: resolve_settings)
      DITGEN_CHECK(it.value().is_object() && !it.value().contains("image"),
                   "{}: \"image\" must be an object of settings (without an \"image\" of its own)", source);
      check_preset_defaults(it.value(), source + " image");
      continue;
    }
    const bool has_rule = std::any_of(setting_rules().begin(), setting_rules().end(),
                                      [&](const SettingRule& r) { return it.key() == r.key; });
    DITGEN_CHECK(has_rule, "{}: unknown setting \"{}\" (known: {})", source, io::printable(it.key()), known);
    check_value(defaults, it.key(), source);
  }
}

void check_settings(const Settings& s, const std::string& source) {
  auto integer = [&](const char* key, int64_t v) {
    const std::string fault = setting_fault(setting_rule(key), nlohmann::json(v));
    DITGEN_CHECK(fault.empty(), "{}: {} {}", source, key, fault);
  };
  auto number = [&](const char* key, double v) {
    // NaN and Inf are not JSON numbers: checked here before they could be wrapped into one.
    const SettingRule& r = setting_rule(key);
    DITGEN_CHECK(number_ok(v, r.lo, r.lo_open, r.hi), "{}: {} must be {}, got {}", source, key, expectation(r), v);
  };
  integer("height", s.height);
  integer("width", s.width);
  integer("steps", s.steps);
  integer("batch", s.batch);
  integer("max_sequence_length", s.max_sequence_length);
  integer("num_frames", s.num_frames);
  if (s.frame_rate != 0) number("frame_rate", s.frame_rate);  // 0: an image model's (no frame rate)
  number("guidance", s.guidance);
  number("true_cfg_scale", s.true_cfg_scale);
  number("audio_guidance", s.audio_guidance);
  number("strength", s.strength);
  integer("image_crf", s.image_crf);
}

bool is_out_of_memory(const std::string& what) {
  std::string w = what;
  std::transform(w.begin(), w.end(), w.begin(), [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  for (const char* m : {"out of memory", "not enough memory", "can't allocate memory", "cannot allocate memory",
                        "std::bad_alloc", "failed to allocate"})
    if (w.find(m) != std::string::npos) return true;
  return false;
}

std::string out_of_memory_message(const std::string& stage, const std::string& device,
                                  const std::string& what, const GpuMemoryLimit& cap) {
  return fmt::format(
      "out of memory while {} on {} ({}): {}reduce --height/--width/--batch-count, or spread the model over more "
      "ranks (--tp, --ulysses, --ring)",
      stage, device, what.substr(0, what.find('\n')),
      cap.set() ? fmt::format("over {}: raise it, or ", cap.describe()) : "");
}

}  // namespace ditgen::pipeline
