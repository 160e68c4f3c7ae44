// Score-ordered BPE against llama.cpp and llama2.c: the stories260K vocabulary as llama.cpp's GGUF and as
// llama2.c's tok512.bin, llama.cpp's token count of tinystories_val.txt, run.c's greedy text, hand-checked merges on
// a small vocabulary, and hostile tokenizer.bin files and GGUF vocabularies.
#include "io/score_bpe_tokenizer.h"

#include <chrono>
#include <cmath>
#include <cstring>
#include <fstream>
#include <limits>
#include <sstream>
#include <string>
#include <vector>

#include <fmt/format.h>
#include <gtest/gtest.h>

#include "io/gguf.h"
#include "io/tokenizer.h"
#include "test_util.h"
#include "util/error.h"

namespace atq {
namespace {

using testutil::ErrorMessageOf;
using testutil::ExpectErrorNaming;
using testutil::TempDir;
using testutil::WriteFileBytes;

// llama-perplexity on tinystories_val.txt made 1535 chunks of 256 tokens and 767 of 512, the tail dropped (the
// stories260K README), so the whole file is 392,960..393,215 tokens with BOS.
constexpr size_t kLlamaCppTokensAtLeast = 1535 * 256;
constexpr size_t kLlamaCppTokensAtMost = 1536 * 256 - 1;
// The task is well under a second on one core; the bound leaves room for a loaded machine or a sanitizer build.
constexpr double kMaxSecondsForTinyStories = 10.0;
constexpr int32_t kStoriesVocabSize = 512;

std::string ReadText(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::ostringstream text;
  text << in.rdbuf();
  return text.str();
}

std::string ReplaceAll(std::string text, std::string_view from, std::string_view to) {
  for (size_t at = text.find(from); at != std::string::npos; at = text.find(from, at + to.size())) {
    text.replace(at, from.size(), to);
  }
  return text;
}

std::unique_ptr<Tokenizer> LoadStoriesGguf(const std::string& path) {
  const GgufFile gguf = GgufFile::Open(path);
  return LoadGgufTokenizer(gguf);
}

const ScoreBpeTokenizer& AsScoreBpe(const std::unique_ptr<Tokenizer>& tokenizer) {
  return dynamic_cast<const ScoreBpeTokenizer&>(*tokenizer);
}

TEST(ScoreBpeTokenizer, Tok512AndGgufVocabularyAgree) {
  ATQ_FIXTURE_OR_SKIP(gguf_path, "stories260K/stories260K-f32.gguf");
  ATQ_FIXTURE_OR_SKIP(tok512_path, "stories260K/tok512.bin");
  const std::unique_ptr<Tokenizer> gguf = LoadStoriesGguf(gguf_path);
  const std::unique_ptr<Tokenizer> llama2c = LoadLlama2cTokenizer(tok512_path, kStoriesVocabSize);
  const ScoreBpeTokenizer& from_gguf = AsScoreBpe(gguf);
  const ScoreBpeTokenizer& from_bin = AsScoreBpe(llama2c);
  ASSERT_EQ(from_gguf.vocab_size(), kStoriesVocabSize);
  ASSERT_EQ(from_bin.vocab_size(), kStoriesVocabSize);
  EXPECT_EQ(from_gguf.bos_id(), 1);
  EXPECT_EQ(from_gguf.eos_id(), 2);
  EXPECT_EQ(from_bin.bos_id(), 1);
  EXPECT_EQ(from_bin.eos_id(), 2);
  EXPECT_TRUE(from_gguf.add_space_prefix());
  // The special pieces are spelled differently: llama2.c exported SentencePiece's "\n<s>\n" forms.
  EXPECT_EQ(from_gguf.piece(0), "<unk>");
  EXPECT_EQ(from_bin.piece(0), "<unk>");
  EXPECT_EQ(from_gguf.piece(1), "<s>");
  EXPECT_EQ(from_bin.piece(1), "\n<s>\n");
  EXPECT_EQ(from_gguf.kind(1), PieceKind::kControl);
  EXPECT_EQ(from_gguf.kind(3), PieceKind::kByte);
  EXPECT_EQ(from_gguf.kind(300), PieceKind::kNormal);
  for (int32_t id = 3; id < kStoriesVocabSize; ++id) {
    EXPECT_EQ(from_gguf.piece(id), ReplaceAll(from_bin.piece(id), " ", kSpaceMark)) << "piece " << id;
    EXPECT_EQ(from_gguf.score(id), from_bin.score(id)) << "piece " << id;
    EXPECT_EQ(from_gguf.kind(id), from_bin.kind(id)) << "piece " << id;
  }
}

TEST(ScoreBpeTokenizer, TinyStoriesCountIsLlamaCpps) {
  ATQ_FIXTURE_OR_SKIP(gguf_path, "stories260K/stories260K-f32.gguf");
  ATQ_FIXTURE_OR_SKIP(text_path, "stories260K/tinystories_val.txt");
  const std::unique_ptr<Tokenizer> tokenizer = LoadStoriesGguf(gguf_path);
  std::string text = ReadText(text_path);
  // llama.cpp's -f drops one trailing newline of the prompt file.
  if (!text.empty() && text.back() == '\n') text.pop_back();
  const auto start = std::chrono::steady_clock::now();
  const std::vector<int32_t> ids = tokenizer->Encode(text);
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  const size_t with_bos = ids.size() + 1;
  EXPECT_GE(with_bos, kLlamaCppTokensAtLeast);
  EXPECT_LE(with_bos, kLlamaCppTokensAtMost);
  EXPECT_LT(seconds, kMaxSecondsForTinyStories);
  std::cout << "tinystories_val.txt: " << text.size() << " bytes -> " << with_bos << " tokens with BOS in " << seconds
            << " s\n";

  std::vector<int32_t> with_bos_ids = {tokenizer->bos_id()};
  with_bos_ids.insert(with_bos_ids.end(), ids.begin(), ids.end());
  EXPECT_EQ(tokenizer->Decode(with_bos_ids), text);
  EXPECT_EQ(tokenizer->Decode(ids), text);

  // llama2.c's copy of the same vocabulary tokenizes the same way.
  ATQ_FIXTURE_OR_SKIP(tok512_path, "stories260K/tok512.bin");
  EXPECT_EQ(LoadLlama2cTokenizer(tok512_path, kStoriesVocabSize)->Encode(text), ids);
}

TEST(ScoreBpeTokenizer, RunCGreedyTextRoundTrips) {
  ATQ_FIXTURE_OR_SKIP(greedy_path, "stories260K/greedy_256_runc.txt");
  ATQ_FIXTURE_OR_SKIP(tok512_path, "stories260K/tok512.bin");
  ATQ_FIXTURE_OR_SKIP(gguf_path, "stories260K/stories260K-f32.gguf");
  const std::string text = ReadText(greedy_path);
  ASSERT_FALSE(text.empty());
  const std::unique_ptr<Tokenizer> llama2c = LoadLlama2cTokenizer(tok512_path, kStoriesVocabSize);
  const std::unique_ptr<Tokenizer> gguf = LoadStoriesGguf(gguf_path);
  const std::vector<int32_t> ids = llama2c->Encode(text);
  EXPECT_EQ(gguf->Encode(text), ids);
  // run.c generates from BOS and prints each piece given the previous token.
  std::vector<int32_t> generated = {1};
  generated.insert(generated.end(), ids.begin(), ids.end());
  EXPECT_EQ(llama2c->Decode(generated), text);
  EXPECT_EQ(gguf->Decode(generated), text);
  for (const int32_t id : ids) {
    EXPECT_NE(id, 0) << "the greedy text should need no <unk>";
  }
}

TEST(ScoreBpeTokenizer, StoriesKnownPieces) {
  ATQ_FIXTURE_OR_SKIP(tok512_path, "stories260K/tok512.bin");
  const std::unique_ptr<Tokenizer> llama2c = LoadLlama2cTokenizer(tok512_path, kStoriesVocabSize);
  const ScoreBpeTokenizer& tokenizer = AsScoreBpe(llama2c);
  // " Once", " upon", " a", " time" are pieces 403, 407, 261, 378 of tok512.bin.
  EXPECT_EQ(tokenizer.Encode("Once upon a time"), (std::vector<int32_t>{403, 407, 261, 378}));
  EXPECT_EQ(tokenizer.Encode(""), (std::vector<int32_t>{}));
  // run.c's decode: after BOS the piece's leading space goes; <0x0A> is a newline.
  EXPECT_EQ(tokenizer.DecodeToken(403, 1), "Once");
  EXPECT_EQ(tokenizer.DecodeToken(403, 378), " Once");
  EXPECT_EQ(tokenizer.DecodeToken(3 + '\n', 378), "\n");
  EXPECT_EQ(tokenizer.DecodeToken(1, -1), "");
  EXPECT_EQ(tokenizer.DecodeToken(0, 5), "<unk>");
  EXPECT_THROW(tokenizer.DecodeToken(512, 1), Error);
  // A character outside the vocabulary falls back to its UTF-8 bytes.
  const std::vector<int32_t> ids = tokenizer.Encode("ß");
  EXPECT_EQ(ids, (std::vector<int32_t>{tokenizer.PieceId(" "), 3 + 0xC3, 3 + 0x9F}));
  EXPECT_EQ(tokenizer.Decode(ids), "ß");
}

// ---- a small vocabulary to check merges by hand ----

struct SmallIds {
  static constexpr int32_t kUnk = 0, kBos = 1, kEos = 2, kFirstByte = 3;
  static constexpr int32_t kSpace = 259, kA = 260, kB = 261, kC = 262, kAB = 263, kBC = 264, kSpaceA = 265, kABC = 266,
                           kAA = 267, kUser = 268;
};

ScoreVocabulary SmallVocabulary(bool with_bytes = true) {
  ScoreVocabulary vocabulary;
  vocabulary.source = "small vocabulary";
  const auto add = [&](std::string piece, float score, PieceKind kind) {
    vocabulary.pieces.push_back(std::move(piece));
    vocabulary.scores.push_back(score);
    vocabulary.kinds.push_back(kind);
  };
  add("<unk>", 0, PieceKind::kUnknown);
  add("<s>", 0, PieceKind::kControl);
  add("</s>", 0, PieceKind::kControl);
  for (int byte = 0; byte < 256; ++byte) {
    add(with_bytes ? fmt::format("<0x{:02X}>", byte) : fmt::format("unused{}", byte), 0,
        with_bytes ? PieceKind::kByte : PieceKind::kUnused);
  }
  add(std::string(kSpaceMark), -1, PieceKind::kNormal);
  add("a", -1, PieceKind::kNormal);
  add("b", -1, PieceKind::kNormal);
  add("c", -1, PieceKind::kNormal);
  add("ab", -3, PieceKind::kNormal);
  add("bc", -2, PieceKind::kNormal);
  add(std::string(kSpaceMark) + "a", -5, PieceKind::kNormal);
  add("abc", -4, PieceKind::kNormal);
  add("aa", -1, PieceKind::kNormal);
  add("<user>", 0, PieceKind::kUserDefined);
  vocabulary.unk_id = 0;
  vocabulary.bos_id = 1;
  vocabulary.eos_id = 2;
  return vocabulary;
}

TEST(ScoreBpeTokenizer, MergesHighestScoreFirstThenLeftmost) {
  using I = SmallIds;
  const ScoreBpeTokenizer tokenizer(SmallVocabulary());
  // ▁ a b c: "bc" (-2) beats "ab" (-3) and "▁a" (-5); then "abc" (-4) beats "▁a".
  EXPECT_EQ(tokenizer.Encode("abc"), (std::vector<int32_t>{I::kSpace, I::kABC}));
  EXPECT_EQ(tokenizer.Encode("ab"), (std::vector<int32_t>{I::kSpace, I::kAB}));
  // Equal scores: the leftmost pair first, so ▁ aa a.
  EXPECT_EQ(tokenizer.Encode("aaa"), (std::vector<int32_t>{I::kSpace, I::kAA, I::kA}));
  // Spaces become ▁; "▁b" is no piece.
  EXPECT_EQ(tokenizer.Encode("a b"), (std::vector<int32_t>{I::kSpaceA, I::kSpace, I::kB}));
  // Not in the vocabulary: one byte piece per UTF-8 byte.
  EXPECT_EQ(tokenizer.Encode("é"), (std::vector<int32_t>{I::kSpace, I::kFirstByte + 0xC3, I::kFirstByte + 0xA9}));
  // A broken sequence is cut as llama.cpp cuts it (a lead byte takes what it announces) and still comes out as bytes.
  EXPECT_EQ(tokenizer.Encode("\xE2"
                             "a"),
            (std::vector<int32_t>{I::kSpace, I::kFirstByte + 0xE2, I::kFirstByte + 'a'}));
  EXPECT_EQ(tokenizer.Encode(""), (std::vector<int32_t>{}));
}

TEST(ScoreBpeTokenizer, DecodesPiecesBytesAndSpecials) {
  using I = SmallIds;
  const ScoreBpeTokenizer tokenizer(SmallVocabulary());
  EXPECT_EQ(tokenizer.Decode({I::kSpaceA, I::kSpace, I::kB}), "a b");
  EXPECT_EQ(tokenizer.Decode({I::kBos, I::kSpaceA, I::kSpaceA, I::kEos}), "a a");
  EXPECT_EQ(tokenizer.Decode({I::kAB, I::kSpaceA}), "ab a");
  EXPECT_EQ(tokenizer.Decode({I::kA, I::kUnk, I::kUser, I::kFirstByte + 0x41}), "a<user>A");
  for (const std::string text : {"abc", "a b", " a  b ", "é\xFF", "aaa c",
                                 "\xE2"
                                 "a",
                                 "<user>"}) {
    EXPECT_EQ(tokenizer.Decode(tokenizer.Encode(text)), text) << text;
  }
  EXPECT_THROW(tokenizer.DecodeToken(-1, -1), Error);
  EXPECT_THROW(tokenizer.DecodeToken(tokenizer.vocab_size(), -1), Error);
}

TEST(ScoreBpeTokenizer, WithoutSpacePrefix) {
  using I = SmallIds;
  ScoreVocabulary vocabulary = SmallVocabulary();
  vocabulary.add_space_prefix = false;
  const ScoreBpeTokenizer tokenizer(std::move(vocabulary));
  EXPECT_EQ(tokenizer.Encode("ab"), (std::vector<int32_t>{I::kAB}));
  EXPECT_EQ(tokenizer.Decode({I::kSpaceA}), " a");
}

TEST(ScoreBpeTokenizer, ByteWithoutPieceIsUnknownOrAnError) {
  ScoreVocabulary vocabulary = SmallVocabulary(/*with_bytes=*/false);
  const ScoreBpeTokenizer with_unknown(vocabulary);
  EXPECT_EQ(with_unknown.Encode("z"), (std::vector<int32_t>{SmallIds::kSpace, SmallIds::kUnk}));
  vocabulary.unk_id = -1;
  const ScoreBpeTokenizer without_unknown(std::move(vocabulary));
  ExpectErrorNaming(ErrorMessageOf([&] { without_unknown.Encode("z"); }), "small vocabulary", {"0x7A"});
}

TEST(ScoreBpeTokenizer, RejectsInconsistentVocabularies) {
  const auto expect = [](ScoreVocabulary vocabulary, const std::vector<std::string>& needles) {
    ExpectErrorNaming(ErrorMessageOf([&] { ScoreBpeTokenizer tokenizer(std::move(vocabulary)); }), "small vocabulary",
                      needles);
  };
  ScoreVocabulary scores = SmallVocabulary();
  scores.scores.pop_back();
  expect(scores, {"scores"});
  ScoreVocabulary nan = SmallVocabulary();
  nan.scores[SmallIds::kC] = std::numeric_limits<float>::quiet_NaN();
  expect(nan, {"NaN"});
  ScoreVocabulary byte = SmallVocabulary();
  byte.kinds[SmallIds::kA] = PieceKind::kByte;
  expect(byte, {"'a'", "<0xXX>"});
  ScoreVocabulary bos = SmallVocabulary();
  bos.bos_id = 5000;
  expect(bos, {"BOS", "5000"});
  ScoreVocabulary kind = SmallVocabulary();
  kind.kinds[5] = static_cast<PieceKind>(9);
  expect(kind, {"type 9"});
  ScoreVocabulary empty;
  empty.source = "small vocabulary";
  expect(empty, {"no pieces"});
}

// ---- hostile llama2.c tokenizer.bin files ----

void AppendInt32(std::vector<uint8_t>& bytes, int32_t value) {
  uint8_t raw[4];
  std::memcpy(raw, &value, 4);
  bytes.insert(bytes.end(), raw, raw + 4);
}

void AppendToken(std::vector<uint8_t>& bytes, float score, const std::string& piece, int32_t length = -2) {
  uint8_t raw[4];
  std::memcpy(raw, &score, 4);
  bytes.insert(bytes.end(), raw, raw + 4);
  AppendInt32(bytes, length == -2 ? static_cast<int32_t>(piece.size()) : length);
  bytes.insert(bytes.end(), piece.begin(), piece.end());
}

TEST(ScoreBpeTokenizer, RejectsHostileLlama2cFiles) {
  TempDir dir;
  const std::string path = dir.File("tokenizer.bin");
  const auto expect = [&](const std::vector<uint8_t>& bytes, int32_t vocab_size,
                          const std::vector<std::string>& needles) {
    WriteFileBytes(path, bytes);
    ExpectErrorNaming(ErrorMessageOf([&] { LoadLlama2cTokenizer(path, vocab_size); }), path, needles);
  };
  // 8 pieces in 88 bytes: " ab" is reached through " a".
  std::vector<uint8_t> good;
  AppendInt32(good, 5);
  for (const char* piece : {"<unk>", "<s>", "</s>", " ", "a", "b"}) AppendToken(good, 0, piece);
  AppendToken(good, -1, " a");
  AppendToken(good, -2, " ab");
  WriteFileBytes(path, good);
  const std::unique_ptr<Tokenizer> tokenizer = LoadLlama2cTokenizer(path, 8);
  EXPECT_EQ(tokenizer->Encode("ab"), (std::vector<int32_t>{7}));
  EXPECT_EQ(tokenizer->Encode("ba"), (std::vector<int32_t>{3, 5, 4}));
  EXPECT_EQ(tokenizer->Decode({1, 7, 6}), "ab a");

  expect({}, 8, {"too short"});
  expect({1, 2}, 8, {"too short"});
  expect(good, 100, {"too short for 100 tokens"});
  expect(good, 7, {"left after 7 tokens"});
  expect(good, 0, {"must be positive"});
  expect(good, -7, {"must be positive"});
  std::vector<uint8_t> truncated(good.begin(), good.end() - 2);
  expect(truncated, 8, {"truncated", "token 7"});
  std::vector<uint8_t> negative;
  AppendInt32(negative, 5);
  AppendToken(negative, 0, "<unk>");
  AppendToken(negative, 0, "", -4);
  expect(negative, 2, {"token 1", "negative length -4"});
  std::vector<uint8_t> huge;
  AppendInt32(huge, 5);
  AppendToken(huge, 0, "", std::numeric_limits<int32_t>::max());
  expect(huge, 1, {"token 0", "longer than max_token_length"});
  std::vector<uint8_t> lying;
  AppendInt32(lying, 100);
  AppendToken(lying, 0, "", 90);
  expect(lying, 1, {"truncated", "token 0"});
  std::vector<uint8_t> negative_max;
  AppendInt32(negative_max, -1);
  AppendToken(negative_max, 0, "a");
  expect(negative_max, 1, {"negative max_token_length"});
  std::vector<uint8_t> nan;
  AppendInt32(nan, 5);
  AppendToken(nan, std::numeric_limits<float>::quiet_NaN(), "a");
  expect(nan, 1, {"NaN"});
  expect(good, std::numeric_limits<int32_t>::max(), {"too short"});
  ExpectErrorNaming(ErrorMessageOf([&] { LoadLlama2cTokenizer(dir.File("missing.bin"), 4); }), dir.File("missing.bin"),
                    {});
}

// ---- GGUF "llama" vocabularies ----

GgufMetadata SmallLlamaMetadata() {
  const ScoreVocabulary vocabulary = SmallVocabulary();
  GgufMetadata metadata;
  metadata.Set("tokenizer.ggml.model", "llama");
  metadata.Set("tokenizer.ggml.tokens", GgufArray(vocabulary.pieces));
  metadata.Set("tokenizer.ggml.scores", GgufArray(vocabulary.scores));
  std::vector<int32_t> types;
  for (const PieceKind kind : vocabulary.kinds) types.push_back(static_cast<int32_t>(kind));
  metadata.Set("tokenizer.ggml.token_type", GgufArray(types));
  metadata.Set("tokenizer.ggml.bos_token_id", uint32_t{1});
  metadata.Set("tokenizer.ggml.eos_token_id", uint32_t{2});
  metadata.Set("tokenizer.ggml.unknown_token_id", uint32_t{0});
  metadata.Set("tokenizer.ggml.padding_token_id", uint32_t{0xFFFFFFFF});
  return metadata;
}

std::unique_ptr<Tokenizer> LoadFromMetadata(GgufMetadata metadata) {
  GgufWriter writer("vocab.gguf");
  writer.metadata() = std::move(metadata);
  const GgufFile gguf = GgufFile::FromBytes("vocab.gguf", writer.Serialize());
  return LoadGgufTokenizer(gguf);
}

TEST(ScoreBpeTokenizer, GgufLlamaVocabularyEncodesLikeTheSameVocabularyBuiltDirectly) {
  const std::unique_ptr<Tokenizer> from_gguf = LoadFromMetadata(SmallLlamaMetadata());
  const ScoreBpeTokenizer direct(SmallVocabulary());
  for (const std::string text : {"abc", "aaa b", "é a"}) EXPECT_EQ(from_gguf->Encode(text), direct.Encode(text));
  EXPECT_EQ(from_gguf->bos_id(), 1);
  EXPECT_EQ(from_gguf->eos_id(), 2);

  GgufMetadata no_prefix = SmallLlamaMetadata();
  no_prefix.Set("tokenizer.ggml.add_space_prefix", false);
  EXPECT_EQ(LoadFromMetadata(std::move(no_prefix))->Encode("ab"), (std::vector<int32_t>{SmallIds::kAB}));

  GgufMetadata no_bos = SmallLlamaMetadata();
  no_bos.Set("tokenizer.ggml.bos_token_id", int32_t{-1});
  EXPECT_EQ(LoadFromMetadata(std::move(no_bos))->bos_id(), -1);
}

TEST(ScoreBpeTokenizer, RejectsHostileGgufVocabularies) {
  const auto expect = [](GgufMetadata metadata, const std::vector<std::string>& needles) {
    ExpectErrorNaming(ErrorMessageOf([&] { LoadFromMetadata(std::move(metadata)); }), "vocab.gguf", needles);
  };
  GgufMetadata short_scores = SmallLlamaMetadata();
  short_scores.Set("tokenizer.ggml.scores", GgufArray(std::vector<float>{1.0f, 2.0f}));
  expect(std::move(short_scores), {"tokenizer.ggml.scores", "2 entries"});
  GgufMetadata string_scores = SmallLlamaMetadata();
  string_scores.Set("tokenizer.ggml.scores", GgufArray(std::vector<std::string>{"x"}));
  expect(std::move(string_scores), {"tokenizer.ggml.scores"});
  GgufMetadata bad_type = SmallLlamaMetadata();
  std::vector<int32_t> types(269, 1);
  types[7] = 42;
  bad_type.Set("tokenizer.ggml.token_type", GgufArray(types));
  expect(std::move(bad_type), {"tokenizer.ggml.token_type", "token 7", "type 42"});
  GgufMetadata bad_bos = SmallLlamaMetadata();
  bad_bos.Set("tokenizer.ggml.bos_token_id", uint32_t{600});
  expect(std::move(bad_bos), {"tokenizer.ggml.bos_token_id", "600"});
  GgufMetadata no_tokens = SmallLlamaMetadata();
  no_tokens.Erase("tokenizer.ggml.tokens");
  expect(std::move(no_tokens), {"tokenizer.ggml.tokens", "missing"});
  GgufMetadata empty_tokens = SmallLlamaMetadata();
  empty_tokens.Set("tokenizer.ggml.tokens", GgufArray(std::vector<std::string>{}));
  expect(std::move(empty_tokens), {"tokenizer.ggml.tokens", "no tokens"});
  GgufMetadata bad_prefix = SmallLlamaMetadata();
  bad_prefix.Set("tokenizer.ggml.add_space_prefix", "yes");
  expect(std::move(bad_prefix), {"tokenizer.ggml.add_space_prefix"});
}

}  // namespace
}  // namespace atq
