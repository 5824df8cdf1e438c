#pragma once
// --prompt-file: many generations per launch, the models loaded once. The file is either plain text (one
// prompt per non-blank line, taken as written) or JSON Lines (the first non-blank line starts with '{'):
// one object per line with any of "prompt", "negative_prompt", "seed", "height", "width", "steps",
// "output"; a field left out takes the command line's value (or the preset's).
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

namespace ditgen::pipeline {

struct PromptItem {
  int line = 0;  // 1-based line in the file, for messages
  std::optional<std::string> prompt, negative_prompt;
  std::optional<uint64_t> seed;
  int64_t height = 0, width = 0, steps = 0;  // 0: the command line's
  std::string output;                         // "": the command line's --output (a folder)
};

// Reads and checks every line (types, ranges, unknown keys), naming the file, line and key of a fault.
// An empty file (no items) is an error.
std::vector<PromptItem> read_prompt_file(const std::string& path);

// The file's bytes, for the check that every rank read the same file (FNV-1a, hex).
std::string prompt_file_digest(const std::string& path);

}  // namespace ditgen::pipeline
