// Block-by-block quantization of small random language models, the packed checkpoint round trip, and recipe
// files: the quantized model's weights are exactly what the packed file holds, and bad recipes are rejected
// naming the file and the setting.
#include "quant/lm_quantizer.h"

#include <filesystem>
#include <map>
#include <string>

#include <gtest/gtest.h>
#include <torch/torch.h>

#include "io/tensor_file.h"
#include "models/lm_loader.h"
#include "quant/lm_calibration.h"
#include "quant/packed_lm.h"
#include "quant/recipe.h"
#include "byte_tokenizer.h"
#include "test_util.h"

namespace atq {
namespace {

using testutil::ByteTokenizer;

LmConfig TinyConfig(LmArch arch) {
  LmConfig config;
  config.arch = arch;
  config.vocab_size = 256;
  config.hidden_size = 32;
  config.num_layers = 2;
  config.num_heads = 4;
  config.num_kv_heads = arch == LmArch::kLlama ? 2 : 4;
  config.head_dim = 8;
  config.intermediate_size = 48;
  config.max_positions = 64;
  return config;
}

std::string CalibrationText(const testutil::TempDir& dir) {
  std::string text;
  for (int line = 0; line < 200; ++line) {
    text += "the quick brown fox " + std::to_string(line * 7919 % 1000) + " jumps over the lazy dog\n";
  }
  const std::string path = (std::filesystem::path(dir.path()) / "calib.txt").string();
  testutil::WriteFileText(path, text);
  return path;
}

LmQuantizeOptions Gptq4Options(const std::string& text) {
  QuantizeRecipe recipe;
  recipe.settings = {{"method", "gptq"}, {"bits", "4"}, {"group_size", "16"}, {"calib", text},
                     {"nsamples", "6"},  {"seqlen", "48"}, {"batch_size", "4"}};
  return BuildQuantizeOptions(recipe, "test");
}

torch::Tensor Ids() { return torch::randint(0, 256, {2, 40}, torch::kInt64); }

TEST(LmQuantizerTest, StagedForwardEqualsForward) {
  for (const LmArch arch : {LmArch::kGpt2, LmArch::kLlama}) {
    auto model = MakeCausalLm(TinyConfig(arch));
    model->eval();
    torch::NoGradGuard no_grad;
    const torch::Tensor ids = Ids();
    torch::Tensor x = model->Embed(ids);
    for (int64_t block = 0; block < 2; ++block) x = model->ForwardBlock(static_cast<size_t>(block), x);
    EXPECT_TRUE(torch::allclose(model->Head(x), model->forward(ids), 1e-5, 1e-6)) << LmArchName(arch);
  }
}

TEST(LmQuantizerTest, PackedCheckpointReloadsBitIdentically) {
  testutil::TempDir dir;
  const std::string text = CalibrationText(dir);
  ByteTokenizer tokenizer;
  for (const LmArch arch : {LmArch::kGpt2, LmArch::kLlama}) {
    SCOPED_TRACE(LmArchName(arch));
    auto model = MakeCausalLm(TinyConfig(arch));
    LmQuantizeOptions options = Gptq4Options(text);
    options.embedding_type = QuantType::kQ8_0;
    const LmQuantizeResult result = QuantizeLanguageModel(*model, tokenizer, options);
    EXPECT_EQ(result.layers.size(), QuantizableLayers(*model).size());
    EXPECT_EQ(result.layers.size(), arch == LmArch::kLlama ? 14u : 8u);
    EXPECT_EQ(result.calibration_tokens, 6 * 48);
    for (const LayerReport& layer : result.layers) {
      EXPECT_EQ(layer.type, "u4s") << layer.name;
      EXPECT_GE(layer.output_error, 0) << layer.name;
      EXPECT_LT(layer.output_error, 0.05) << layer.name;
    }
    PackedLmOptions pack;
    pack.float_type = QuantType::kF32;
    const std::string out = (std::filesystem::path(dir.path()) / LmArchName(arch)).string();
    const PackedLmSizes sizes = SavePackedLm(*model, result.packed, out, pack);
    EXPECT_GT(sizes.packed_bytes, 0);

    const TensorFile file = TensorFile::Open(out);
    const std::string first = result.layers.front().name;
    ASSERT_NE(file.Find(first), nullptr);
    EXPECT_EQ(file.Find(first)->info->type, QuantType::kUniform4Sym);
    EXPECT_EQ(file.Find(first)->info->layout.group_size, 16);

    const LanguageModel reloaded = LoadLanguageModel(out);
    const auto expected = model->named_parameters();
    for (const auto& parameter : reloaded.model->named_parameters()) {
      EXPECT_TRUE(torch::equal(parameter.value(), expected[parameter.key()])) << parameter.key();
    }
    torch::NoGradGuard no_grad;
    const torch::Tensor ids = Ids();
    EXPECT_TRUE(torch::equal(reloaded.model->forward(ids), model->forward(ids)));
  }
}

TEST(LmQuantizerTest, TrueSequentialAtqAndKeptLayers) {
  testutil::TempDir dir;
  const std::string text = CalibrationText(dir);
  ByteTokenizer tokenizer;
  auto model = MakeCausalLm(TinyConfig(LmArch::kLlama));
  const torch::Tensor kept_before = model->named_parameters()["model.layers.1.mlp.down_proj.weight"].clone();
  QuantizeRecipe recipe;
  recipe.settings = {{"method", "atq"}, {"ternary", "true"}, {"calib", text}, {"nsamples", "4"},
                     {"seqlen", "32"},  {"true_sequential", "true"}};
  recipe.layer_settings["model.layers.0.mlp.down_proj"] = {{"method", "gptq"}, {"ternary", "false"}, {"bits", "8"}};
  recipe.kept_layers = {"model.layers.1.mlp.down_proj"};
  const LmQuantizeResult result = QuantizeLanguageModel(*model, tokenizer, BuildQuantizeOptions(recipe, "test"));
  ASSERT_EQ(result.layers.size(), 13u);
  for (const LayerReport& layer : result.layers) {
    if (layer.name == "model.layers.0.mlp.down_proj.weight") {
      EXPECT_EQ(layer.type, "u8s");
      EXPECT_EQ(layer.method, "gptq");
    } else {
      EXPECT_EQ(layer.type, "t2") << layer.name;
      EXPECT_GT(layer.threshold_ratio, 0) << layer.name;  // chosen per row on calibration data
      EXPECT_GT(layer.sparsity, 0.1) << layer.name;
    }
    EXPECT_NE(layer.name, "model.layers.1.mlp.down_proj.weight");
  }
  EXPECT_TRUE(torch::equal(model->named_parameters()["model.layers.1.mlp.down_proj.weight"], kept_before));
}

TEST(LmQuantizerTest, FirstStageCaptureGivesTheHessiansOfTheFullCapture) {
  // True-sequential capture collects only the first stage and stops each pass there; the Hessians it hands over
  // must be exactly those of a pass that runs the whole block and collects every layer. The visitor handles the
  // first stage only, leaving the weights unchanged, so both runs see the same inputs throughout.
  testutil::TempDir dir;
  const std::string text = CalibrationText(dir);
  ByteTokenizer tokenizer;
  auto model = MakeCausalLm(TinyConfig(LmArch::kLlama));
  QuantizeRecipe recipe;
  recipe.settings = {{"method", "gptq"}, {"calib", text}, {"nsamples", "4"}, {"seqlen", "32"}};
  const LmQuantizeOptions options = BuildQuantizeOptions(recipe, "test");
  std::map<CaptureScope, std::vector<std::pair<std::string, torch::Tensor>>> seen;
  for (const CaptureScope scope : {CaptureScope::kAllLayers, CaptureScope::kFirstStage}) {
    CalibrateBlocks(
        *model, tokenizer, options,
        [&](int64_t, std::vector<CalibratedLayer>& layers, const std::vector<size_t>& first_stage) {
          for (const size_t i : first_stage) seen[scope].emplace_back(layers[i].name, layers[i].hessian.clone());
          return first_stage;
        },
        nullptr, scope);
  }
  const auto& all = seen[CaptureScope::kAllLayers];
  const auto& staged = seen[CaptureScope::kFirstStage];
  ASSERT_EQ(all.size(), 14u);  // 2 blocks of q, k, v, o, gate, up, down
  ASSERT_EQ(staged.size(), all.size());
  for (size_t i = 0; i < all.size(); ++i) {
    EXPECT_EQ(staged[i].first, all[i].first);
    EXPECT_TRUE(torch::equal(staged[i].second, all[i].second)) << all[i].first;
  }
}

TEST(LmQuantizerTest, RejectsRecipesItCannotRun) {
  ByteTokenizer tokenizer;
  auto model = MakeCausalLm(TinyConfig(LmArch::kGpt2));
  QuantizeRecipe recipe;
  recipe.settings = {{"method", "gptq"}, {"nsamples", "0"}};
  std::string message = testutil::ErrorMessageOf(
      [&] { QuantizeLanguageModel(*model, tokenizer, BuildQuantizeOptions(recipe, "test")); });
  EXPECT_NE(message.find("calibration"), std::string::npos) << message;
  recipe.settings = {{"method", "rtn"}, {"nsamples", "0"}};
  recipe.layer_settings["transformer.h.9.attn.c_attn"] = {{"bits", "8"}};
  message = testutil::ErrorMessageOf(
      [&] { QuantizeLanguageModel(*model, tokenizer, BuildQuantizeOptions(recipe, "test")); });
  EXPECT_NE(message.find("transformer.h.9.attn.c_attn"), std::string::npos) << message;
}

TEST(RecipeTest, ReadsSettingsAndLayerOverrides) {
  testutil::TempDir dir;
  const std::string path = (std::filesystem::path(dir.path()) / "recipe.yaml").string();
  testutil::WriteFileText(path, "method: gptq\nbits: 3\nsymmetric: false\ngroup_size: 64\nact_order: true\n"
                                "embeddings: q8_0\nlayers:\n  a.b: {bits: 8}\n  c.d: keep\n");
  const QuantizeRecipe recipe = ReadRecipeFile(path);
  const LmQuantizeOptions options = BuildQuantizeOptions(recipe, path);
  EXPECT_EQ(options.recipe.method, "gptq");
  EXPECT_EQ(options.recipe.grid.bits, 3);
  EXPECT_FALSE(options.recipe.grid.symmetric);
  EXPECT_EQ(options.recipe.grid.granularity, Granularity::kGroup);
  EXPECT_EQ(options.recipe.grid.group_size, 64);
  EXPECT_TRUE(options.gptq.act_order);
  EXPECT_EQ(options.embedding_type, QuantType::kQ8_0);
  EXPECT_EQ(options.layers.at("a.b").grid.bits, 8);
  EXPECT_EQ(options.layers.at("a.b").grid.group_size, 64);  // the rest from the top level
  EXPECT_TRUE(options.layers.at("c.d").keep);
  EXPECT_EQ(RecipeJson(recipe)["layers"]["c.d"], "keep");
}

TEST(RecipeTest, RejectsBadFilesNamingTheFileAndSetting) {
  testutil::TempDir dir;
  const auto write = [&](const std::string& text) {
    const std::string path = (std::filesystem::path(dir.path()) / "bad.yaml").string();
    testutil::WriteFileText(path, text);
    return path;
  };
  std::string path = write("method: gptq\nbitz: 4\n");
  testutil::ExpectErrorNaming(testutil::ErrorMessageOf([&] { ReadRecipeFile(path); }), path, {"bitz", "unknown"});
  path = write("method: [gptq\n");
  testutil::ExpectErrorNaming(testutil::ErrorMessageOf([&] { ReadRecipeFile(path); }), path, {"YAML"});
  path = write("layers:\n  a.b: drop\n");
  testutil::ExpectErrorNaming(testutil::ErrorMessageOf([&] { ReadRecipeFile(path); }), path, {"a.b", "keep"});
  path = write("bits: 9\n");
  testutil::ExpectErrorNaming(testutil::ErrorMessageOf([&] { BuildQuantizeOptions(ReadRecipeFile(path), path); }),
                              path, {"9"});
  path = write("method: atq\nbits: 4\n");
  testutil::ExpectErrorNaming(testutil::ErrorMessageOf([&] { BuildQuantizeOptions(ReadRecipeFile(path), path); }),
                              path, {"ternary"});
  path = write("group_size: many\n");
  testutil::ExpectErrorNaming(testutil::ErrorMessageOf([&] { BuildQuantizeOptions(ReadRecipeFile(path), path); }),
                              path, {"group_size", "many"});
  testutil::ExpectErrorNaming(testutil::ErrorMessageOf([&] { ReadRecipeFile(path + ".missing"); }), path + ".missing",
                              {"does not exist"});
}

}  // namespace
}  // namespace atq
