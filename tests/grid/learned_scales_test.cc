// Learned scales for QAT: the forward pass is what the packer stores for the learned scales (codes by the grid's
// rule, the scale as the format keeps it), the start is the grid's fit, and the gradients are LSQ's on hand-worked
// rows and against finite differences.
#include <cmath>
#include <cstring>
#include <vector>

#include <gtest/gtest.h>
#include <torch/torch.h>

#include "formats/atq_packed.h"
#include "grid/fake_quant.h"
#include "grid/quantized_weight.h"
#include "util/error.h"

namespace atq {
namespace {

torch::Tensor Row(std::vector<float> values) {
  return torch::tensor(values, torch::kFloat).reshape({1, static_cast<int64_t>(values.size())});
}

std::vector<float> Values(const torch::Tensor& tensor) {
  const torch::Tensor flat = tensor.detach().to(torch::kFloat).contiguous().reshape({-1});
  return std::vector<float>(flat.data_ptr<float>(), flat.data_ptr<float>() + flat.numel());
}

LayerQuantConfig Ternary(ThresholdRule rule, double value, Granularity granularity, int64_t group = 0) {
  WeightGrid grid;
  grid.kind = GridKind::kTernary;
  grid.threshold_rule = rule;
  grid.threshold_value = value;
  grid.granularity = granularity;
  grid.group_size = group;
  return QuantizedLayer(grid);
}

LayerQuantConfig Uniform(int bits, Granularity granularity, int64_t group = 0) {
  WeightGrid grid;
  grid.bits = bits;
  grid.granularity = granularity;
  grid.group_size = group;
  return QuantizedLayer(grid);
}

std::vector<LayerQuantConfig> Configs() {
  return {Ternary(ThresholdRule::kSparsity, 0.4, Granularity::kChannel),
          Ternary(ThresholdRule::kRatio, 0.7, Granularity::kGroup, 128),
          Ternary(ThresholdRule::kRatio, 0.7, Granularity::kTensor),
          QuantizedLayer(*GgmlGridByName("tq2_0")),
          QuantizedLayer(*GgmlGridByName("tq1_0")),
          Uniform(4, Granularity::kChannel),
          Uniform(3, Granularity::kGroup, 128),
          Uniform(8, Granularity::kTensor)};
}

// Scales moved off the fit (by up to +-30%), as training leaves them.
torch::Tensor Moved(const torch::Tensor& scales) {
  return scales * (1 + 0.3 * (2 * torch::rand(scales.sizes()) - 1));
}

TEST(LearnedScalesTest, ForwardIsWhatThePackerStores) {
  torch::manual_seed(21);
  const torch::Tensor w = torch::randn({6, 512});
  for (const LayerQuantConfig& config : Configs()) {
    const std::string what = DescribeGrid(config.grid);
    const torch::Tensor learned = Moved(LearnedScales(w, config)).requires_grad_(true);
    const torch::Tensor forward = FakeQuantize(w.clone().requires_grad_(true), config, learned).detach();
    const LayerQuantization layer = QuantizeLayer(w, config, learned);
    EXPECT_TRUE(torch::equal(forward, layer.effective)) << what;
    const std::vector<uint8_t> bytes = PackQuantized(layer.packed);
    const std::vector<float> unpacked = Dequantize(layer.packed.layout, bytes.data(), static_cast<int64_t>(bytes.size()));
    EXPECT_EQ(unpacked, Values(forward)) << what;
    // The stored scales are the learned ones as the format keeps them (float16 in llama.cpp's blocks).
    const torch::Tensor expected = StoredScale(config.grid, LearnedScaleMatrix(learned.detach(), config.grid, 6, 512));
    EXPECT_TRUE(torch::equal(layer.packed.scales, expected)) << what;
    if (config.mode() == WeightMode::kTernary) {
      // Ternary codes come from the grid's rule, whatever the scale.
      EXPECT_TRUE(torch::equal(layer.packed.codes, QuantizeRtn(w, config.grid).codes)) << what;
    } else {
      EXPECT_FALSE(torch::equal(layer.packed.codes, QuantizeRtn(w, config.grid).codes)) << what;
    }
  }
}

TEST(LearnedScalesTest, StartIsTheGridsFit) {
  torch::manual_seed(22);
  const torch::Tensor w = torch::randn({5, 256});
  for (const LayerQuantConfig& config : Configs()) {
    const torch::Tensor learned = LearnedScales(w, config);
    EXPECT_EQ(learned.dim(), 1) << DescribeGrid(config.grid);
    EXPECT_TRUE(torch::equal(FakeQuantize(w, config, learned), FakeQuantize(w, config))) << DescribeGrid(config.grid);
  }
  EXPECT_EQ(LearnedScales(w, Uniform(8, Granularity::kTensor)).numel(), 1);
  EXPECT_EQ(LearnedScales(w, Uniform(3, Granularity::kGroup, 100)).numel(), 5 * 3);
}

// Row [-4, -1, 0.5, 2, 3] at sparsity 0.4: threshold 1, trits [-1, 0, 0, 1, 1]. With the scale learned at 2.5 and
// ste_clip 0.9 (clip 0.9 * max(2.5, 1) = 2.25): dL/ds = g * sum(upstream * trit), g = 1 / sqrt(5 weights * 1);
// the latent weights pass inside the clip or when pushed back toward zero.
TEST(LearnedScalesTest, TernaryGradientsByHand) {
  LayerQuantConfig config = Ternary(ThresholdRule::kSparsity, 0.4, Granularity::kChannel);
  config.ste_clip = 0.9;
  const torch::Tensor w = Row({-4, -1, 0.5, 2, 3}).requires_grad_(true);
  const torch::Tensor scale = torch::tensor({2.5f}).requires_grad_(true);
  const torch::Tensor q = FakeQuantize(w, config, scale);
  EXPECT_EQ(Values(q), std::vector<float>({-2.5f, 0, 0, 2.5f, 2.5f}));
  (q * Row({1, 2, 3, 4, -5})).sum().backward();
  EXPECT_NEAR(scale.grad().item<double>(), (-1 + 4 - 5) / std::sqrt(5.0), 1e-6);
  // -4 and 3 are outside the clip, and the descent steps (-1 and +5) move both further out: blocked. The others
  // are inside.
  EXPECT_EQ(Values(w.grad()), std::vector<float>({0, 2, 3, 4, 0}));
}

// int3 symmetric (levels -4..3), scale 1, row [0.9, -2.6, 5, 1.4]: levels [1, -3, 3, 1], 5 beyond the range.
// LSQ: dq/ds = level - v inside, the level outside; g = 1 / sqrt(4 weights * 3).
TEST(LearnedScalesTest, UniformGradientsByHand) {
  const LayerQuantConfig config = Uniform(3, Granularity::kChannel);
  const torch::Tensor w = Row({0.9f, -2.6f, 5.0f, 1.4f}).requires_grad_(true);
  const torch::Tensor scale = torch::tensor({1.0f}).requires_grad_(true);
  const torch::Tensor q = FakeQuantize(w, config, scale);
  EXPECT_EQ(Values(q), std::vector<float>({1, -3, 3, 1}));
  (q * Row({1, 1, -1, 1})).sum().backward();
  const double expected = ((1 - 0.9f) + (-3 + 2.6f) + 3 * -1 + (1 - 1.4f)) / std::sqrt(12.0);
  EXPECT_NEAR(scale.grad().item<double>(), expected, 1e-6);
  // 5 is outside and the upstream -1 pushes it further out: blocked.
  EXPECT_EQ(Values(w.grad()), std::vector<float>({1, 1, 0, 1}));
}

// Ternary values are linear in the scale, so the estimate is the exact derivative (times g): checked by central
// differences per scale, over groups (a short last group included) and rows, and per tensor (one scale).
TEST(LearnedScalesTest, TernaryScaleGradientMatchesFiniteDifferences) {
  torch::manual_seed(23);
  const torch::Tensor w = torch::randn({3, 40});
  const torch::Tensor upstream = torch::randn({3, 40});
  for (const LayerQuantConfig& config : {Ternary(ThresholdRule::kRatio, 0.7, Granularity::kGroup, 16),
                                         Ternary(ThresholdRule::kRatio, 0.7, Granularity::kTensor)}) {
    const bool whole = config.grid.granularity == Granularity::kTensor;
    const double g = 1 / std::sqrt(whole ? 120.0 : 16.0);
    const torch::Tensor learned = LearnedScales(w, config).to(torch::kFloat64).requires_grad_(true);
    const torch::Tensor latent = w.to(torch::kFloat64);
    (FakeQuantize(latent, config, learned) * upstream).sum().backward();
    // The values are linear in the scale, so a wide step is exact but for float32 rounding of scale and values.
    const double step = 0.05;
    for (int64_t i = 0; i < learned.numel(); ++i) {
      torch::Tensor plus = learned.detach().clone(), minus = learned.detach().clone();
      plus[i] += step;
      minus[i] -= step;
      const double numeric = ((FakeQuantize(latent, config, plus) * upstream).sum().item<double>() -
                              (FakeQuantize(latent, config, minus) * upstream).sum().item<double>()) /
                             (2 * step);
      EXPECT_NEAR(learned.grad()[i].item<double>(), g * numeric, 1e-4 * (1 + std::abs(numeric)))
          << DescribeGrid(config.grid) << " scale " << i;
    }
  }
}

TEST(LearnedScalesTest, Refusals) {
  const torch::Tensor w = torch::randn({4, 64});
  WeightGrid asym;
  asym.symmetric = false;
  EXPECT_THROW(LearnedScales(w, QuantizedLayer(asym)), Error);
  EXPECT_THROW(QuantizeWithScales(w, *GgmlGridByName("q8_0"), torch::ones({4, 2})), Error);
  const LayerQuantConfig config = Uniform(4, Granularity::kChannel);
  EXPECT_THROW(QuantizeLayer(w, config, torch::ones({3})), Error);                      // 3 scales for 4 rows
  EXPECT_THROW(QuantizeWithScales(w, config.grid, torch::zeros({4, 1})), Error);       // not positive
  EXPECT_THROW(QuantizeWithScales(w, config.grid, torch::full({4, 1}, NAN)), Error);   // not finite
  // A row of zeros fits scale 0; its learned scale starts at the smallest allowed instead.
  torch::Tensor zero_row = w.clone();
  zero_row[1].zero_();
  const torch::Tensor learned = LearnedScales(zero_row, config);
  EXPECT_EQ(learned[1].item<double>(), static_cast<float>(kSmallestLearnedScale));
  EXPECT_TRUE(torch::equal(FakeQuantize(zero_row, config, learned)[1], torch::zeros({64})));
}

}  // namespace
}  // namespace atq
