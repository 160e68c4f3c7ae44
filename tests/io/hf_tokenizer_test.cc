// tokenizer.json on hand-checked cases (merges by rank and leftmost, byte fallback, fused unknowns, added tokens
// matched before the model, the decoder chain) and on broken or unsupported files, which must name the file and
// the component. The real files are held against Tokenizers.js in tests/io/tokenizers_js_test.py.
#include "io/hf_tokenizer.h"

#include <string>
#include <vector>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "io/tokenizer.h"
#include "test_util.h"

namespace atq {
namespace {

using testutil::ErrorMessageOf;
using testutil::ExpectErrorNaming;
using testutil::TempDir;
using testutil::WriteFileText;

// A SentencePiece-style BPE as Llama 2's tokenizer.json spells it, with a vocabulary small enough to merge by hand.
nlohmann::json SmallSentencePieceStyle() {
  return nlohmann::json::parse(R"({
    "version": "1.0",
    "added_tokens": [
      {"id": 1, "content": "<s>", "single_word": false, "lstrip": false, "rstrip": false, "normalized": false, "special": true}
    ],
    "normalizer": {"type": "Sequence", "normalizers": [
      {"type": "Prepend", "prepend": "\u2581"},
      {"type": "Replace", "pattern": {"String": " "}, "content": "\u2581"}]},
    "pre_tokenizer": null,
    "post_processor": {"type": "TemplateProcessing", "single": [{"SpecialToken": {"id": "<s>", "type_id": 0}},
      {"Sequence": {"id": "A", "type_id": 0}}]},
    "decoder": {"type": "Sequence", "decoders": [
      {"type": "Replace", "pattern": {"String": "\u2581"}, "content": " "},
      {"type": "ByteFallback"}, {"type": "Fuse"}, {"type": "Strip", "content": " ", "start": 1, "stop": 0}]},
    "model": {"type": "BPE", "dropout": null, "unk_token": "<unk>", "fuse_unk": true, "byte_fallback": true,
      "vocab": {"<unk>": 0, "<s>": 1, "</s>": 2, "\u2581": 3, "a": 4, "b": 5, "\u2581a": 6, "ab": 7, "\u2581ab": 8,
                "<0xC3>": 9, "<0xA9>": 10},
      "merges": ["\u2581 a", "a b", "\u2581a b"]}
  })");
}

std::string Write(const TempDir& dir, const nlohmann::json& tokenizer) {
  const std::string path = dir.File("tokenizer.json");
  WriteFileText(path, tokenizer.dump());
  return path;
}

TEST(HfTokenizer, MergesByRankThenLeftmostWithByteFallback) {
  TempDir dir;
  const auto tokenizer = LoadHfTokenizer(Write(dir, SmallSentencePieceStyle()), "");
  // "▁ab▁aé": both "▁ a" pairs merge first (rank 0, leftmost first), then "▁a b" (rank 2); é has no piece and
  // falls back to its two bytes.
  EXPECT_EQ(tokenizer->Encode("ab a\xC3\xA9"), (std::vector<int32_t>{8, 6, 9, 10}));
  EXPECT_EQ(tokenizer->Decode({8, 6, 9, 10}), "ab a\xC3\xA9");  // leading space of the prepended ▁ stripped
  EXPECT_EQ(tokenizer->bos_id(), 1);
  EXPECT_TRUE(tokenizer->add_bos());  // from the template, there being no tokenizer_config.json
}

TEST(HfTokenizer, AddedTokensSplitBeforeTheNormalizer) {
  TempDir dir;
  const auto tokenizer = LoadHfTokenizer(Write(dir, SmallSentencePieceStyle()), "");
  // "a" -> "▁a"; "<s>" is matched in the raw text; "b" -> "▁b" (no merge makes "▁b").
  EXPECT_EQ(tokenizer->Encode("a<s>b"), (std::vector<int32_t>{6, 1, 3, 5}));
  EXPECT_EQ(tokenizer->Decode({6, 1, 3, 5}), "a b");  // special tokens skipped, as skip_special_tokens does
}

TEST(HfTokenizer, UnknownCharactersFuseIntoOneUnknownWithoutByteFallback) {
  nlohmann::json json = SmallSentencePieceStyle();
  json["model"]["byte_fallback"] = false;
  TempDir dir;
  const auto tokenizer = LoadHfTokenizer(Write(dir, json), "");
  EXPECT_EQ(tokenizer->Encode("ax\xC3\xA9"), (std::vector<int32_t>{6, 0}));
  json["model"]["fuse_unk"] = false;
  const auto unfused = LoadHfTokenizer(Write(dir, json), "");
  EXPECT_EQ(unfused->Encode("ax\xC3\xA9"), (std::vector<int32_t>{6, 0, 0}));
}

TEST(HfTokenizer, ConfigSetsBosEosAndAddBos) {
  TempDir dir;
  const std::string path = Write(dir, SmallSentencePieceStyle());
  const std::string config = dir.File("tokenizer_config.json");
  WriteFileText(config, R"({"bos_token": {"content": "<s>"}, "eos_token": "</s>", "add_bos_token": false})");
  const auto tokenizer = LoadHfTokenizer(path, config);
  EXPECT_EQ(tokenizer->bos_id(), 1);
  EXPECT_EQ(tokenizer->eos_id(), 2);
  EXPECT_FALSE(tokenizer->add_bos());
  const auto found = LoadTokenizerAt(dir.path());  // the folder finds both files
  EXPECT_EQ(found->eos_id(), 2);
}

TEST(HfTokenizer, UnsupportedComponentsAreNamed) {
  TempDir dir;
  const struct {
    const char* member;
    nlohmann::json value;
    std::vector<std::string> needles;
  } cases[] = {
      {"normalizer", {{"type", "BertNormalizer"}}, {"normalizer", "'BertNormalizer'", "NFC"}},
      {"pre_tokenizer", {{"type", "Whitespace"}}, {"pre_tokenizer", "'Whitespace'", "Metaspace"}},
      {"decoder", {{"type", "CTC"}}, {"decoder", "'CTC'", "ByteFallback"}},
  };
  for (const auto& c : cases) {
    nlohmann::json json = SmallSentencePieceStyle();
    json[c.member] = c.value;
    const std::string path = Write(dir, json);
    ExpectErrorNaming(ErrorMessageOf([&] { LoadHfTokenizer(path, ""); }), path, c.needles);
  }
  nlohmann::json json = SmallSentencePieceStyle();
  json["model"]["type"] = "WordPiece";
  const std::string path = Write(dir, json);
  ExpectErrorNaming(ErrorMessageOf([&] { LoadHfTokenizer(path, ""); }), path, {"model type 'WordPiece'"});
}

TEST(HfTokenizer, BrokenFilesAreNamed) {
  TempDir dir;
  nlohmann::json json = SmallSentencePieceStyle();
  json["model"]["merges"].push_back("a zz");
  std::string path = Write(dir, json);
  ExpectErrorNaming(ErrorMessageOf([&] { LoadHfTokenizer(path, ""); }), path, {"merges[3]", "'zz'"});

  json = SmallSentencePieceStyle();
  json["model"]["vocab"].erase("</s>");
  path = Write(dir, json);
  ExpectErrorNaming(ErrorMessageOf([&] { LoadHfTokenizer(path, ""); }), path, {"id 2 has no token"});

  json = SmallSentencePieceStyle();
  json["pre_tokenizer"] = {{"type", "Split"}, {"pattern", {{"Regex", "(unclosed"}}}, {"behavior", "Isolated"}};
  path = Write(dir, json);
  ExpectErrorNaming(ErrorMessageOf([&] { LoadHfTokenizer(path, ""); }), path, {"pre_tokenizer.pattern", "PCRE2"});

  WriteFileText(path, "{\"model\": ");
  ExpectErrorNaming(ErrorMessageOf([&] { LoadHfTokenizer(path, ""); }), path, {});
}

}  // namespace
}  // namespace atq
