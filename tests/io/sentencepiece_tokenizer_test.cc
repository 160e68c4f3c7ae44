// The SentencePiece wrapper against libsentencepiece itself: tiny BPE and unigram models trained here on
// TinyStories text, the wrapper's ids and text compared with SentencePieceProcessor's, and hostile model files.

#include <sentencepiece_processor.h>
#include <sentencepiece_trainer.h>

#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "io/tokenizer.h"
#include "test_util.h"
#include "util/error.h"

namespace atq {
namespace {

using testutil::ErrorMessageOf;
using testutil::ExpectErrorNaming;
using testutil::ReadFileBytes;
using testutil::TempDir;
using testutil::WriteFileBytes;
using testutil::WriteFileText;

constexpr size_t kTrainingBytes = 200'000;
constexpr int kVocabSize = 300;

std::string ReadText(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::ostringstream text;
  text << in.rdbuf();
  return text.str();
}

std::vector<std::string> Lines(const std::string& text) {
  std::vector<std::string> lines;
  std::istringstream in(text);
  for (std::string line; std::getline(in, line);) {
    if (!line.empty()) lines.push_back(line);
  }
  return lines;
}

// Trains a model of `model_type` on the first kTrainingBytes of `corpus`; returns the .model path.
std::string Train(const TempDir& dir, const std::string& corpus, const std::string& model_type) {
  const std::string input = dir.File("train.txt");
  WriteFileText(input, ReadText(corpus).substr(0, kTrainingBytes));
  const std::string prefix = dir.File(model_type);
  const sentencepiece::util::Status status = sentencepiece::SentencePieceTrainer::Train(
      "--input=" + input + " --model_prefix=" + prefix + " --vocab_size=" + std::to_string(kVocabSize) +
      " --model_type=" + model_type + " --num_threads=1 --minloglevel=2");
  EXPECT_TRUE(status.ok()) << status.ToString();
  return prefix + ".model";
}

class SentencePieceTokenizerTest : public testing::TestWithParam<std::string> {};

TEST_P(SentencePieceTokenizerTest, MatchesTheLibrary) {
  ATQ_FIXTURE_OR_SKIP(corpus, "stories260K/tinystories_val.txt");
  TempDir dir;
  const std::string model = Train(dir, corpus, GetParam());
  const std::unique_ptr<Tokenizer> tokenizer = LoadSentencePieceTokenizer(model);
  sentencepiece::SentencePieceProcessor processor;
  ASSERT_TRUE(processor.Load(model).ok());
  EXPECT_EQ(tokenizer->vocab_size(), kVocabSize);
  EXPECT_EQ(tokenizer->vocab_size(), processor.GetPieceSize());
  EXPECT_EQ(tokenizer->bos_id(), processor.bos_id());
  EXPECT_EQ(tokenizer->eos_id(), processor.eos_id());

  // Held-out text (after the training bytes), line by line and as a whole.
  const std::string held_out = ReadText(corpus).substr(kTrainingBytes, 20'000);
  std::vector<std::string> texts = Lines(held_out);
  texts.push_back(held_out);
  texts.push_back("Ünïcödé 日本 text the model never saw.");
  for (const std::string& text : texts) {
    const std::vector<int32_t> ids = tokenizer->Encode(text);
    const std::vector<int> expected = processor.EncodeAsIds(text);
    ASSERT_EQ(ids, std::vector<int32_t>(expected.begin(), expected.end())) << text;
    EXPECT_EQ(tokenizer->Decode(ids), processor.DecodeIds(expected)) << text;
  }
  // Plain text (single spaces, no edge spaces, characters the model knows) comes back exactly.
  for (const std::string& line : Lines(held_out)) {
    if (line.find("  ") != std::string::npos || line.front() == ' ' || line.back() == ' ') continue;
    const std::vector<int32_t> ids = tokenizer->Encode(line);
    bool known = true;
    for (const int32_t id : ids) known = known && id != processor.unk_id();
    if (known) {
      EXPECT_EQ(tokenizer->Decode(ids), line);
    }
  }
  EXPECT_EQ(tokenizer->Decode({tokenizer->bos_id()}), "");
  EXPECT_THROW(tokenizer->DecodeToken(kVocabSize, -1), Error);
}

INSTANTIATE_TEST_SUITE_P(ModelTypes, SentencePieceTokenizerTest, testing::Values("bpe", "unigram"));

TEST(SentencePieceTokenizer, ByteFallbackPiecesDecodeToBytes) {
  ATQ_FIXTURE_OR_SKIP(corpus, "stories260K/tinystories_val.txt");
  TempDir dir;
  const std::string input = dir.File("train.txt");
  WriteFileText(input, ReadText(corpus).substr(0, kTrainingBytes));
  const std::string prefix = dir.File("bytes");
  ASSERT_TRUE(sentencepiece::SentencePieceTrainer::Train("--input=" + input + " --model_prefix=" + prefix +
                                                         " --vocab_size=400 --model_type=bpe --byte_fallback=true"
                                                         " --num_threads=1 --minloglevel=2")
                  .ok());
  const std::unique_ptr<Tokenizer> tokenizer = LoadSentencePieceTokenizer(prefix + ".model");
  sentencepiece::SentencePieceProcessor processor;
  ASSERT_TRUE(processor.Load(prefix + ".model").ok());
  const std::string text = "Lily saw 日本 and ß.";
  const std::vector<int32_t> ids = tokenizer->Encode(text);
  const std::vector<int> expected = processor.EncodeAsIds(text);
  EXPECT_EQ(ids, std::vector<int32_t>(expected.begin(), expected.end()));
  EXPECT_EQ(tokenizer->Decode(ids), text);
  EXPECT_EQ(tokenizer->Decode(ids), processor.DecodeIds(expected));
}

TEST(SentencePieceTokenizer, RejectsHostileFiles) {
  TempDir dir;
  const std::string missing = dir.File("missing.model");
  ExpectErrorNaming(ErrorMessageOf([&] { LoadSentencePieceTokenizer(missing); }), missing, {});
  const std::string empty = dir.File("empty.model");
  WriteFileText(empty, "");
  ExpectErrorNaming(ErrorMessageOf([&] { LoadSentencePieceTokenizer(empty); }), empty, {"empty"});
  const std::string garbage = dir.File("garbage.model");
  WriteFileText(garbage, "this is not a protobuf \xFF\xFF\xFF\xFF\x01\x02");
  ExpectErrorNaming(ErrorMessageOf([&] { LoadSentencePieceTokenizer(garbage); }), garbage, {"SentencePiece"});
  const std::string folder = dir.File("folder.model");
  std::filesystem::create_directory(folder);
  ExpectErrorNaming(ErrorMessageOf([&] { LoadSentencePieceTokenizer(folder); }), folder, {});

  ATQ_FIXTURE_OR_SKIP(corpus, "stories260K/tinystories_val.txt");
  const std::vector<uint8_t> model = ReadFileBytes(Train(dir, corpus, "bpe"));
  for (const size_t keep : {size_t{1}, size_t{7}, model.size() / 3, model.size() / 2, model.size() - 1}) {
    const std::string truncated = dir.File("truncated.model");
    WriteFileBytes(truncated, std::vector<uint8_t>(model.begin(), model.begin() + keep));
    ExpectErrorNaming(ErrorMessageOf([&] { LoadSentencePieceTokenizer(truncated); }), truncated, {"SentencePiece"});
  }
}

}  // namespace
}  // namespace atq
