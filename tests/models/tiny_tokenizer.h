// A byte-level BPE vocabulary small enough for random test models, written as GPT-2's files (encoder.json +
// vocab.bpe) so that the GGUF writer and the packed checkpoint can carry it.
#pragma once

#include <cstdint>
#include <filesystem>
#include <string>

#include <nlohmann/json.hpp>

#include "io/gpt2_tokenizer.h"
#include "test_util.h"

namespace atq::testutil {

// The 256 byte tokens, "th", "the", <|endoftext|> (258); ids 259 and up are the model's padding.
constexpr int64_t kTinyVocab = 260;
constexpr int32_t kTinyEndOfText = 258;

inline void WriteTinyTokenizer(const std::string& dir) {
  nlohmann::json encoder = nlohmann::json::object();
  for (int byte = 0; byte < 256; ++byte) encoder[Gpt2ByteCharacter(static_cast<uint8_t>(byte))] = byte;
  encoder["th"] = 256;
  encoder["the"] = 257;
  encoder["<|endoftext|>"] = kTinyEndOfText;
  WriteFileText((std::filesystem::path(dir) / "encoder.json").string(), encoder.dump());
  WriteFileText((std::filesystem::path(dir) / "vocab.bpe").string(), "#version: 0.2\nt h\nth e\n");
}

}  // namespace atq::testutil
