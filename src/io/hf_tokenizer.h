// Hugging Face tokenizer.json: added tokens matched first, then the normalizer, the pre-tokenizer and the BPE
// model as the tokenizers library runs them, and the decoder chain back to text. Covers the byte-level BPE of
// GPT-2 / Llama 3 / Qwen2 and the SentencePiece-style BPE (metaspace, byte fallback) of Llama 2 / Mistral /
// Gemma. Each component kind is a row of its table in hf_tokenizer.cc; an unknown one is an error naming it.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "io/tokenizer.h"

namespace atq {

// What a GGUF writer needs to spell the vocabulary as llama.cpp's converter does.
struct HfVocabularyView {
  std::vector<std::string> tokens;  // by id, the model's spelling (byte-level alphabet or U+2581 pieces)
  std::vector<bool> special;        // added tokens marked special
  std::vector<bool> added;          // every added token
  std::vector<std::string> merges;  // "left right", highest priority first
  bool byte_level = false;          // the pre-tokenizer maps bytes to GPT-2's alphabet
  bool byte_fallback = false;       // the model spells unknown characters as <0xXX> pieces
  std::string split_pattern;        // the pre-tokenizer's regex, if any (names llama.cpp's pre-tokenizer)
  bool add_space_prefix = false;    // a U+2581 is put before the text (Prepend normalizer, Metaspace)
  int32_t unk_id = -1;
};

// `tokenizer_json`: the file; `tokenizer_config`: its tokenizer_config.json, or "" for none (then BOS comes from
// the post-processor's template). Throws atq::Error naming the file and the component on anything unsupported.
std::unique_ptr<Tokenizer> LoadHfTokenizer(const std::string& tokenizer_json, const std::string& tokenizer_config);

// The vocabulary of a tokenizer LoadHfTokenizer built (atq::Error for any other tokenizer).
HfVocabularyView DescribeHfVocabulary(const Tokenizer& tokenizer);

}  // namespace atq
