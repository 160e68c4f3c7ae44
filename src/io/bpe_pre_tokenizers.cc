// The rows: GPT-2's pattern (the ByteLevel pre-tokenizer's own), Llama 3's and Qwen2's (their tokenizer.json
// Split regexes, character for character).
#include "io/bpe_pre_tokenizers.h"

#include <utility>

namespace atq {

const std::vector<BpePreTokenizer>& BpePreTokenizers() {
  static const std::vector<BpePreTokenizer> rows = {
      {"gpt-2", R"('s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+)", false},
      {"llama-bpe",
       R"((?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)",
       true},
      {"qwen2",
       R"((?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)",
       false},
  };
  return rows;
}

const BpePreTokenizer* FindBpePreTokenizer(std::string_view name) {
  // Older files and other writers spell some of them differently.
  static const std::pair<std::string_view, std::string_view> kAliases[] = {
      {"gpt2", "gpt-2"}, {"default", "gpt-2"}, {"llama3", "llama-bpe"}};
  for (const auto& [alias, canonical] : kAliases) {
    if (name == alias) name = canonical;
  }
  for (const BpePreTokenizer& row : BpePreTokenizers()) {
    if (row.name == name) return &row;
  }
  return nullptr;
}

const BpePreTokenizer* FindBpePreTokenizerByRegex(std::string_view regex) {
  for (const BpePreTokenizer& row : BpePreTokenizers()) {
    if (row.regex == regex) return &row;
  }
  return nullptr;
}

std::string BpePreTokenizerNames() {
  std::string names;
  for (const BpePreTokenizer& row : BpePreTokenizers()) names += (names.empty() ? "" : ", ") + std::string(row.name);
  return names;
}

}  // namespace atq
