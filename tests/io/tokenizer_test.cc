// What every tokenizer shares: Decode as concatenated DecodeToken with the previous id, and LoadGgufTokenizer's
// dispatch on tokenizer.ggml.model (GPT-2 and llama vocabularies are tested beside their tokenizers).
#include "io/tokenizer.h"

#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "io/gguf.h"
#include "io/score_bpe_tokenizer.h"
#include "test_util.h"

namespace atq {
namespace {

using testutil::ErrorMessageOf;
using testutil::ExpectErrorNaming;

// Records the `previous` each DecodeToken call receives.
class RecordingTokenizer : public Tokenizer {
 public:
  std::vector<int32_t> Encode(std::string_view) const override { return {}; }
  std::string DecodeToken(int32_t id, int32_t previous) const override {
    return "[" + std::to_string(previous) + ">" + std::to_string(id) + "]";
  }
  int32_t vocab_size() const override { return 10; }
  int32_t bos_id() const override { return -1; }
  int32_t eos_id() const override { return -1; }
};

TEST(Tokenizer, DecodePassesThePreviousId) {
  const RecordingTokenizer tokenizer;
  EXPECT_EQ(tokenizer.Decode({}), "");
  EXPECT_EQ(tokenizer.Decode({4, 7, 7}), "[-1>4][4>7][7>7]");
}

GgufFile FileWithModel(const std::string& model) {
  GgufWriter writer("model.gguf");
  writer.metadata().Set("general.architecture", "llama");
  if (!model.empty()) writer.metadata().Set("tokenizer.ggml.model", model);
  writer.metadata().Set("tokenizer.ggml.tokens", GgufArray(std::vector<std::string>{"<unk>", "a"}));
  return GgufFile::FromBytes("model.gguf", writer.Serialize());
}

TEST(GgufTokenizer, DispatchesOnTheModelType) {
  const GgufFile llama = FileWithModel("llama");
  const std::unique_ptr<Tokenizer> tokenizer = LoadGgufTokenizer(llama);
  ASSERT_NE(dynamic_cast<const ScoreBpeTokenizer*>(tokenizer.get()), nullptr);
  EXPECT_EQ(tokenizer->vocab_size(), 2);
  // Scores and types are optional, as in llama.cpp; BOS/EOS default to 1 and 2 where the vocabulary has them.
  EXPECT_EQ(tokenizer->bos_id(), 1);
  EXPECT_EQ(tokenizer->eos_id(), -1);

  ExpectErrorNaming(ErrorMessageOf([] { LoadGgufTokenizer(FileWithModel("bert")); }), "model.gguf",
                    {"'bert'", "tokenizer.ggml.model", "not supported"});
  ExpectErrorNaming(ErrorMessageOf([] { LoadGgufTokenizer(FileWithModel("t5")); }), "model.gguf", {"'t5'"});
  ExpectErrorNaming(ErrorMessageOf([] { LoadGgufTokenizer(FileWithModel("")); }), "model.gguf",
                    {"tokenizer.ggml.model", "missing"});
}

TEST(GgufTokenizer, ReadsTheStoriesVocabularyFromEveryQuantizedFile) {
  ATQ_FIXTURE_OR_SKIP(f32, "stories260K/stories260K-f32.gguf");
  const std::vector<int32_t> expected = LoadGgufTokenizer(GgufFile::Open(f32))->Encode("Lily had a big red ball.");
  for (const std::string name : {"stories260K-q8_0.gguf", "stories260K-q4_0.gguf", "stories260K-tq2_0.gguf"}) {
    ATQ_FIXTURE_OR_SKIP(path, "stories260K/" + name);
    EXPECT_EQ(LoadGgufTokenizer(GgufFile::Open(path))->Encode("Lily had a big red ball."), expected) << name;
  }
}

}  // namespace
}  // namespace atq
