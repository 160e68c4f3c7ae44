// Vision recipes and mixed precision: operation counts from real shapes, bit-width names, the threshold rule,
// the budgeted choice against brute force, and recipe files.
#include "eval/vision_experiment.h"

#include <filesystem>

#include <gtest/gtest.h>
#include <torch/torch.h>

#include "eval/classifier_work.h"
#include "models/classifiers.h"
#include "test_util.h"

namespace atq {
namespace {

TEST(ClassifierWorkTest, CountsFromTheRealShapes) {
  auto model = MakeClassifier("cnn", 1, 10);
  const std::vector<LayerWork> work = CountClassifierWork(*model, 1, 28);
  ASSERT_EQ(work.size(), 6u);
  // conv1: 32 filters of 1x3x3 over 28x28 (padding 1): 32 * 28 * 28 outputs, 9 MACs each.
  EXPECT_EQ(work[0].name, "conv1");
  EXPECT_EQ(work[0].outputs, 32 * 28 * 28);
  EXPECT_EQ(work[0].macs, 32 * 28 * 28 * 9);
  EXPECT_EQ(work[0].inputs, 28 * 28);
  EXPECT_EQ(work[0].weights, 32 * 9);
  // fc1 after two 2x2 poolings: 64 * 7 * 7 inputs to 128 outputs.
  EXPECT_EQ(work[4].name, "fc1");
  EXPECT_EQ(work[4].macs, 64 * 7 * 7 * 128);
  EXPECT_EQ(work[4].outputs, 128);

  // ViT-Tiny on 28x28 with 4x4 patches: 49 patches + the class token, 3 heads of 64; two attention products
  // per block of 3 * 50 * 50 * 64 MACs each.
  auto vit = MakeClassifier("vit-tiny", 1, 10);
  const std::vector<LayerWork> vit_work = CountClassifierWork(*vit, 1, 28);
  ASSERT_EQ(vit_work.size(), 50u + 24u);
  const auto scores = std::find_if(vit_work.begin(), vit_work.end(), [](const LayerWork& w) {
    return w.name == "blocks.0.attn.scores";
  });
  ASSERT_NE(scores, vit_work.end());
  EXPECT_EQ(scores->macs, 3 * 50 * 50 * 64);
  EXPECT_EQ(scores->operands, MacOperands::kActivationTimesActivation);
  const auto qkv = std::find_if(vit_work.begin(), vit_work.end(), [](const LayerWork& w) { return w.name == "blocks.0.attn.qkv"; });
  ASSERT_NE(qkv, vit_work.end());
  EXPECT_EQ(qkv->macs, 50 * 192 * 576);
}

TEST(VisionSensitivityTest, BitWidthNamesRoundTrip) {
  for (const std::string name : {"W8A8", "W4A32", "WtA8", "W32A32", "W2A16"}) {
    EXPECT_EQ(BitWidthsName(ParseBitWidths(name)), name);
  }
  EXPECT_EQ(BitWidthsName(ParseBitWidths("W4")), "W4A32");
  for (const std::string bad : {"", "A8", "W9A8", "W4A1", "W4A", "Wx", "W44A8"}) {
    EXPECT_FALSE(testutil::ErrorMessageOf([&] { ParseBitWidths(bad); }).empty()) << bad;
  }
}

VisionSensitivity SmallTable() {
  VisionSensitivity table;
  table.candidates = {{8, 8, false}, {6, 6, false}, {4, 4, false}};
  table.layers = {"a", "b", "c", "d"};
  table.sensitivity = {{0.01, 0.1, 1.0}, {0.001, 0.01, 0.3}, {0.0001, 0.001, 0.04}, {0.0, 0.0, 0.01}};
  table.bytes = {{8, 6, 4}, {8, 6, 4}, {16, 12, 8}, {8, 6, 4}};
  return table;
}

TEST(VisionSensitivityTest, ThresholdRuleByRelativeSensitivity) {
  // Relative to the largest at W4A4 (1.0): 1.0 -> high, 0.3 -> high (>= 0.25), 0.04 -> low (< 0.05), 0.01 -> low.
  EXPECT_EQ(AssignByThreshold(SmallTable(), 0.25, 0.05), (std::vector<size_t>{0, 0, 2, 2}));
  EXPECT_EQ(AssignByThreshold(SmallTable(), 0.5, 0.03), (std::vector<size_t>{0, 1, 1, 2}));
  VisionSensitivity two = SmallTable();
  two.candidates.pop_back();
  EXPECT_FALSE(testutil::ErrorMessageOf([&] { AssignByThreshold(two, 0.25, 0.05); }).empty());
}

TEST(VisionSensitivityTest, BudgetedChoiceMatchesBruteForce) {
  const VisionSensitivity table = SmallTable();
  // Budgets half a byte above whole numbers: rounding each cost up to the solver's units cannot exclude a plan.
  for (const double budget : {20.5, 24.5, 27.5, 30.5, 34.5, 40.5}) {
    double best = 1e30;
    for (int code = 0; code < 81; ++code) {  // every assignment of 3 candidates to 4 layers
      double cost = 0, loss = 0;
      for (int l = 0, c = code; l < 4; ++l, c /= 3) {
        cost += table.bytes[l][c % 3];
        loss += table.sensitivity[l][c % 3];
      }
      if (cost <= budget) best = std::min(best, loss);
    }
    const std::vector<size_t> choice = AssignUnderBudget(table, table.bytes, 0, budget);
    double cost = 0, loss = 0;
    for (size_t l = 0; l < 4; ++l) {
      cost += table.bytes[l][choice[l]];
      loss += table.sensitivity[l][choice[l]];
    }
    EXPECT_LE(cost, budget);
    EXPECT_DOUBLE_EQ(loss, best) << budget;
  }
  EXPECT_NE(testutil::ErrorMessageOf([&] { AssignUnderBudget(table, table.bytes, 5, 24); }).find("budget"),
            std::string::npos);
}

TEST(VisionRecipeTest, FilesAndSettingsAreChecked) {
  testutil::TempDir dir;
  const std::string path = (std::filesystem::path(dir.path()) / "plan.yaml").string();
  testutil::WriteFileText(path, "base: {abits: 6, granularity: tensor}\nconfigs:\n  - {name: fp, fp32: true}\n"
                                "  - {name: m, mixed: energy, budget_like: W6A6, candidates: 'W8A8,W6A6,W4A4'}\n");
  const std::vector<VisionRecipe> recipes = ReadVisionRecipes(path);
  ASSERT_EQ(recipes.size(), 2u);
  EXPECT_TRUE(recipes[0].full_precision);
  EXPECT_EQ(recipes[1].ptq.bits.activations, 6);
  EXPECT_FALSE(recipes[1].ptq.per_channel);
  EXPECT_EQ(recipes[1].mixed, "energy");
  EXPECT_EQ(recipes[1].candidates.size(), 3u);
  for (const std::string& bad : {std::string("configs:\n  - {name: a, wbitz: 4}\n"),
                                 std::string("configs:\n  - {name: a}\n  - {name: a}\n"),
                                 std::string("configs:\n  - {wbits: 4}\n"), std::string("config: []\n"),
                                 std::string("configs:\n  - {name: a, range: widest}\n"),
                                 std::string("configs:\n  - {name: a, candidates: 'W8A8,W9A9'}\n"), std::string("[")}) {
    testutil::WriteFileText(path, bad);
    const std::string message = testutil::ErrorMessageOf([&] { ReadVisionRecipes(path); });
    EXPECT_NE(message.find("plan.yaml"), std::string::npos) << bad << " -> " << message;
  }
  EXPECT_EQ(ParseVisionRecipe({{"wbits", "4"}, {"abits", "8"}}, "cli").name, "W4A8 channel mse");
  const VisionRecipe edges = ParseVisionRecipe({{"ternary", "true"}, {"first_last", "W8A8"}}, "cli");
  EXPECT_EQ(edges.name, "WtA8 channel mse first-last W8A8");
  ASSERT_TRUE(edges.first_last.has_value());
  EXPECT_EQ(edges.first_last->weights, 8);
  EXPECT_NE(testutil::ErrorMessageOf([] { ParseVisionRecipe({{"first_last", "W9A8"}}, "cli"); }).find("first_last"),
            std::string::npos);
  EXPECT_NE(testutil::ErrorMessageOf([] {
              ParseVisionRecipe({{"first_last", "W8A8"}, {"mixed", "threshold"}}, "cli");
            }).find("give one"),
            std::string::npos);
}

TEST(ClassifierWorkTest, RecipeBitsFollowTheReport) {
  auto model = MakeClassifier("vit-tiny", 1, 10);
  const std::vector<LayerWork> work = CountClassifierWork(*model, 1, 28);
  VisionPtqReport report;
  for (const auto& [name, layer] : model->QuantLayers()) report.layers.push_back({name, 0, {8, 8, false}});
  report.layers[1].bits = {2, 8, true};  // a ternary layer (trained, or by ptq)
  const std::vector<LayerBits> bits = RecipeBits(work, report, 6);
  ASSERT_EQ(bits.size(), work.size());
  for (size_t i = 0; i < work.size(); ++i) {
    if (work[i].operands == MacOperands::kActivationTimesActivation) {
      EXPECT_EQ(bits[i].activations, 6) << work[i].name;
    } else if (work[i].name == report.layers[1].name) {
      EXPECT_EQ(bits[i].weights, 2);
    } else {
      EXPECT_EQ(bits[i].weights, 8) << work[i].name;
    }
  }
  report.layers.pop_back();
  EXPECT_NE(testutil::ErrorMessageOf([&] { RecipeBits(work, report, 6); }).find("missing"), std::string::npos);
}

}  // namespace
}  // namespace atq
