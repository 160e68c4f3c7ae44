// One interface for every tokenizer atq reads: GPT-2 byte-level BPE (encoder.json + vocab.bpe, or a GGUF "gpt2"
// vocabulary), score-ordered BPE over pieces (llama2.c tokenizer.bin, a GGUF "llama" vocabulary), and
// SentencePiece .model files. Ids are int32 as in every format here.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

namespace atq {

class GgufFile;

class Tokenizer {
 public:
  virtual ~Tokenizer() = default;

  // Text (any bytes; invalid UTF-8 is kept as bytes where the vocabulary can express them) to ids, without BOS/EOS.
  virtual std::vector<int32_t> Encode(std::string_view text) const = 0;
  // The bytes of one token as it appears in decoded text; `previous` is the token before it (-1 at the start)
  // for tokenizers that drop a leading space after BOS.
  virtual std::string DecodeToken(int32_t id, int32_t previous) const = 0;
  // Concatenated DecodeToken of `ids` (a tokenizer whose decoder looks at the whole sequence overrides it).
  virtual std::string Decode(const std::vector<int32_t>& ids) const;

  virtual int32_t vocab_size() const = 0;
  virtual int32_t bos_id() const = 0;  // -1 when the vocabulary has none
  virtual int32_t eos_id() const = 0;  // -1 when the vocabulary has none

  // Whether a sequence starts with BOS, as llama.cpp's add_bos decides it: the file's own flag where it has one
  // (GGUF tokenizer.ggml.add_bos_token, tokenizer_config.json add_bos_token), else the vocabulary kind's default
  // (GPT-2's byte-level BPE: no; SentencePiece-style vocabularies with a BOS: yes).
  bool add_bos() const { return has_add_bos_ ? add_bos_ : DefaultAddBos(); }
  void set_add_bos(bool value) {
    has_add_bos_ = true;
    add_bos_ = value;
  }

 protected:
  virtual bool DefaultAddBos() const { return bos_id() >= 0; }

 private:
  bool has_add_bos_ = false, add_bos_ = false;
};

// The whole file at `path` encoded, with a progress line (atq::Error naming the file when it cannot be read).
std::vector<int32_t> EncodeFile(const Tokenizer& tokenizer, const std::string& path);

// GPT-2's tokenizer from the two files OpenAI published (encoder.json, vocab.bpe). Throws atq::Error naming the
// file when either is missing or malformed.
std::unique_ptr<Tokenizer> LoadGpt2Tokenizer(const std::string& encoder_json, const std::string& vocab_bpe);

// llama2.c's tokenizer.bin (max token length, then per token: float score, int32 length, bytes).
std::unique_ptr<Tokenizer> LoadLlama2cTokenizer(const std::string& path, int32_t vocab_size);

// A SentencePiece model file (.model), through libsentencepiece.
std::unique_ptr<Tokenizer> LoadSentencePieceTokenizer(const std::string& path);

// The tokenizer at `path`: a folder (tokenizer.json, tokenizer.model, vocab.json + merges.txt or encoder.json +
// vocab.bpe, in that order of preference), one of those files, a GGUF file's vocabulary, or a llama2.c
// tokenizer.bin (which needs `vocab_size`). A tokenizer_config.json beside it sets BOS/EOS and add_bos_token.
std::unique_ptr<Tokenizer> LoadTokenizerAt(const std::string& path, int64_t vocab_size = -1);

// The vocabulary embedded in a GGUF file (tokenizer.ggml.model "gpt2" or "llama"), encoding as llama.cpp does.
std::unique_ptr<Tokenizer> LoadGgufTokenizer(const GgufFile& gguf);

}  // namespace atq
