// The VisionTransformer classifier: timm's tensor names and parameter count, the query/key quantizers, training
// through quantized layers, checkpoints carrying patch_size, and timm's reference logits from the fixture.
#include "models/vit.h"

#include <set>
#include <string>

#include <fmt/format.h>
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>
#include <torch/torch.h>

#include "io/safetensors.h"
#include "models/classifiers.h"
#include "test_util.h"
#include "torch/tensor_bridge.h"
#include "models/classifier_checkpoint.h"
#include "util/error.h"

namespace atq {
namespace {

// The fixture's logits come from PyTorch in float32 (fused attention, its own GEMM blocking); ours from explicit
// scores in another summation order. Measured: 2.0e-6 at most over the 16 images; 1e-4 leaves a wide margin.
constexpr double kLogitTolerance = 1e-4;

int64_t ParameterCount(torch::nn::Module& module) {
  int64_t count = 0;
  for (const auto& parameter : module.parameters()) count += parameter.numel();
  return count;
}

// Two blocks instead of twelve: the same code paths at a sixth of the cost.
VitConfig SmallConfig() {
  VitConfig config;
  config.depth = 2;
  config.embed_dim = 48;
  return config;
}

ClassifierConfig VitTinyFixtureConfig() {
  ClassifierConfig config;
  config.model = "vit-tiny";
  config.dataset = "fashion_mnist";
  config.normalization = kFashionMnistNormalization;
  return config;
}

TEST(VitTest, VitTinyHasTimmsParameterCountAndNames) {
  const auto model = MakeClassifier("vit-tiny", 1, 10);
  // patch_embed 192*16+192 + cls_token 192 + pos_embed 50*192 + 12 blocks * (two LayerNorms 4*192, qkv 576*192+576,
  // proj 192*192+192, fc1 768*192+768, fc2 192*768+192) + norm 384 + head 1930; reference.json says the same.
  EXPECT_EQ(ParameterCount(*model), 5353738);
  const auto layers = model->QuantLayers();
  ASSERT_EQ(layers.size(), 50u);  // patch embedding + 4 linears per block + head
  EXPECT_EQ(layers.front().first, "patch_embed.proj");
  EXPECT_EQ(layers[1].first, "blocks.0.attn.qkv");
  EXPECT_EQ(layers[2].first, "blocks.0.attn.proj");
  EXPECT_EQ(layers[3].first, "blocks.0.mlp.fc1");
  EXPECT_EQ(layers[4].first, "blocks.0.mlp.fc2");
  EXPECT_EQ(layers.back().first, "head");
  std::set<std::string> names;
  for (const auto& item : model->named_parameters()) names.insert(item.key());
  for (const char* name : {"cls_token", "pos_embed", "patch_embed.proj.weight", "blocks.11.norm1.weight",
                           "blocks.11.attn.qkv.bias", "blocks.11.norm2.bias", "norm.weight", "head.bias"}) {
    EXPECT_EQ(names.count(name), 1u) << name;
  }
  EXPECT_TRUE(model->named_buffers().is_empty());
}

TEST(VitTest, AttentionsAreListedAndTheirQuantizersHoldNoTensors) {
  VisionTransformerClassifier model(SmallConfig());
  const auto attentions = model.Attentions();
  ASSERT_EQ(attentions.size(), 2u);
  EXPECT_EQ(attentions[0].first, "blocks.0.attn");
  EXPECT_EQ(attentions[1].first, "blocks.1.attn");
  for (const auto& [name, attention] : attentions) {
    EXPECT_EQ(attention->heads(), 3) << name;
    EXPECT_EQ(attention->head_dim(), 16) << name;
    for (const auto* quantizer : {attention->query_quant.get(), attention->key_quant.get(), attention->probs_quant.get(),
                                  attention->value_quant.get()}) {
      EXPECT_TRUE(quantizer->parameters().empty()) << name;
      EXPECT_TRUE(quantizer->buffers().empty()) << name;
    }
  }
}

TEST(VitTest, QueryAndKeyQuantizersChangeTheScoresOnlyWhenConfigured) {
  torch::manual_seed(1);
  VisionTransformerClassifier model(SmallConfig());
  model.eval();
  torch::NoGradGuard no_grad;
  const torch::Tensor images = torch::randn({3, 1, 28, 28});
  const torch::Tensor plain = model.forward(images);
  EXPECT_EQ(plain.sizes(), torch::IntArrayRef({3, 10}));
  VitAttentionImpl& attention = *model.Attentions()[0].second;
  attention.query_quant->SetGrid(/*bits=*/2, /*scale=*/0.5, /*unsigned_grid=*/false);
  attention.key_quant->SetGrid(/*bits=*/2, /*scale=*/0.5, /*unsigned_grid=*/false);
  EXPECT_FALSE(torch::allclose(model.forward(images), plain));
  attention.query_quant->Disable();
  attention.key_quant->Disable();
  EXPECT_TRUE(torch::equal(model.forward(images), plain));
  // Observation sees q and k as [B, H, T, D/H]: 3 images, 3 heads, 1 + 49 tokens, 16 dimensions.
  attention.key_quant->Observe(/*max_samples=*/16, /*keep_batches=*/1);
  model.forward(images);
  ASSERT_EQ(attention.key_quant->batches().size(), 1u);
  EXPECT_EQ(attention.key_quant->batches()[0].sizes(), torch::IntArrayRef({3, 3, 50, 16}));
}

TEST(VitTest, TrainsThroughTernaryLayers) {
  torch::manual_seed(2);
  VisionTransformerClassifier model(SmallConfig());
  LayerQuantConfig config;
  config.quantized = true;
  ApplyQuantConfig(model, config);
  model.train();
  model.forward(torch::randn({4, 1, 28, 28})).logsumexp(1).mean().backward();
  for (const auto& parameter : model.named_parameters()) {
    EXPECT_TRUE(parameter.value().grad().defined()) << parameter.key();
  }
}

TEST(VitTest, PatchSizeSetsTheTokenCountAndMustDivideTheImage) {
  const auto model = MakeClassifier("vit-tiny", 1, 10, 28, 7);
  EXPECT_EQ(model->named_parameters()["pos_embed"].sizes(), torch::IntArrayRef({1, 17, 192}));
  EXPECT_THROW(MakeClassifier("vit-tiny", 1, 10, 30, 4), Error);
  EXPECT_THROW(MakeClassifier("vit-tiny", 1, 10, 28, 0), Error);
  model->eval();
  torch::NoGradGuard no_grad;
  EXPECT_THROW(model->forward(torch::randn({1, 1, 32, 32})), Error);
}

TEST(VitCheckpointTest, ConfigJsonCarriesPatchSizeAndDefaultsItForOldFiles) {
  ClassifierConfig config = VitTinyFixtureConfig();
  config.patch_size = 7;
  const nlohmann::json json = ClassifierConfigToJson(config);
  EXPECT_EQ(json.at("patch_size"), 7);
  const ClassifierConfig back = ClassifierConfigFromJson(json, "test");
  EXPECT_EQ(back.model, "vit-tiny");
  EXPECT_EQ(back.patch_size, 7);
  EXPECT_EQ(back.normalization.mean, kFashionMnistNormalization.mean);

  nlohmann::json old = json;  // written before patch_size existed
  old.erase("patch_size");
  EXPECT_EQ(ClassifierConfigFromJson(old, "test").patch_size, 4);
  nlohmann::json bad = json;
  bad["patch_size"] = 0;
  EXPECT_THROW(ClassifierConfigFromJson(bad, "test"), Error);
}

TEST(VitCheckpointTest, SaveAndLoadKeepPatchSizeAndOutputs) {
  testutil::TempDir dir;
  ClassifierConfig config = VitTinyFixtureConfig();
  config.patch_size = 7;
  torch::manual_seed(3);
  const auto model = MakeClassifier("vit-tiny", 1, 10, 28, 7);
  SaveClassifier(dir.path(), *model, config);
  const LoadedClassifier loaded = LoadClassifier(dir.path());
  EXPECT_EQ(loaded.config.patch_size, 7);
  model->eval();
  torch::NoGradGuard no_grad;
  const torch::Tensor images = torch::randn({2, 1, 28, 28});
  EXPECT_TRUE(torch::equal(loaded.model->forward(images), model->forward(images)));
}

TEST(VitCheckpointTest, ForeignLoadNamesTheFileForAWrongArchitecture) {
  ATQ_FIXTURE_OR_SKIP(model_path, "vit-tiny/model.safetensors");
  ClassifierConfig config = VitTinyFixtureConfig();
  config.patch_size = 7;  // pos_embed [1, 17, 192] against the file's [1, 50, 192]
  testutil::ExpectErrorNaming(testutil::ErrorMessageOf([&] { LoadForeignClassifier(model_path, config); }),
                              model_path, {"pos_embed"});
  config = VitTinyFixtureConfig();
  config.model = "resnet18";
  testutil::ExpectErrorNaming(testutil::ErrorMessageOf([&] { LoadForeignClassifier(model_path, config); }),
                              model_path, {"missing tensor"});
}

TEST(VitTest, TimmFixtureLoadsByNameAndMatchesTimmsLogits) {
  ATQ_FIXTURE_OR_SKIP(model_path, "vit-tiny/model.safetensors");
  ATQ_FIXTURE_OR_SKIP(outputs_path, "vit-tiny/reference_outputs.safetensors");
  const LoadedClassifier loaded = LoadForeignClassifier(model_path, VitTinyFixtureConfig());
  ASSERT_EQ(loaded.config.layers.size(), 50u);
  const SafetensorsFile outputs = SafetensorsFile::Open(outputs_path);
  const TensorInfo* images = outputs.Find("images");
  const TensorInfo* logits = outputs.Find("logits");
  ASSERT_TRUE(images != nullptr && logits != nullptr);
  torch::NoGradGuard no_grad;
  const torch::Tensor expected = ToTorch(*logits, outputs.Data(*logits));
  const torch::Tensor actual = loaded.model->forward(ToTorch(*images, outputs.Data(*images)));
  const double difference = (actual - expected).abs().max().item<double>();
  RecordProperty("max_abs_logit_difference", fmt::format("{:.3g}", difference));
  EXPECT_LE(difference, kLogitTolerance);
  EXPECT_TRUE(torch::equal(actual.argmax(1), expected.argmax(1)));
}

}  // namespace
}  // namespace atq
