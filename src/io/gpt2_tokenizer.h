// Byte-level BPE: a pre-tokenizer regex (GPT-2's, or Llama 3's / Qwen2's as a GGUF file names them), every byte
// mapped to a token, then merges applied by rank. Built from OpenAI's encoder.json + vocab.bpe or from a GGUF "gpt2" vocabulary.
#pragma once

#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "io/bpe_merges.h"
#include "io/tokenizer.h"

namespace atq {

class Regex;

// Where a vocabulary came from, so errors name the file and the entry.
struct Gpt2VocabularySource {
  std::string tokens;               // "/x/encoder.json" or "/x/model.gguf: tokenizer.ggml.tokens"
  std::string merges;               // "/x/vocab.bpe" or "/x/model.gguf: tokenizer.ggml.merges"
  std::string merge_unit = "line";  // what a merge's number counts: "line" of vocab.bpe, "entry" of an array
  size_t first_merge_number = 1;    // the number of merges[0] in that unit
  std::string pre = "gpt-2";        // llama.cpp's name of the pre-tokenizer (io/bpe_pre_tokenizers.h)
};

class Gpt2Tokenizer final : public Tokenizer {
 public:
  // `tokens`: each token spelled in GPT-2's byte alphabet (encoder.json keys, GGUF tokenizer.ggml.tokens), by id.
  // A spelling outside that alphabet (an added token such as "<|im_start|>" in some vocabularies is inside it) is
  // kept as literal text for decoding and is never produced by BPE. `merges`: "left right" spellings, highest
  // priority first; a repeated pair keeps its first rank, as llama.cpp does. `bos`/`eos`: -1 for none.
  // Throws atq::Error when a byte has no token, a merge is malformed or names a token that does not exist.
  Gpt2Tokenizer(std::vector<std::string> tokens, const std::vector<std::string>& merges,
                const Gpt2VocabularySource& source, int32_t bos, int32_t eos);
  ~Gpt2Tokenizer() override;

  std::vector<int32_t> Encode(std::string_view text) const override;
  std::string DecodeToken(int32_t id, int32_t previous) const override;
  int32_t vocab_size() const override { return static_cast<int32_t>(token_bytes_.size()); }
  int32_t bos_id() const override { return bos_; }
  int32_t eos_id() const override { return eos_; }

 protected:
  bool DefaultAddBos() const override { return false; }  // llama.cpp's default for "gpt2" BPE vocabularies

 public:

  // GPT-2's pre-tokenization: the regex's matches in order, with any run of invalid UTF-8 the regex cannot match
  // kept as a piece of its own, so the pieces concatenate to `text`.
  std::vector<std::string_view> PreTokenize(std::string_view text) const;
  // The raw bytes a token stands for.
  const std::string& token_bytes(int32_t id) const;
  int64_t merge_count() const { return static_cast<int64_t>(merges_.size()); }

 private:
  // Byte-pair encoding of one pre-token, appended to `out`.
  void EncodeWord(std::string_view word, std::vector<int32_t>& out) const;
  std::vector<int32_t> MergeWord(std::string_view word) const;

  std::vector<std::string> token_bytes_;        // id -> raw bytes
  int32_t byte_tokens_[256] = {};               // byte -> id of its one-byte token
  BpeMerges merges_;
  int32_t bos_ = -1;
  int32_t eos_ = -1;
  std::unique_ptr<Regex> pattern_;
  bool ignore_merges_ = false;
  std::unordered_map<std::string, int32_t> whole_words_;  // with ignore_merges_: token bytes -> id

  BpeWordCache cache_;
};

// GPT-2's byte-to-character table: printable Latin-1 bytes map to themselves, the others to U+0100 and up, so
// every byte string is spelled in printable characters. The UTF-8 of byte `b`'s character.
const std::string& Gpt2ByteCharacter(uint8_t byte);

}  // namespace atq
