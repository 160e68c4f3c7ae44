// SentencePiece .model files through libsentencepiece: encoding is the library's own (normalization included);
// decoding goes piece by piece with SentencePiece's rules, so Tokenizer::DecodeToken can stream text.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "io/tokenizer.h"

namespace sentencepiece {
class SentencePieceProcessor;
}  // namespace sentencepiece

namespace atq {

class SentencePieceTokenizer final : public Tokenizer {
 public:
  // Throws atq::Error naming `path` when it is missing or libsentencepiece rejects it.
  explicit SentencePieceTokenizer(const std::string& path);
  ~SentencePieceTokenizer() override;

  std::vector<int32_t> Encode(std::string_view text) const override;
  // Control pieces as nothing, the unknown piece as the model's unknown surface (" \u2047 " by default), byte
  // pieces as the byte, others with U+2581 turned into ' '; at the start of text or after a control piece the
  // library decodes the piece itself, which drops the leading space where the model adds a dummy prefix.
  std::string DecodeToken(int32_t id, int32_t previous) const override;
  int32_t vocab_size() const override;
  int32_t bos_id() const override;
  int32_t eos_id() const override;

  const sentencepiece::SentencePieceProcessor& processor() const { return *processor_; }

 private:
  std::string path_;
  std::unique_ptr<sentencepiece::SentencePieceProcessor> processor_;
  std::string unknown_surface_;
};

}  // namespace atq
