// Mixed precision: the budgeted allocation against brute force, the keep-top-k policy, candidate grid syntax,
// and sensitivities on a small random model (more bits, less sensitive; the plan stays within its budget).
#include "quant/mixed_precision.h"

#include <filesystem>
#include <limits>
#include <random>

#include <gtest/gtest.h>
#include <torch/torch.h>

#include "quant/recipe.h"
#include "byte_tokenizer.h"
#include "test_util.h"

namespace atq {
namespace {

using testutil::ByteTokenizer;

double TotalSensitivity(const std::vector<LayerSensitivity>& layers, const std::vector<size_t>& choice) {
  double total = 0;
  for (size_t l = 0; l < layers.size(); ++l) total += layers[l].sensitivity[choice[l]];
  return total;
}

int64_t TotalBytes(const std::vector<LayerSensitivity>& layers, const std::vector<size_t>& choice) {
  int64_t total = 0;
  for (size_t l = 0; l < layers.size(); ++l) total += layers[l].bytes[choice[l]];
  return total;
}

TEST(AllocateBitsTest, MatchesBruteForce) {
  // 5 layers of 8192 weights at 4 bits: a 20480-byte budget, 5 bytes per DP unit; sizes are multiples of 5, so
  // the DP's rounding loses nothing and its optimum must equal the exhaustive one.
  std::mt19937 random(7);
  for (int trial = 0; trial < 20; ++trial) {
    std::vector<LayerSensitivity> layers(5);
    for (LayerSensitivity& layer : layers) {
      layer.weights = 8192;
      int64_t bytes = 5 * std::uniform_int_distribution<int>(200, 400)(random);
      double sensitivity = std::uniform_real_distribution<double>(1, 10)(random);
      for (int k = 0; k < 3; ++k) {  // more bytes, less sensitivity
        layer.bytes.push_back(bytes);
        layer.sensitivity.push_back(sensitivity);
        bytes += 5 * std::uniform_int_distribution<int>(100, 600)(random);
        sensitivity *= std::uniform_real_distribution<double>(0.05, 0.6)(random);
      }
    }
    double best = std::numeric_limits<double>::infinity();
    for (int code = 0; code < 243; ++code) {
      std::vector<size_t> choice;
      for (int l = 0, c = code; l < 5; ++l, c /= 3) choice.push_back(static_cast<size_t>(c % 3));
      if (TotalBytes(layers, choice) <= 20480) best = std::min(best, TotalSensitivity(layers, choice));
    }
    if (best == std::numeric_limits<double>::infinity()) {
      EXPECT_FALSE(testutil::ErrorMessageOf([&] { AllocateBits(layers, 4.0); }).empty());
      continue;
    }
    const std::vector<size_t> choice = AllocateBits(layers, 4.0);
    EXPECT_LE(TotalBytes(layers, choice), 20480);
    EXPECT_NEAR(TotalSensitivity(layers, choice), best, 1e-9 * best) << "trial " << trial;
  }
}

TEST(AllocateBitsTest, KeepMostSensitiveRaisesTheTopK) {
  std::vector<LayerSensitivity> layers = {{"a", 10, {1, 2}, {0.5, 0.1}},
                                          {"b", 10, {1, 2}, {3.0, 0.2}},
                                          {"c", 10, {1, 2}, {1.0, 0.1}}};
  EXPECT_EQ(KeepMostSensitive(layers, 0, 1, 2), std::vector<size_t>({0, 1, 1}));
  EXPECT_EQ(KeepMostSensitive(layers, 0, 1, 0), std::vector<size_t>({0, 0, 0}));
}

TEST(CandidateGridTest, ParsesKindsAndSuffixes) {
  WeightGrid base;
  base.granularity = Granularity::kGroup;
  base.group_size = 128;
  const std::vector<WeightGrid> grids = ParseCandidateGrids("ternary/base3/channel,3,8/g32/asym", base);
  ASSERT_EQ(grids.size(), 3u);
  EXPECT_EQ(StorageType(grids[0]), QuantType::kTernary1_6);
  EXPECT_EQ(grids[0].granularity, Granularity::kChannel);
  EXPECT_EQ(grids[1].bits, 3);
  EXPECT_EQ(grids[1].group_size, 128);
  EXPECT_EQ(grids[2].group_size, 32);
  EXPECT_FALSE(grids[2].symmetric);
  for (const char* bad : {"9", "ternary/g", "4/fast", ""}) {
    EXPECT_FALSE(testutil::ErrorMessageOf([&] { ParseCandidateGrids(bad, base); }).empty()) << bad;
  }
}

TEST(MixedPrecisionTest, SensitivityFallsWithBitsAndThePlanFitsItsBudget) {
  testutil::TempDir dir;
  std::string text;
  for (int line = 0; line < 300; ++line) text += "a sentence of calibration text number " + std::to_string(line) + "\n";
  const std::string path = (std::filesystem::path(dir.path()) / "calib.txt").string();
  testutil::WriteFileText(path, text);
  LmConfig config;
  config.arch = LmArch::kLlama;
  config.vocab_size = 256;
  config.hidden_size = 32;
  config.num_layers = 2;
  config.num_heads = 4;
  config.num_kv_heads = 2;
  config.head_dim = 8;
  config.intermediate_size = 64;
  config.max_positions = 64;
  ByteTokenizer tokenizer;
  QuantizeRecipe recipe;
  recipe.settings = {{"method", "gptq"}, {"group_size", "32"}, {"calib", path}, {"nsamples", "4"},
                     {"seqlen", "32"},   {"fisher_samples", "2"}};
  for (const SensitivityScore score : {SensitivityScore::kFisher, SensitivityScore::kOutput}) {
    auto model = MakeCausalLm(config);
    const LmQuantizeOptions options = BuildQuantizeOptions(recipe, "test");
    const auto candidates = ParseCandidateGrids("ternary,4,8", options.recipe.grid);
    const auto before = model->named_parameters()["model.layers.0.mlp.up_proj.weight"].clone();
    const std::vector<LayerSensitivity> layers = MeasureSensitivity(*model, tokenizer, options, candidates, score);
    EXPECT_TRUE(torch::equal(before, model->named_parameters()["model.layers.0.mlp.up_proj.weight"]));
    ASSERT_EQ(layers.size(), 14u);
    for (const LayerSensitivity& layer : layers) {
      EXPECT_GT(layer.sensitivity[0], layer.sensitivity[1]) << layer.name;
      EXPECT_GT(layer.sensitivity[1], layer.sensitivity[2]) << layer.name;
      EXPECT_LT(layer.bytes[0], layer.bytes[1]) << layer.name;
    }
  }
  auto model = MakeCausalLm(config);
  recipe.settings["mixed_candidates"] = "ternary,4,8";
  recipe.settings["mixed_budget"] = "4.5";
  const LmQuantizeResult result = QuantizeLanguageModel(*model, tokenizer, BuildQuantizeOptions(recipe, "test"));
  ASSERT_FALSE(result.mixed_plan.is_null());
  EXPECT_LE(result.mixed_plan["bits_per_weight"].get<double>(), 4.5);
  EXPECT_LE(result.ToJson()["bits_per_weight"].get<double>(), 4.5);
  std::set<std::string> types;
  for (const LayerReport& layer : result.layers) types.insert(layer.type);
  EXPECT_GT(types.size(), 1u);  // a budget between the candidates mixes them

  // A cache measures once per model and setting: another budget reuses it, other candidates measure anew.
  SensitivityCache cache;
  std::vector<nlohmann::json> plans;
  for (const auto& [candidates, budget] : std::vector<std::pair<std::string, std::string>>{
           {"ternary,4,8", "4.5"}, {"ternary,4,8", "6"}, {"ternary,8", "6"}}) {
    auto fresh = MakeCausalLm(config);
    recipe.settings["mixed_candidates"] = candidates;
    recipe.settings["mixed_budget"] = budget;
    LmQuantizeOptions options = BuildQuantizeOptions(recipe, "test");
    options.sensitivity_cache = &cache;
    plans.push_back(QuantizeLanguageModel(*fresh, tokenizer, options).mixed_plan);
  }
  EXPECT_EQ(cache.entries.size(), 2u);
  EXPECT_EQ(plans[0]["layers"][0]["sensitivity"], plans[1]["layers"][0]["sensitivity"]);
  EXPECT_GT(plans[1]["bits_per_weight"].get<double>(), plans[0]["bits_per_weight"].get<double>());
}

}  // namespace
}  // namespace atq
