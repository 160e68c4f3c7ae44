// The SentencePiece wrapper: the model is read by atq (so a missing file is reported like every other) and parsed
// by libsentencepiece, whose status messages are passed on with the path. Built as the loadable module
// atq_sentencepiece (see io/sentencepiece_loader.cc for why).
#include "io/sentencepiece/sentencepiece_tokenizer.h"

#include <sentencepiece_processor.h>

#include "io/mapped_file.h"
#include "io/score_bpe_tokenizer.h"
#include "util/error.h"

namespace atq {

SentencePieceTokenizer::SentencePieceTokenizer(const std::string& path)
    : path_(path), processor_(std::make_unique<sentencepiece::SentencePieceProcessor>()) {
  const MappedFile file = MappedFile::Open(path);
  Require(file.size() > 0, "{}: empty file, not a SentencePiece model", path);
  const std::string_view bytes(reinterpret_cast<const char*>(file.data()), file.size());
  const sentencepiece::util::Status status = processor_->LoadFromSerializedProto(bytes);
  Require(status.ok(), "{}: not a usable SentencePiece model: {}", path, status.ToString());
  Require(processor_->GetPieceSize() > 0, "{}: SentencePiece model holds no pieces", path);
  const int unknown = processor_->unk_id();
  if (unknown >= 0 && unknown < processor_->GetPieceSize()) unknown_surface_ = processor_->DecodeIds({unknown});
}

SentencePieceTokenizer::~SentencePieceTokenizer() = default;

int32_t SentencePieceTokenizer::vocab_size() const { return processor_->GetPieceSize(); }
int32_t SentencePieceTokenizer::bos_id() const { return processor_->bos_id(); }
int32_t SentencePieceTokenizer::eos_id() const { return processor_->eos_id(); }

std::vector<int32_t> SentencePieceTokenizer::Encode(std::string_view text) const {
  std::vector<int> ids;
  const sentencepiece::util::Status status = processor_->Encode(text, &ids);
  Require(status.ok(), "{}: SentencePiece cannot encode {} bytes of text: {}", path_, text.size(), status.ToString());
  return std::vector<int32_t>(ids.begin(), ids.end());
}

std::string SentencePieceTokenizer::DecodeToken(int32_t id, int32_t previous) const {
  Require(id >= 0 && id < vocab_size(), "{}: token id {} is outside the vocabulary (0..{})", path_, id,
          vocab_size() - 1);
  if (processor_->IsControl(id)) return {};
  if (processor_->IsUnknown(id)) return unknown_surface_;
  const std::string& piece = processor_->IdToPiece(id);
  if (processor_->IsByte(id)) {
    const std::optional<uint8_t> byte = ParseBytePiece(piece);
    if (byte) return std::string(1, static_cast<char>(*byte));
  }
  const bool at_start = previous < 0 || previous >= vocab_size() || processor_->IsControl(previous);
  if (at_start) return processor_->DecodeIds({id});
  return SpacesFromMark(piece, kSpaceMark);
}

}  // namespace atq

// The module's entry point: a new tokenizer the caller owns; atq::Error on a bad file.
extern "C" atq::Tokenizer* atq_open_sentencepiece(const char* path) { return new atq::SentencePieceTokenizer(path); }
