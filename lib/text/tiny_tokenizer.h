#pragma once
// A built-in tokenizer.json in the style of Mistral's Tekken (byte-level BPE, ids 0..999 reserved
// for control tokens) for the tiny demo models: no files needed. It goes through the same parser
// as a real tokenizer.json.
//   ids 0..999      control tokens (special added tokens): <unk> 0, <s> 1, </s> 2, [INST] 3,
//                   [/INST] 4, [IMG] 10, <pad> 11, [SYSTEM_PROMPT] 17, [/SYSTEM_PROMPT] 18,
//                   <SPECIAL_n> elsewhere
//   ids 1000..1255  the 256 bytes (GPT-2 byte-to-unicode stand-ins), id = 1000 + byte
//   ids 1256..      merged tokens, learnt deterministically from a small built-in English text
#include <memory>
#include <nlohmann/json.hpp>

#include "lib/text/tokenizer.h"

namespace ditgen::text {

// The Tekken pre-tokenizer pattern (as shipped in Mistral-Small-3.1's tokenizer.json).
extern const char* const kTekkenPattern;

// The tokenizer.json document (built once, then copied).
nlohmann::json tiny_tekken_tokenizer_json();
// The tokenizer built from it (shared, built once).
std::shared_ptr<Tokenizer> tiny_tekken_tokenizer();

}  // namespace ditgen::text
