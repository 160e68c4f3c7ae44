// The byte-level BPE pre-tokenizers llama.cpp knows by name (tokenizer.ggml.pre) with the regex each splits text
// by: one table, read by the GGUF writer (regex -> name) and the GGUF tokenizer reader (name -> regex).
#pragma once

#include <string>
#include <string_view>
#include <vector>

namespace atq {

struct BpePreTokenizer {
  std::string_view name;       // tokenizer.ggml.pre as llama.cpp's converter writes it
  std::string_view regex;      // as tokenizer.json spells it (Oniguruma syntax)
  bool ignore_merges = false;  // a word that is a token is taken whole (Llama 3), as llama.cpp does for it
};

const std::vector<BpePreTokenizer>& BpePreTokenizers();
// The row for a tokenizer.ggml.pre value (its aliases included); nullptr when llama.cpp's name is not one atq
// knows the regex of.
const BpePreTokenizer* FindBpePreTokenizer(std::string_view name);
// The row whose regex is `regex` exactly; nullptr for any other.
const BpePreTokenizer* FindBpePreTokenizerByRegex(std::string_view regex);
// The rows' names, for messages.
std::string BpePreTokenizerNames();

}  // namespace atq
