// Score-ordered BPE as llama.cpp's llm_tokenizer_spm runs it (a priority queue of adjacent pairs, stale entries
// skipped), and the reader of llama2.c's tokenizer.bin.
#include "io/score_bpe_tokenizer.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <memory>
#include <queue>
#include <utility>

#include <fmt/format.h>

#include "io/mapped_file.h"
#include "util/error.h"
#include "util/utf8.h"

namespace atq {
namespace {

// llama.cpp's unicode_len_utf8: the length a lead byte announces; continuation and invalid bytes count as 1.
size_t Utf8SequenceLength(unsigned char lead) {
  static constexpr size_t kLengths[16] = {1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 2, 2, 3, 4};
  return kLengths[lead >> 4];
}

int HexDigit(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  return -1;
}

int32_t ReadInt32(const uint8_t* bytes) {
  int32_t value;
  std::memcpy(&value, bytes, sizeof(value));  // llama2.c writes native little-endian, as atq's targets are
  return value;
}

float ReadFloat32(const uint8_t* bytes) {
  float value;
  std::memcpy(&value, bytes, sizeof(value));
  return value;
}

}  // namespace

std::string SpacesFromMark(std::string_view piece, std::string_view mark) {
  if (mark == " ") return std::string(piece);
  std::string text;
  text.reserve(piece.size());
  for (size_t i = 0; i < piece.size();) {
    if (piece.compare(i, mark.size(), mark) == 0) {
      text += ' ';
      i += mark.size();
    } else {
      text += piece[i++];
    }
  }
  return text;
}

std::optional<uint8_t> ParseBytePiece(std::string_view piece) {
  if (piece.size() != 6 || piece.substr(0, 3) != "<0x" || piece[5] != '>') return std::nullopt;
  const int high = HexDigit(piece[3]), low = HexDigit(piece[4]);
  if (high < 0 || low < 0) return std::nullopt;
  return static_cast<uint8_t>(high * 16 + low);
}

ScoreBpeTokenizer::ScoreBpeTokenizer(ScoreVocabulary vocabulary)
    : source_(std::move(vocabulary.source)),
      pieces_(std::move(vocabulary.pieces)),
      scores_(std::move(vocabulary.scores)),
      kinds_(std::move(vocabulary.kinds)),
      bos_(vocabulary.bos_id),
      eos_(vocabulary.eos_id),
      add_space_prefix_(vocabulary.add_space_prefix),
      space_(std::move(vocabulary.space)) {
  Require(!pieces_.empty(), "{}: the vocabulary holds no pieces", source_);
  Require(pieces_.size() <= static_cast<size_t>(INT32_MAX), "{}: {} pieces are more than int32 ids can number", source_,
          pieces_.size());
  Require(scores_.size() == pieces_.size(), "{}: {} scores for {} pieces", source_, scores_.size(), pieces_.size());
  Require(!space_.empty(), "{}: the space mark is empty", source_);
  const auto count = static_cast<int32_t>(pieces_.size());
  const auto check_special = [&](int32_t id, std::string_view name) {
    Require(id >= -1 && id < count, "{}: {} id {} is outside the vocabulary of {} pieces", source_, name, id, count);
  };
  check_special(bos_, "BOS");
  check_special(eos_, "EOS");
  check_special(vocabulary.unk_id, "unknown-token");

  if (kinds_.empty()) {
    kinds_.assign(pieces_.size(), PieceKind::kNormal);
    for (int32_t id = 0; id < count; ++id) {
      if (id == bos_ || id == eos_) {
        kinds_[id] = PieceKind::kControl;
      } else if (ParseBytePiece(pieces_[id])) {
        kinds_[id] = PieceKind::kByte;
      }
    }
  }
  Require(kinds_.size() == pieces_.size(), "{}: {} token types for {} pieces", source_, kinds_.size(), pieces_.size());

  byte_values_.assign(pieces_.size(), 0);
  ids_.reserve(pieces_.size());
  for (int32_t id = 0; id < count; ++id) {
    Require(!std::isnan(scores_[id]), "{}: piece {} ({}) has a NaN score", source_, id, QuoteForMessage(pieces_[id]));
    const auto kind = static_cast<uint8_t>(kinds_[id]);
    Require(kind <= static_cast<uint8_t>(PieceKind::kByte), "{}: piece {} ({}) has token type {}, not 0..6", source_,
            id, QuoteForMessage(pieces_[id]), kind);
    if (kinds_[id] == PieceKind::kByte) {
      const std::optional<uint8_t> byte = ParseBytePiece(pieces_[id]);
      Require(byte.has_value(), "{}: piece {} ({}) is a byte piece but not spelled <0xXX>", source_, id,
              QuoteForMessage(pieces_[id]));
      byte_values_[id] = *byte;
    }
    ids_[pieces_[id]] = id;  // a repeated spelling keeps its last id, as llama.cpp's token_to_id
  }
  // llama.cpp's byte_to_token: the <0xXX> piece, else the one-byte piece, else (atq) the unknown piece.
  for (int byte = 0; byte < 256; ++byte) {
    int32_t id = PieceId(fmt::format("<0x{:02X}>", byte));
    if (id < 0) id = PieceId(std::string(1, static_cast<char>(byte)));
    byte_tokens_[byte] = id >= 0 ? id : vocabulary.unk_id;
  }
}

int32_t ScoreBpeTokenizer::PieceId(std::string_view text) const {
  const auto found = ids_.find(text);
  return found == ids_.end() ? -1 : found->second;
}

void ScoreBpeTokenizer::CheckId(int32_t id) const {
  Require(id >= 0 && id < vocab_size(), "{}: token id {} is outside the vocabulary (0..{})", source_, id,
          vocab_size() - 1);
}

const std::string& ScoreBpeTokenizer::piece(int32_t id) const {
  CheckId(id);
  return pieces_[id];
}

float ScoreBpeTokenizer::score(int32_t id) const {
  CheckId(id);
  return scores_[id];
}

PieceKind ScoreBpeTokenizer::kind(int32_t id) const {
  CheckId(id);
  return kinds_[id];
}

std::vector<int32_t> ScoreBpeTokenizer::Encode(std::string_view text) const {
  std::vector<int32_t> output;
  if (text.empty()) return output;  // llama.cpp adds no space prefix to empty text
  std::string normalized;
  normalized.reserve(text.size() + text.size() / 4 + 4);
  if (add_space_prefix_) normalized += space_;  // llama.cpp prefixes ' ', then escapes every space
  for (const char c : text) {
    if (c == ' ') {
      normalized += space_;
    } else {
      normalized += c;
    }
  }

  struct Symbol {
    size_t offset, size;  // bytes of `normalized`; size 0 once merged into the symbol on its left
    int32_t prev, next;   // -1 at the ends
  };
  std::vector<Symbol> symbols;
  symbols.reserve(normalized.size());
  for (size_t offset = 0; offset < normalized.size();) {
    const size_t size =
        std::min(Utf8SequenceLength(static_cast<unsigned char>(normalized[offset])), normalized.size() - offset);
    const auto index = static_cast<int32_t>(symbols.size());
    symbols.push_back({offset, size, index - 1, offset + size == normalized.size() ? -1 : index + 1});
    offset += size;
  }

  // llama.cpp's llm_bigram_spm order: highest score first, then leftmost.
  struct Bigram {
    float score;
    int32_t left, right;
    size_t size;
    bool operator<(const Bigram& other) const {
      return score < other.score || (score == other.score && left > other.left);
    }
  };
  std::priority_queue<Bigram> queue;
  const std::string_view all(normalized);
  const auto consider = [&](int32_t left, int32_t right) {
    if (left < 0 || right < 0) return;
    const size_t size = symbols[left].size + symbols[right].size;
    const int32_t id = PieceId(all.substr(symbols[left].offset, size));
    if (id >= 0) queue.push({scores_[id], left, right, size});
  };
  for (int32_t i = 1; i < static_cast<int32_t>(symbols.size()); ++i) consider(i - 1, i);

  while (!queue.empty()) {
    const Bigram bigram = queue.top();
    queue.pop();
    Symbol& left = symbols[bigram.left];
    Symbol& right = symbols[bigram.right];
    // Stale: one side was merged away, or grew, since this pair was queued.
    if (left.size == 0 || right.size == 0 || left.size + right.size != bigram.size) continue;
    left.size += right.size;
    right.size = 0;
    left.next = right.next;
    if (right.next >= 0) symbols[right.next].prev = bigram.left;
    consider(left.prev, bigram.left);
    consider(bigram.left, left.next);
  }

  output.reserve(symbols.size());
  for (int32_t i = symbols.empty() ? -1 : 0; i >= 0; i = symbols[i].next) {
    const std::string_view symbol = all.substr(symbols[i].offset, symbols[i].size);
    const int32_t id = PieceId(symbol);
    if (id >= 0) {
      output.push_back(id);
      continue;
    }
    for (const char c : symbol) {
      const int32_t byte_id = byte_tokens_[static_cast<unsigned char>(c)];
      Require(byte_id >= 0, "{}: byte 0x{:02X} has no piece (<0x{:02X}>, the byte itself, or an unknown piece)",
              source_, static_cast<unsigned char>(c), static_cast<unsigned char>(c));
      output.push_back(byte_id);
    }
  }
  return output;
}

std::string ScoreBpeTokenizer::DecodeToken(int32_t id, int32_t previous) const {
  CheckId(id);
  switch (kinds_[id]) {
    case PieceKind::kNormal: {
      std::string text = SpacesFromMark(pieces_[id], space_);
      const bool at_start = previous < 0 || (previous == bos_ && bos_ >= 0);
      if (add_space_prefix_ && at_start && !text.empty() && text[0] == ' ') text.erase(0, 1);
      return text;
    }
    case PieceKind::kByte:
      return std::string(1, static_cast<char>(byte_values_[id]));
    case PieceKind::kUserDefined:
      // As spelled, except the space mark: Gemma's added runs of U+2581 stand for spaces, as the tokenizer.json
      // they come from decodes them (llama.cpp prints the marks).
      return SpacesFromMark(pieces_[id], space_);
    case PieceKind::kUndefined:
    case PieceKind::kUnknown:
    case PieceKind::kControl:
    case PieceKind::kUnused:
      break;
  }
  return {};
}

std::unique_ptr<Tokenizer> LoadLlama2cTokenizer(const std::string& path, int32_t vocab_size) {
  Require(vocab_size > 0, "{}: vocabulary size {} must be positive", path, vocab_size);
  const MappedFile file = MappedFile::Open(path);
  const uint8_t* bytes = file.data();
  const size_t size = file.size();
  Require(size >= 4, "{}: file is {} bytes, too short for the 4-byte max_token_length of a llama2.c tokenizer", path,
          size);
  const int32_t max_token_length = ReadInt32(bytes);
  Require(max_token_length >= 0, "{}: negative max_token_length {}", path, max_token_length);
  // Every token takes at least 8 bytes (score and length), so a vocabulary size the file cannot hold is refused
  // before anything is allocated for it.
  Require(static_cast<uint64_t>(vocab_size) <= (size - 4) / 8,
          "{}: file is {} bytes, too short for {} tokens (vocabulary size mismatch or truncated file)", path, size,
          vocab_size);

  ScoreVocabulary vocabulary;
  vocabulary.source = path;
  vocabulary.pieces.reserve(vocab_size);
  vocabulary.scores.reserve(vocab_size);
  size_t offset = 4;
  for (int32_t id = 0; id < vocab_size; ++id) {
    Require(size - offset >= 8, "{}: truncated: token {} of {} needs its score and length at byte {}, file is {} bytes",
            path, id, vocab_size, offset, size);
    const float score = ReadFloat32(bytes + offset);
    const int32_t length = ReadInt32(bytes + offset + 4);
    offset += 8;
    Require(length >= 0, "{}: token {} has negative length {}", path, id, length);
    Require(length <= max_token_length, "{}: token {} is {} bytes, longer than max_token_length {}", path, id, length,
            max_token_length);
    Require(static_cast<size_t>(length) <= size - offset,
            "{}: truncated: token {} needs {} bytes at byte {}, file is {} bytes", path, id, length, offset, size);
    vocabulary.pieces.emplace_back(reinterpret_cast<const char*>(bytes + offset), static_cast<size_t>(length));
    vocabulary.scores.push_back(score);
    offset += static_cast<size_t>(length);
  }
  Require(offset == size, "{}: {} bytes left after {} tokens: the file holds a different vocabulary size", path,
          size - offset, vocab_size);
  // llama2.c's conventions: <unk> 0, BOS 1, EOS 2, spaces spelled as ' ' (its exporter replaced U+2581).
  vocabulary.unk_id = vocabulary.pieces[0] == "<unk>" ? 0 : -1;
  vocabulary.bos_id = vocab_size > 1 ? 1 : -1;
  vocabulary.eos_id = vocab_size > 2 ? 2 : -1;
  vocabulary.space = " ";
  return std::make_unique<ScoreBpeTokenizer>(std::move(vocabulary));
}

}  // namespace atq
