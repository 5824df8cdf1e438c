#pragma once
// Qwen2Tokenizer (byte-level BPE with Qwen's regex, docs/reference/qwen-image.md §4.1) as a tokenizer.json
// document built from parts, so that it goes through the ordinary tokenizer.json parser:
//  - a tokenizer folder without tokenizer.json, holding what transformers' slow tokenizer reads
//    (vocab.json, merges.txt, tokenizer_config.json, maybe added_tokens.json / special_tokens_map.json);
//  - a vocab and merges made in memory (the built-in tiny Qwen tokenizer, lib/text/tiny_tokenizer.h).
#include <nlohmann/json.hpp>
#include <string>

namespace ditgen::text {

struct BpeTables;

// Qwen2's pre-tokenizer pattern (Split, behaviour Isolated); digits are split one by one.
extern const char* const kQwen2Pattern;

// The document: NFC normaliser, Split(kQwen2Pattern, Isolated) then ByteLevel without prefix space, BPE
// over `vocab` ({token: id}) and `merges` ([[a, b], ...]) without byte fallback or unk, `added_tokens`
// (tokenizer.json entries), a ByteLevel post-processor (adds nothing) and a ByteLevel decoder.
nlohmann::json qwen2_tokenizer_json(nlohmann::json vocab, nlohmann::json merges, nlohmann::json added_tokens);

// Reads a slow-tokenizer folder whose tokenizer_config.json names "Qwen2Tokenizer" (or its Fast twin).
// Added tokens come from `added_tokens_decoder`, then added_tokens.json; special tokens named in the config
// or special_tokens_map.json that are nowhere yet get the next free ids, as transformers does. With
// `tables`, vocab and merges go there instead of into the document (a DOM of 150k merges costs seconds;
// Tokenizer::from_file does the same for tokenizer.json). Errors name the folder and what is missing.
nlohmann::json qwen2_tokenizer_json_from_folder(const std::string& folder, BpeTables* tables = nullptr);

}  // namespace ditgen::text
