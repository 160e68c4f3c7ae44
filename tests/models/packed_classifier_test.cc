// Packed classifiers run through atq's kernels against the dequantize-then-float path: for every architecture and
// both ternary packings, the kernels' logits equal the fake-quantized model's within the error of quantizing
// activations to int8, the dequantized run equals it to float rounding, and the statistics read from the packed
// bytes agree with those of the float model. Also both packed convolutions against torch's conv2d.
#include "models/packed_classifier.h"

#include <cctype>
#include <filesystem>
#include <ostream>
#include <string>

#include <gtest/gtest.h>
#include <torch/torch.h>

#include "models/classifiers.h"
#include "models/quant_layers.h"
#include "test_util.h"
#include "util/error.h"

namespace atq {
namespace {

// A model with random weights (and BatchNorm statistics) whose inner layers are ternary with RPB.
LoadedClassifier TernaryModel(const std::string& name) {
  LayerQuantConfig ternary;
  ternary.quantized = true;
  ternary.grid.threshold_value = 0.4;
  ternary.rpb_fraction = 0.01;
  return RandomClassifier(name, 16, ternary, 7);
}

double MaxAbs(const torch::Tensor& t) { return t.abs().max().item<double>(); }

struct PackedCase {
  std::string model;
  QuantType type;
};

void PrintTo(const PackedCase& c, std::ostream* out) { *out << c.model << " " << TypeName(c.type); }

class PackedClassifierTest : public ::testing::TestWithParam<PackedCase> {};

TEST_P(PackedClassifierTest, KernelsMatchTheDequantizedModel) {
  const PackedCase& c = GetParam();
  const LoadedClassifier trained = TernaryModel(c.model);
  testutil::TempDir dir;
  const std::string path = (std::filesystem::path(dir.path()) / "packed.safetensors").string();
  ExportPackedClassifier(trained, c.type, path);
  const LoadedClassifier kernels = LoadPackedClassifier(path, PackedRun::kKernels);
  const LoadedClassifier dequantized = LoadPackedClassifier(path, PackedRun::kDequantized);

  torch::manual_seed(11);
  const torch::Tensor images = torch::randn({6, 1, 16, 16});
  torch::NoGradGuard no_grad;
  const torch::Tensor reference = trained.model->forward(images);
  const torch::Tensor float_logits = dequantized.model->forward(images);
  const torch::Tensor packed_logits = kernels.model->forward(images);
  const double scale = MaxAbs(reference);
  EXPECT_LT(MaxAbs(float_logits - reference), 1e-4 * scale) << c.model;
  // Measured 0.4-1.7% of the largest logit (int8 activations per row of every layer, through up to 20 layers);
  // leaving out the RPB residual gives 4-44%.
  EXPECT_LT(MaxAbs(packed_logits - reference), 0.03 * scale) << c.model;
  EXPECT_TRUE(packed_logits.argmax(1).eq(reference.argmax(1)).all().item<bool>()) << c.model;

  int64_t runs_packed = 0;
  const auto layers = kernels.model->QuantLayers();
  const auto trained_layers = trained.model->QuantLayers();
  ASSERT_EQ(layers.size(), trained_layers.size());
  for (size_t i = 0; i < layers.size(); ++i) {
    const auto* layer = dynamic_cast<const QuantWeightLayer*>(layers[i].second);
    ASSERT_NE(layer, nullptr);
    runs_packed += layer->RunsPackedKernels();
    const LayerQuantStats packed = layers[i].second->Stats(layers[i].first);
    const LayerQuantStats expected = trained_layers[i].second->Stats(trained_layers[i].first);
    EXPECT_EQ(packed.weights, expected.weights);
    EXPECT_EQ(packed.rpb_weights, expected.rpb_weights) << layers[i].first;
    EXPECT_NEAR(packed.share_zero, expected.share_zero, 1e-12) << layers[i].first;
    EXPECT_NEAR(packed.share_plus, expected.share_plus, 1e-12) << layers[i].first;
    ASSERT_EQ(packed.scales.size(), expected.scales.size()) << layers[i].first;
    for (size_t s = 0; s < packed.scales.size(); ++s) EXPECT_FLOAT_EQ(packed.scales[s], expected.scales[s]);
    if (layer->packed() != nullptr && c.type == QuantType::kTernary2) {
      EXPECT_EQ(packed.packed_bytes, expected.packed_bytes) << layers[i].first;
    }
    EXPECT_TRUE(torch::allclose(layers[i].second->EffectiveWeight(), trained_layers[i].second->EffectiveWeight(),
                                1e-6, 1e-7))
        << layers[i].first;
  }
  EXPECT_EQ(runs_packed, static_cast<int64_t>(layers.size()) - 2);  // first and last layer stay float
}

INSTANTIATE_TEST_SUITE_P(Models, PackedClassifierTest,
                         ::testing::Values(PackedCase{"mlp", QuantType::kTernary2},
                                           PackedCase{"cnn", QuantType::kTernary2},
                                           PackedCase{"cnn", QuantType::kTernary1_6},
                                           PackedCase{"resnet18", QuantType::kTernary2},
                                           PackedCase{"vit-tiny", QuantType::kTernary1_6}),
                         [](const auto& info) {
                           std::string name = info.param.model + "_" + std::string(TypeName(info.param.type));
                           for (char& ch : name) ch = std::isalnum(static_cast<unsigned char>(ch)) ? ch : '_';
                           return name;
                         });

// Both packed convolutions against torch's conv2d on the same weights (stride, padding): per-channel scales run
// channels-last through PackedConv2d (with an RPB residual), per-group scales as im2col columns (several batch
// chunks).
TEST(PackedConvolutionTest, EqualsConv2dOnTheDequantizedWeights) {
  for (const Granularity granularity : {Granularity::kChannel, Granularity::kGroup}) {
    torch::manual_seed(3);
    QuantConv2d conv(16, 8, 3, /*stride=*/2, /*padding=*/1);
    auto packed = std::make_shared<PackedLayerWeights>();
    const bool grouped = granularity == Granularity::kGroup;
    packed->weights.layout = {QuantType::kUniform8Sym, 8, 16 * 9, granularity, grouped ? 32 : 0};
    const torch::Tensor weight = conv->weight.detach().reshape({8, -1}).contiguous();
    packed->weights.bytes = Quantize(packed->weights.layout, weight.data_ptr<float>());
    if (!grouped) {  // a few weights kept exactly
      const torch::Tensor index = torch::tensor({{0, 3, 7}, {5, 100, 143}});
      packed->residual = torch::sparse_coo_tensor(index, torch::tensor({0.5f, -0.25f, 1.0f}), {8, 144}).coalesce();
    }
    const torch::Tensor dense = DequantizedWeight(*packed).view({8, 16, 3, 3});
    conv->AttachPacked(packed, PackedRun::kKernels);
    // 300 images of 64x64: 32x32 outputs of 144 values each, more im2col columns than one step takes.
    const torch::Tensor x = torch::randn({grouped ? 300 : 7, 16, 64, 64});
    torch::NoGradGuard no_grad;
    const torch::Tensor expected = torch::conv2d(x, dense, conv->bias, {2, 2}, {1, 1});
    const torch::Tensor y = conv->forward(x);
    ASSERT_EQ(y.sizes(), expected.sizes());
    EXPECT_LT(MaxAbs(y - expected), 0.02 * MaxAbs(expected)) << GranularityString(packed->weights.layout);
    // The placeholder keeps the shape and holds nothing.
    EXPECT_EQ(conv->weight.sizes(), torch::IntArrayRef({8, 16, 3, 3}));
    EXPECT_EQ(conv->weight.storage().nbytes(), sizeof(float));
  }
}

TEST(PackedClassifierTest, RejectsPackedWeightsOfAnotherShape) {
  QuantLinear linear(12, 4);
  auto packed = std::make_shared<PackedLayerWeights>();
  packed->weights.layout = {QuantType::kTernary2, 4, 10, Granularity::kChannel, 0};
  const std::string message = testutil::ErrorMessageOf([&] { linear->AttachPacked(packed, PackedRun::kKernels); });
  EXPECT_NE(message.find("4x10"), std::string::npos) << message;
}

}  // namespace
}  // namespace atq
