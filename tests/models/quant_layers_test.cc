// QuantLinear / QuantConv2d: forward through the configured weight, statistics and packed sizes.
#include "models/quant_layers.h"

#include <set>

#include <gtest/gtest.h>
#include <torch/torch.h>

#include "formats/atq_packed.h"
#include "grid/fake_quant.h"

namespace atq {
namespace {

LayerQuantConfig Ternary(double sparsity, double rpb_fraction = 0) {
  LayerQuantConfig config;
  config.quantized = true;
  config.grid.threshold_value = sparsity;
  config.rpb_fraction = rpb_fraction;
  return config;
}

TEST(QuantLayersTest, LinearNamesShapesAndFullPrecisionForward) {
  QuantLinear layer(50, 10);
  const auto params = layer->named_parameters();
  ASSERT_EQ(params.size(), 2u);
  EXPECT_EQ(params["weight"].sizes(), torch::IntArrayRef({10, 50}));
  EXPECT_EQ(params["bias"].sizes(), torch::IntArrayRef({10}));
  const torch::Tensor x = torch::randn({3, 50});
  EXPECT_TRUE(torch::allclose(layer(x), torch::addmm(layer->bias, x, layer->weight.t())));
  EXPECT_EQ(QuantLinear(4, 2, /*bias=*/false)->named_parameters().size(), 1u);
}

TEST(QuantLayersTest, LinearTernaryForwardUsesEffectiveWeight) {
  QuantLinear layer(50, 10);
  layer->SetQuantConfig(Ternary(0.5));
  const torch::Tensor x = torch::randn({3, 50});
  const torch::Tensor expected = torch::addmm(layer->bias, x, layer->EffectiveWeight().t());
  EXPECT_TRUE(torch::allclose(layer(x), expected, 1e-5, 1e-5));
  // Gradients reach the latent weight and the bias.
  layer(x).sum().backward();
  EXPECT_TRUE(layer->weight.grad().defined());
  EXPECT_GT(layer->weight.grad().abs().sum().item<float>(), 0);
  EXPECT_TRUE(layer->bias.grad().defined());
}

TEST(QuantLayersTest, ConvEffectiveWeightHasThreeValuesPerChannelPlusBoosted) {
  torch::manual_seed(7);
  QuantConv2d conv(8, 16, 3, 1, 1);
  conv->SetQuantConfig(Ternary(0.6, /*rpb_fraction=*/0.01));
  const torch::Tensor effective = conv->EffectiveWeight();
  const LayerQuantization ternary = QuantizeLayer(conv->FloatWeight(), conv->quant_config());
  EXPECT_TRUE(torch::equal(effective, ternary.effective));
  int64_t exceptions = 0;
  for (int64_t row = 0; row < 16; ++row) {
    const float a = ternary.packed.scales[row][0].item<float>();
    const torch::Tensor values = effective[row].reshape({-1});
    const torch::Tensor boosted = ternary.boosted[row].reshape({-1});
    const torch::Tensor latent = conv->weight[row].reshape({-1});
    for (int64_t i = 0; i < values.numel(); ++i) {
      const float v = values[i].item<float>();
      if (boosted[i].item<bool>()) {
        EXPECT_EQ(v, latent[i].to(torch::kHalf).to(torch::kFloat).item<float>());  // stored as f16
        ++exceptions;
      } else {
        EXPECT_TRUE(v == 0 || v == a || v == -a) << "row " << row << " value " << v << " scale " << a;
      }
    }
  }
  EXPECT_EQ(exceptions, 11);  // floor(0.01 * 16 * 72)
  // Same output as the plain convolution with that weight.
  const torch::Tensor x = torch::randn({2, 8, 6, 6});
  EXPECT_TRUE(torch::allclose(conv(x), torch::conv2d(x, effective, conv->bias, 1, 1), 1e-5, 1e-5));
}

TEST(QuantLayersTest, TernaryStatsAndPackedBytes) {
  torch::manual_seed(8);
  QuantLinear layer(50, 10);
  layer->SetQuantConfig(Ternary(0.5, /*rpb_fraction=*/0.01));
  const LayerQuantStats stats = layer->Stats("fc");
  EXPECT_EQ(stats.name, "fc");
  EXPECT_EQ(stats.weights, 500);
  EXPECT_NEAR(stats.share_minus + stats.share_zero + stats.share_plus, 1.0, 1e-12);
  EXPECT_DOUBLE_EQ(stats.share_zero, 0.5);  // 25 of 50 per row (distinct random weights)
  ASSERT_EQ(stats.scales.size(), 10u);
  EXPECT_EQ(stats.rpb_weights, 5);
  // t2 codes: 10 rows x ceil(50/4) = 130 bytes, padded to 132, + 10 f32 scales = 172; by the format's formula too.
  Layout layout{QuantType::kTernary2, 10, 50, Granularity::kChannel};
  EXPECT_EQ(AtqPackedBytes(layout), 172);
  EXPECT_EQ(stats.packed_bytes, 172 + 5 * 6 + 10 * 4);
  EXPECT_EQ(stats.fp32_bytes, (500 + 10) * 4);

  // Per layer: one scale.
  LayerQuantConfig per_layer = Ternary(0.5);
  per_layer.grid.granularity = Granularity::kTensor;
  layer->SetQuantConfig(per_layer);
  const LayerQuantStats layer_stats = layer->Stats("fc");
  EXPECT_EQ(layer_stats.scales.size(), 1u);
  EXPECT_EQ(layer_stats.packed_bytes, 132 + 4 + 40);
}

TEST(QuantLayersTest, UniformAndFullStats) {
  QuantConv2d conv(4, 6, 3, 1, 1, /*bias=*/false);
  LayerQuantConfig config;
  config.quantized = true;
  config.grid.kind = GridKind::kUniform;
  config.grid.bits = 4;
  conv->SetQuantConfig(config);
  const LayerQuantStats uniform = conv->Stats("conv");
  // 6 rows x 36 weights x 4 bits = 18 bytes a row -> 108, padded 108, + 6 scales.
  EXPECT_EQ(uniform.packed_bytes, 108 + 24);
  EXPECT_EQ(uniform.fp32_bytes, 216 * 4);
  EXPECT_NEAR(uniform.share_minus + uniform.share_zero + uniform.share_plus, 1.0, 1e-12);
  // Effective values lie on the grid: at most 16 distinct per channel.
  const torch::Tensor effective = conv->EffectiveWeight();
  for (int64_t row = 0; row < 6; ++row) {
    EXPECT_LE(std::get<0>(torch::_unique(effective[row])).numel(), 16);
  }

  conv->SetQuantConfig(LayerQuantConfig{});
  const LayerQuantStats full = conv->Stats("conv");
  EXPECT_EQ(full.packed_bytes, full.fp32_bytes);
  EXPECT_TRUE(full.scales.empty());
  EXPECT_TRUE(torch::equal(conv->EffectiveWeight(), conv->weight));
}

TEST(QuantLayersTest, ThresholdFollowsTheConfigAtEveryForward) {
  torch::manual_seed(9);
  QuantLinear layer(100, 4);
  std::set<double> zero_shares;
  for (const double sparsity : {0.1, 0.5, 0.9}) {
    layer->SetQuantConfig(Ternary(sparsity));
    zero_shares.insert(layer->Stats("fc").share_zero);
    EXPECT_NEAR(layer->Stats("fc").share_zero, sparsity, 1e-12);
  }
  EXPECT_EQ(zero_shares.size(), 3u);
}

}  // namespace
}  // namespace atq
