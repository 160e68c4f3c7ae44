// BPE over a piece vocabulary with scores, encoding as llama.cpp's SPM tokenizer (llm_tokenizer_spm) does:
// llama2.c's tokenizer.bin and GGUF "llama" vocabularies.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "io/tokenizer.h"

namespace atq {

// llama.cpp's token types (tokenizer.ggml.token_type), with its values.
enum class PieceKind : uint8_t {
  kUndefined = 0,
  kNormal = 1,
  kUnknown = 2,
  kControl = 3,
  kUserDefined = 4,
  kUnused = 5,
  kByte = 6,
};

// The SentencePiece word-boundary mark U+2581 that stands for a space inside pieces.
inline constexpr std::string_view kSpaceMark = "\xE2\x96\x81";

struct ScoreVocabulary {
  std::string source;  // the file (and key) the vocabulary came from, for error messages
  std::vector<std::string> pieces;
  std::vector<float> scores;     // one per piece
  std::vector<PieceKind> kinds;  // one per piece, or empty: BOS/EOS control, "<0xXX>" byte, the rest normal
  int32_t bos_id = -1;           // -1 for none
  int32_t eos_id = -1;
  int32_t unk_id = -1;           // emitted for a byte that has no piece, if any
  bool add_space_prefix = true;  // encode " " + text; decode drops the first piece's space at the start/after BOS
  std::string space = std::string(kSpaceMark);  // how pieces spell a space: U+2581, or " " in llama2.c's files
};

class ScoreBpeTokenizer final : public Tokenizer {
 public:
  // Throws atq::Error naming vocabulary.source when the sizes disagree, a score is NaN, an id is out of range,
  // or a byte piece is not spelled <0xXX>.
  explicit ScoreBpeTokenizer(ScoreVocabulary vocabulary);
  ScoreBpeTokenizer(const ScoreBpeTokenizer&) = delete;  // ids_ views the pieces
  ScoreBpeTokenizer& operator=(const ScoreBpeTokenizer&) = delete;

  // Splits text (plus the space prefix) into UTF-8 characters (a broken sequence is cut as llama.cpp cuts it),
  // merges the adjacent pair whose concatenation is the highest-scoring piece (leftmost on ties) until none is
  // left, then emits each symbol's piece, or one <0xXX> piece per byte of a symbol that is not a piece.
  std::vector<int32_t> Encode(std::string_view text) const override;
  // Normal pieces with the space mark turned into ' ' (the leading one dropped at the start of text or after BOS
  // when add_space_prefix, as run.c and llama.cpp's detokenizer do); byte pieces as the byte; user-defined pieces
  // as spelled with the space mark as ' '; control, unknown and unused pieces as nothing.
  std::string DecodeToken(int32_t id, int32_t previous) const override;
  int32_t vocab_size() const override { return static_cast<int32_t>(pieces_.size()); }
  int32_t bos_id() const override { return bos_; }
  int32_t eos_id() const override { return eos_; }

  const std::string& source() const { return source_; }
  const std::string& piece(int32_t id) const;
  float score(int32_t id) const;
  PieceKind kind(int32_t id) const;
  bool add_space_prefix() const { return add_space_prefix_; }
  // The id of a piece spelled exactly `text` (the last one when spelled twice, as llama.cpp), or -1.
  int32_t PieceId(std::string_view text) const;

 private:
  void CheckId(int32_t id) const;

  std::string source_;
  std::vector<std::string> pieces_;
  std::vector<float> scores_;
  std::vector<PieceKind> kinds_;
  std::vector<uint8_t> byte_values_;                   // the byte of each kByte piece
  std::unordered_map<std::string_view, int32_t> ids_;  // views pieces_
  int32_t byte_tokens_[256] = {};                      // byte -> piece emitted for it, -1 when none
  int32_t bos_ = -1;
  int32_t eos_ = -1;
  bool add_space_prefix_ = true;
  std::string space_;
};

// `piece` with every `mark` (how the vocabulary spells a space, e.g. kSpaceMark) turned into ' '.
std::string SpacesFromMark(std::string_view piece, std::string_view mark);

// The byte a piece spelled "<0xXX>" (hex digits in either case) stands for.
std::optional<uint8_t> ParseBytePiece(std::string_view piece);

}  // namespace atq
