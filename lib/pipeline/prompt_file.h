#pragma once
// --prompt-file: many generations per launch, the models loaded once. The file is either plain text (one
// prompt per non-blank line, taken as written) or JSON Lines (the first non-blank line starts with '{'):
// one object per line with any of "prompt", "negative_prompt", "seed", "height", "width", "steps",
// "output", "image" (a path, or a list of paths where the model takes several: the item's --image) and
// "strength"; a field left out takes the command line's value (or the preset's). Values obey the command
// line's rules (lib/pipeline/settings_check.h); a key given twice on one line is refused.
//
// Each rank reads the file once (read_prompt_file_bytes): the agreement check that every rank was given
// the same file covers exactly the bytes its items are parsed from (parse_prompt_file), so a file changed
// after the ranks agreed cannot be read differently by one of them.
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
  std::vector<std::string> images;            // "image": empty: the command line's --image
  double strength = -1;                       // "strength": < 0: the command line's
};

constexpr uint64_t kMaxPromptFileBytes = 64ull << 20;

// The file's bytes (a regular file of at most kMaxPromptFileBytes), naming --prompt-file in errors.
std::string read_prompt_file_bytes(const std::string& path);
// Checks and parses every line of `bytes` (UTF-8, types, ranges, unknown and repeated keys), naming
// `path`, the line and the key of a fault. An empty file (no items) is an error.
std::vector<PromptItem> parse_prompt_file(const std::string& path, const std::string& bytes);
// read_prompt_file_bytes + parse_prompt_file.
std::vector<PromptItem> read_prompt_file(const std::string& path);

// A digest of bytes for the check that every rank read the same file (FNV-1a, hex).
std::string prompt_file_digest_of(const std::string& bytes);

}  // namespace ditgen::pipeline
