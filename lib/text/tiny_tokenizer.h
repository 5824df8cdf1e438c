#pragma once
// Built-in tokenizer.json documents for the tiny demo models: no files needed, and they go through the
// same parser as a real tokenizer.json. Their merges are learnt deterministically from a small built-in
// English text; changing that text or the learning changes the tiny models' outputs.
//
// Tiny Tekken (FLUX.2), in the style of Mistral's Tekken (byte-level BPE, ids 0..999 reserved for
// control tokens):
//   ids 0..999      control tokens (special added tokens): <unk> 0, <s> 1, </s> 2, [INST] 3,
//                   [/INST] 4, [IMG] 10, <pad> 11, [SYSTEM_PROMPT] 17, [/SYSTEM_PROMPT] 18,
//                   <SPECIAL_n> elsewhere
//   ids 1000..1255  the 256 bytes (GPT-2 byte-to-unicode stand-ins), id = 1000 + byte
//   ids 1256..1499  merged tokens
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

// Tiny Qwen (Qwen-Image): a Qwen2Tokenizer-style document (NFC, Qwen2's regex, byte-level BPE;
// lib/text/qwen2_tokenizer.h):
//   ids 0..255      the 256 bytes (GPT-2 byte-to-unicode stand-ins), id = byte
//   ids 256..n-1    merged tokens, learnt from the Qwen-Image template's words and the same English text
//   ids n, n+1, n+2 <|endoftext|>, <|im_start|>, <|im_end|> (special added tokens)
// n is fixed by the built-in text (the unit tests pin it); vocab_size() = n + 3.
nlohmann::json tiny_qwen_tokenizer_json();
std::shared_ptr<Tokenizer> tiny_qwen_tokenizer();

}  // namespace ditgen::text
