// ATQ math on known inputs: thresholds, closed-form scales, RPB, straight-through gradients, uniform grid,
// sparsity schedule.
#include "grid/fake_quant.h"

#include <cmath>
#include <cstring>
#include <tuple>
#include <vector>

#include <gtest/gtest.h>
#include <torch/torch.h>

#include "formats/atq_packed.h"
#include "formats/quant_type.h"
#include "grid/quantized_weight.h"
#include "grid/weight_grid.h"
#include "util/error.h"

namespace atq {
namespace {

// Values below are exact in float32 or come from one float division; 1e-6 covers the division's rounding.
constexpr double kExact = 1e-6;

torch::Tensor Row(std::vector<float> values) {
  return torch::tensor(values, torch::kFloat).reshape({1, static_cast<int64_t>(values.size())});
}

std::vector<float> Values(const torch::Tensor& tensor) {
  const torch::Tensor flat = tensor.detach().to(torch::kFloat).contiguous().reshape({-1});
  return std::vector<float>(flat.data_ptr<float>(), flat.data_ptr<float>() + flat.numel());
}

LayerQuantConfig SparsityConfig(double sparsity, bool per_channel = true) {
  LayerQuantConfig config;
  config.quantized = true;
  config.grid.kind = GridKind::kTernary;
  config.grid.threshold_rule = ThresholdRule::kSparsity;
  config.grid.threshold_value = sparsity;
  config.grid.granularity = per_channel ? Granularity::kChannel : Granularity::kTensor;
  return config;
}

LayerQuantConfig UniformConfig(int bits, bool per_channel = true) {
  LayerQuantConfig config;
  config.quantized = true;
  config.grid.kind = GridKind::kUniform;
  config.grid.bits = bits;
  config.grid.granularity = per_channel ? Granularity::kChannel : Granularity::kTensor;
  return config;
}

// The old Ternary view of a quantization: trits in the weight's shape, scales and thresholds per row (or one
// per tensor).
struct Ternary {
  torch::Tensor codes, scales, thresholds, boosted, effective;
};
Ternary Ternarize(const torch::Tensor& weight, const LayerQuantConfig& config) {
  const LayerQuantization q = QuantizeLayer(weight, config);
  const bool whole = config.grid.granularity == Granularity::kTensor;
  const auto per_row = [&](const torch::Tensor& t) { return (whole ? t.slice(0, 0, 1) : t).reshape({-1}).to(torch::kFloat); };
  return {Trits(q, weight), per_row(q.packed.scales), per_row(q.packed.thresholds), q.boosted, q.effective};
}

TEST(TernaryTest, SparsityThresholdCodesAndScaleByHand) {
  // |w| sorted: 0.5 1 2 3 4; k = floor(0.4 * 5) = 2 -> threshold 1; codes sign(w)[|w| > 1]; a = (4+2+3)/3 = 3.
  const Ternary result = Ternarize(Row({-4, -1, 0.5, 2, 3}), SparsityConfig(0.4));
  EXPECT_EQ(Values(result.thresholds), std::vector<float>({1}));
  EXPECT_EQ(Values(result.codes), std::vector<float>({-1, 0, 0, 1, 1}));
  EXPECT_EQ(result.codes.scalar_type(), torch::kInt8);
  EXPECT_EQ(Values(result.scales), std::vector<float>({3}));
  EXPECT_EQ(Values(result.effective), std::vector<float>({-3, 0, 0, 3, 3}));
  EXPECT_FALSE(result.boosted.any().item<bool>());
}

TEST(TernaryTest, PerChannelAndPerLayerThresholds) {
  const torch::Tensor w = torch::tensor({1.f, 2.f, 3.f, 4.f, -10.f, 0.1f, 5.f, -6.f}).reshape({2, 4});
  // Per channel, k = 2: row 0 -> 2, row 1 (0.1 5 6 10) -> 5.
  const Ternary channel = Ternarize(w, SparsityConfig(0.5));
  EXPECT_EQ(Values(channel.thresholds), std::vector<float>({2, 5}));
  EXPECT_EQ(Values(channel.codes), std::vector<float>({0, 0, 1, 1, -1, 0, 0, -1}));
  EXPECT_EQ(Values(channel.scales), std::vector<float>({3.5, 8}));
  // Per layer, k = 4 of 0.1 1 2 3 4 5 6 10 -> 3; a = (4 + 10 + 5 + 6) / 4.
  const Ternary layer = Ternarize(w, SparsityConfig(0.5, /*per_channel=*/false));
  EXPECT_EQ(Values(layer.thresholds), std::vector<float>({3}));
  EXPECT_EQ(Values(layer.codes), std::vector<float>({0, 0, 0, 1, -1, 0, 1, -1}));
  EXPECT_EQ(Values(layer.scales), std::vector<float>({6.25}));
}

TEST(TernaryTest, MagnitudeModes) {
  LayerQuantConfig config = SparsityConfig(0);
  config.grid.threshold_rule = ThresholdRule::kAbsolute;
  config.grid.threshold_value = 2.5;
  Ternary result = Ternarize(Row({-4, -1, 0.5, 2, 3}), config);
  EXPECT_EQ(Values(result.thresholds), std::vector<float>({2.5}));
  EXPECT_EQ(Values(result.codes), std::vector<float>({-1, 0, 0, 0, 1}));
  EXPECT_EQ(Values(result.scales), std::vector<float>({3.5}));

  // mean |w| = 10.5 / 5 = 2.1; threshold 0.5 * 2.1 = 1.05.
  config.grid.threshold_rule = ThresholdRule::kRatio;
  config.grid.threshold_value = 0.5;
  result = Ternarize(Row({-4, -1, 0.5, 2, 3}), config);
  EXPECT_NEAR(Values(result.thresholds)[0], 1.05, kExact);
  EXPECT_EQ(Values(result.codes), std::vector<float>({-1, 0, 0, 1, 1}));
}

TEST(TernaryTest, SparsityExtremes) {
  Ternary none = Ternarize(Row({-4, -1, 0.5, 2, 3}), SparsityConfig(0));
  EXPECT_EQ(Values(none.thresholds), std::vector<float>({0}));
  EXPECT_EQ(Values(none.codes), std::vector<float>({-1, -1, 1, 1, 1}));
  Ternary all = Ternarize(Row({-4, -1, 0.5, 2, 3}), SparsityConfig(1));
  EXPECT_EQ(Values(all.codes), std::vector<float>({0, 0, 0, 0, 0}));
  EXPECT_EQ(Values(all.scales), std::vector<float>({0}));
  EXPECT_THROW(Ternarize(Row({1, 2}), SparsityConfig(1.5)), Error);
  EXPECT_THROW(Ternarize(torch::empty({0, 3}), SparsityConfig(0.5)), Error);
}

TEST(TernaryTest, SparsityTargetIsMetExactlyPerChannel) {
  torch::manual_seed(1);
  const torch::Tensor w = torch::randn({16, 8, 3, 3});  // 72 weights per channel
  const Ternary result = Ternarize(w, SparsityConfig(0.3));
  const torch::Tensor zeros = (result.codes == 0).reshape({16, -1}).sum(1);
  EXPECT_TRUE((zeros == 21).all().item<bool>()) << zeros;  // floor(0.3 * 72)
}

TEST(TernaryTest, ScaleMinimizesSquaredError) {
  torch::manual_seed(2);
  const torch::Tensor w = torch::randn({8, 40});
  for (const bool per_channel : {true, false}) {
    const Ternary result = Ternarize(w, SparsityConfig(0.5, per_channel));
    const torch::Tensor codes = result.codes.to(torch::kFloat);
    const auto error = [&](const torch::Tensor& scales) {
      const torch::Tensor a = per_channel ? scales.reshape({-1, 1}) : scales;
      // Per channel each row's scale minimizes that row's error; per layer the one scale minimizes the total.
      const torch::Tensor squared = (w - a * codes).pow(2).to(torch::kDouble);
      return per_channel ? squared.sum(1) : squared.sum();
    };
    const torch::Tensor best = error(result.scales);
    for (const double delta : {-1e-2, -1e-3, 1e-3, 1e-2}) {
      const torch::Tensor worse = error(result.scales + delta);
      EXPECT_TRUE((worse >= best - 1e-6).all().item<bool>()) << "per_channel " << per_channel << " delta " << delta;
    }
  }
}

TEST(TernaryTest, SteGradientFollowsTheRoutingRule) {
  // a = 3, threshold 1, ste_clip 0.9 -> clip 2.7: |w| <= 2.7 passes; |w| = 4 and 3 pass only inward.
  LayerQuantConfig config = SparsityConfig(0.4);
  config.ste_clip = 0.9;
  const torch::Tensor w = Row({-4, -1, 0.5, 2, 3}).requires_grad_(true);
  for (const std::vector<float>& upstream : {std::vector<float>{1, 2, 3, -4, 5}, std::vector<float>{-1, 2, 3, -4, -5}}) {
    w.mutable_grad() = torch::Tensor();
    const torch::Tensor q = FakeQuantize(w, config);
    EXPECT_EQ(Values(q), std::vector<float>({-3, 0, 0, 3, 3}));
    (q * Row(upstream)).sum().backward();
    std::vector<float> expected(5);
    const std::vector<float> latent = Values(w);
    for (size_t i = 0; i < 5; ++i) {
      const bool pass = std::abs(latent[i]) <= 2.7f || upstream[i] * latent[i] > 0;
      expected[i] = pass ? upstream[i] : 0;
    }
    EXPECT_EQ(Values(w.grad()), expected);
  }
  // The first upstream blocks w = -4 (outward), passes w = 3 (inward); the second the reverse.
}

TEST(TernaryTest, SteGradientMatchesFiniteDifferenceInsideTheRange) {
  // Inside the clip range the estimator is the identity: the derivative of L = sum(g * w) in w.
  LayerQuantConfig config = SparsityConfig(0.5);
  config.ste_clip = 100;  // everything inside
  torch::manual_seed(3);
  const torch::Tensor w = torch::randn({3, 4}).requires_grad_(true);
  const torch::Tensor g = torch::randn({3, 4});
  (FakeQuantize(w, config) * g).sum().backward();
  const double step = 1e-3;
  for (int64_t i = 0; i < w.numel(); ++i) {
    torch::Tensor plus = w.detach().clone().reshape({-1});
    torch::Tensor minus = plus.clone();
    plus[i] += step;
    minus[i] -= step;
    const double numeric =
        ((plus.reshape({3, 4}) * g).sum().item<double>() - (minus.reshape({3, 4}) * g).sum().item<double>()) /
        (2 * step);
    EXPECT_NEAR(w.grad().reshape({-1})[i].item<double>(), numeric, 1e-3);
  }
}

TEST(TernaryTest, ResidualPrecisionBoosting) {
  torch::manual_seed(4);
  const torch::Tensor w = torch::randn({10, 50});
  LayerQuantConfig config = SparsityConfig(0.5);
  config.rpb_fraction = 0.02;  // floor(0.02 * 500) = 10
  const Ternary result = Ternarize(w, config);
  ASSERT_EQ(result.boosted.sum().item<int64_t>(), 10);
  // At boosted positions the weight itself, rounded to the f16 it is stored as.
  EXPECT_TRUE(torch::equal(result.effective.masked_select(result.boosted),
                           w.masked_select(result.boosted).to(torch::kHalf).to(torch::kFloat)));
  // Boosted = the largest errors of the plain ternary weight.
  const Ternary plain = Ternarize(w, SparsityConfig(0.5));
  const torch::Tensor errors = (w - plain.effective).abs();
  EXPECT_GE(errors.masked_select(result.boosted).min().item<float>(),
            errors.masked_select(result.boosted.logical_not()).max().item<float>());
  EXPECT_TRUE(torch::equal(result.codes, plain.codes));
  // Elsewhere {-a, 0, a} per row, with a refit without the boosted weights.
  const torch::Tensor used = (result.codes != 0) & result.boosted.logical_not();
  const torch::Tensor refit = (w.abs() * used).sum(1) / used.sum(1);
  EXPECT_TRUE(torch::allclose(result.scales, refit, 0, kExact));
  const torch::Tensor ternary = result.scales.reshape({-1, 1}) * result.codes.to(torch::kFloat);
  EXPECT_TRUE(torch::equal(result.effective.masked_select(result.boosted.logical_not()),
                           ternary.masked_select(result.boosted.logical_not())));
  // Boosted weights take the gradient whatever their size and direction.
  const torch::Tensor latent = w.clone().requires_grad_(true);
  FakeQuantize(latent, config).sum().backward();
  EXPECT_TRUE((latent.grad().masked_select(result.boosted) == 1).all().item<bool>());
  EXPECT_THROW(RpbMask(w, plain.effective, 1.0), Error);
}

TEST(TernaryTest, UniformGridByHand) {
  // 3 bits: levels 3, scale 1/3; w / scale = -3 1.5 0.75 3 -> rounded half away from zero (the packer's rule):
  // -3 2 1 3, stored as code + 4.
  const LayerQuantization result = QuantizeLayer(Row({-1, 0.5, 0.25, 1}), UniformConfig(3));
  EXPECT_EQ(Values(result.packed.codes), std::vector<float>({1, 6, 5, 7}));
  EXPECT_NEAR(Values(result.packed.scales)[0], 1.0 / 3, kExact);
  const std::vector<float> effective = Values(result.effective);
  const std::vector<double> expected = {-1, 2.0 / 3, 1.0 / 3, 1};
  for (size_t i = 0; i < expected.size(); ++i) EXPECT_NEAR(effective[i], expected[i], kExact);
  // A zero row stays zero; gradient is the identity.
  EXPECT_EQ(Values(QuantizeLayer(torch::zeros({2, 3}), UniformConfig(4)).effective), std::vector<float>(6, 0));
  const torch::Tensor w = torch::randn({4, 5}).requires_grad_(true);
  (FakeQuantize(w, UniformConfig(4)) * 2).sum().backward();
  EXPECT_TRUE((w.grad() == 2).all().item<bool>());
  EXPECT_THROW(QuantizeLayer(w, UniformConfig(9)), Error);
  EXPECT_THROW(QuantizeLayer(w, UniformConfig(1)), Error);
}

TEST(TernaryTest, UniformEightBitsIsClose) {
  torch::manual_seed(5);
  const torch::Tensor w = torch::randn({6, 30});
  const LayerQuantization result = QuantizeLayer(w, UniformConfig(8));
  const torch::Tensor half_step = result.packed.scales / 2;
  EXPECT_TRUE(((w - result.effective).abs() <= half_step + 1e-7).all().item<bool>());
}

TEST(OneGridTest, SparsityShareCountsTheWeightsTheUserAskedFor) {
  // 0.29 * 100 is 28.999999999999996 in double: the share is 29 weights, on every path.
  EXPECT_EQ(SparsityCount(0.29, 100), 29);
  EXPECT_EQ(SparsityCount(0.3, 72), 21);
  EXPECT_EQ(SparsityCount(0, 10), 0);
  EXPECT_EQ(SparsityCount(1, 10), 10);
  const torch::Tensor w = torch::arange(1, 101, torch::kFloat32).reshape({1, 100});
  WeightGrid grid = SparsityConfig(0.29).grid;
  EXPECT_EQ((QuantizeRtn(w, grid).codes == 1).sum().item<int64_t>(), 29);
  EXPECT_EQ((Ternarize(w, SparsityConfig(0.29)).codes == 0).sum().item<int64_t>(), 29);
}

// Every grid QAT trains on, on weights of several shapes: the fake quantizer's forward value, language-model RTN's
// (QuantizeRtn) and the packer's bytes agree bit for bit, and unpacking the bytes gives the trained values.
TEST(OneGridTest, QatForwardIsWhatTheQuantizerAndThePackerStore) {
  torch::manual_seed(11);
  std::vector<LayerQuantConfig> configs = {SparsityConfig(0.5), SparsityConfig(0.29, false), UniformConfig(4),
                                           UniformConfig(8, false), UniformConfig(3)};
  LayerQuantConfig ratio = SparsityConfig(0);
  ratio.grid.threshold_rule = ThresholdRule::kRatio;
  ratio.grid.threshold_value = 0.7;
  configs.push_back(ratio);
  LayerQuantConfig grouped = UniformConfig(4);
  grouped.grid.granularity = Granularity::kGroup;
  grouped.grid.group_size = 16;
  configs.push_back(grouped);
  for (const std::vector<int64_t>& shape : {std::vector<int64_t>{8, 3, 3, 3}, std::vector<int64_t>{5, 40}}) {
    const torch::Tensor w = torch::randn(shape);
    for (const LayerQuantConfig& config : configs) {
      const std::string what = DescribeGrid(config.grid);
      const torch::Tensor forward = FakeQuantize(w.clone().requires_grad_(true), config).detach();
      const QuantizedWeight rtn = QuantizeRtn(w.reshape({shape[0], -1}), config.grid);
      EXPECT_TRUE(torch::equal(forward.reshape({shape[0], -1}), rtn.values)) << what;
      const LayerQuantization layer = QuantizeLayer(w, config);
      EXPECT_TRUE(torch::equal(layer.packed.codes, rtn.codes)) << what;
      EXPECT_TRUE(torch::equal(layer.packed.scales, rtn.scales)) << what;
      const std::vector<uint8_t> bytes = PackQuantized(layer.packed);
      const std::vector<float> unpacked = Dequantize(layer.packed.layout, bytes.data(), static_cast<int64_t>(bytes.size()));
      EXPECT_EQ(std::memcmp(unpacked.data(), forward.contiguous().data_ptr<float>(), unpacked.size() * sizeof(float)), 0)
          << what;
    }
  }
}

// llama.cpp's ternary blocks as a QAT grid: the forward pass is exactly what TQ2_0/TQ1_0 store (llama.cpp's own
// quantizer on the latent weights gives the same bytes), and every weight is inside the block's range, so the
// straight-through gradient passes everywhere.
TEST(OneGridTest, Tq2_0QatForwardIsLlamaCppsBlocks) {
  torch::manual_seed(13);
  const torch::Tensor w = torch::randn({4, 512});
  for (const char* name : {"tq2_0", "tq1_0"}) {
    const LayerQuantConfig config = QuantizedLayer(*GgmlGridByName(name));
    EXPECT_EQ(config.mode(), WeightMode::kTernary);
    const torch::Tensor latent = w.clone().requires_grad_(true);
    const torch::Tensor forward = FakeQuantize(latent, config);
    const std::vector<uint8_t> reference = Quantize(QuantizeLayer(w, config).packed.layout, w.contiguous().data_ptr<float>());
    EXPECT_EQ(PackQuantized(QuantizeLayer(w, config).packed), reference) << name;
    const std::vector<float> unpacked = Dequantize(QuantizeLayer(w, config).packed.layout, reference.data(),
                                                   static_cast<int64_t>(reference.size()));
    EXPECT_EQ(unpacked, Values(forward)) << name;
    forward.sum().backward();
    EXPECT_TRUE(torch::equal(latent.grad(), torch::ones_like(w))) << name;
  }
  LayerQuantConfig boosted = QuantizedLayer(*GgmlGridByName("tq2_0"));
  boosted.rpb_fraction = 0.01;
  EXPECT_THROW(ValidateLayerConfig(boosted), Error);
  WeightGrid wrong_block = *GgmlGridByName("tq2_0");
  wrong_block.group_size = 128;
  EXPECT_THROW(ValidateGrid(wrong_block), Error);
}

// A tq2_0 grid with a threshold rule: each 256-weight block fitted as atq's ternary grids fit a group (threshold
// from the rule, scale the mean kept |w|), the scale rounded to float16 so that the TQ2_0/TQ1_0 file holds the
// forward pass exactly. Known answer: a block of 16 weights at 4 and 240 at 1 keeps all 256 at ratio 0.7
// (threshold 0.7 * 1.1875), scale 304 / 256 = 1.1875; llama.cpp's absmax rule keeps the 16 at scale 4.
TEST(OneGridTest, Tq2_0WithAThresholdRuleIsFittedPerBlockAndStoredExactly) {
  torch::Tensor block = torch::ones({1, 256});
  block.slice(1, 0, 16).fill_(4);
  block.slice(1, 16, 32).mul_(-1);
  const WeightGrid absmax = *GgmlGridByName("tq2_0");
  EXPECT_EQ(absmax.threshold_rule, ThresholdRule::kAbsmax);
  WeightGrid fitted = absmax;
  fitted.threshold_rule = ThresholdRule::kRatio;
  fitted.threshold_value = 0.7;
  EXPECT_EQ(DescribeGrid(fitted), "tq2_0 ratio 0.7");
  const QuantizedWeight llama = QuantizeRtn(block, absmax);
  EXPECT_EQ(Values(llama.scales), std::vector<float>({4}));
  EXPECT_EQ((llama.codes != 1).sum().item<int64_t>(), 16);
  const QuantizedWeight kept = QuantizeRtn(block, fitted);
  EXPECT_EQ(Values(kept.scales), std::vector<float>({1.1875f}));
  EXPECT_EQ((kept.codes != 1).sum().item<int64_t>(), 256);
  EXPECT_EQ(Values(kept.codes.slice(1, 16, 32)), std::vector<float>(16, 0));

  // On random weights: the codes of atq's ternary g256 grid, its scales rounded to float16, and the file's bytes
  // dequantize to the forward pass, for tq2_0 and tq1_0 and each threshold rule.
  torch::manual_seed(14);
  const torch::Tensor w = torch::randn({4, 512});
  for (const char* name : {"tq2_0", "tq1_0"}) {
    for (const auto& [rule, value] : {std::pair{ThresholdRule::kRatio, 0.7}, std::pair{ThresholdRule::kSparsity, 0.4},
                                      std::pair{ThresholdRule::kAbsolute, 0.5}}) {
      WeightGrid grid = *GgmlGridByName(name);
      grid.threshold_rule = rule;
      grid.threshold_value = value;
      WeightGrid ternary = grid;
      ternary.kind = GridKind::kTernary;
      ternary.base3_packing = false;
      const std::string what = DescribeGrid(grid);
      const QuantizedWeight ours = QuantizeRtn(w, grid), reference = QuantizeRtn(w, ternary);
      EXPECT_TRUE(torch::equal(ours.codes, reference.codes)) << what;
      EXPECT_TRUE(torch::equal(ours.scales, reference.scales.to(torch::kFloat16).to(torch::kFloat32))) << what;
      const LayerQuantConfig config = QuantizedLayer(grid);
      const torch::Tensor forward = FakeQuantize(w, config);
      const LayerQuantization layer = QuantizeLayer(w, config);
      EXPECT_EQ(layer.packed.layout.type, std::string(name) == "tq2_0" ? QuantType::kTQ2_0 : QuantType::kTQ1_0);
      const std::vector<uint8_t> bytes = PackQuantized(layer.packed);
      EXPECT_EQ(Dequantize(layer.packed.layout, bytes.data(), static_cast<int64_t>(bytes.size())), Values(forward))
          << what;
    }
  }
  // The absmax rule is llama.cpp's for its blocks; atq's ternary grids fit their scales to the kept weights.
  WeightGrid wrong = fitted;
  wrong.kind = GridKind::kTernary;
  wrong.threshold_rule = ThresholdRule::kAbsmax;
  EXPECT_THROW(ValidateGrid(wrong), Error);
  EXPECT_EQ(ParseThresholdRule("absmax"), ThresholdRule::kAbsmax);
}

// QuantizeRtn fits a matrix of whole groups in one pass ([rows * groups, group]); the fit of each group on its own
// (FitGrid and RoundToCodes per span, as GPTQ calls them) gives the same bits for every kind of grid.
TEST(OneGridTest, OnePassOverTheGroupsIsTheFitOfEachGroup) {
  torch::manual_seed(15);
  const torch::Tensor w = torch::randn({6, 512}) * torch::rand({6, 1});
  std::vector<WeightGrid> grids;
  for (const char* name : {"q8_0", "q4_0", "tq2_0"}) grids.push_back(*GgmlGridByName(name));
  WeightGrid fitted = *GgmlGridByName("tq2_0");
  fitted.threshold_rule = ThresholdRule::kSparsity;
  fitted.threshold_value = 0.4;
  grids.push_back(fitted);
  for (const auto& [kind, bits, symmetric, clip, rule] :
       {std::tuple{GridKind::kTernary, 2, true, ClipRule::kMax, ThresholdRule::kRatio},
        std::tuple{GridKind::kTernary, 2, true, ClipRule::kMax, ThresholdRule::kSparsity},
        std::tuple{GridKind::kUniform, 4, true, ClipRule::kMax, ThresholdRule::kRatio},
        std::tuple{GridKind::kUniform, 3, false, ClipRule::kMax, ThresholdRule::kRatio},
        std::tuple{GridKind::kUniform, 4, true, ClipRule::kMse, ThresholdRule::kRatio}}) {
    WeightGrid grid;
    grid.kind = kind;
    grid.bits = bits;
    grid.symmetric = symmetric;
    grid.clip = clip;
    grid.threshold_rule = rule;
    grid.threshold_value = rule == ThresholdRule::kSparsity ? 0.3 : 0.7;
    grid.granularity = Granularity::kGroup;
    grid.group_size = 64;
    grids.push_back(grid);
  }
  for (const WeightGrid& grid : grids) {
    const std::string what = DescribeGrid(grid);
    std::vector<GridParams> params;
    std::vector<torch::Tensor> codes;
    for (const auto& [begin, end] : ScaleSpans(grid, w.size(1))) {
      params.push_back(FitGrid(grid, w.slice(1, begin, end), false));
      codes.push_back(RoundToCodes(grid, w.slice(1, begin, end), params.back()));
    }
    const QuantizedWeight each = AssembleQuantized(grid, torch::cat(codes, 1), params);
    const QuantizedWeight one = QuantizeRtn(w, grid);
    EXPECT_TRUE(torch::equal(one.codes, each.codes)) << what;
    EXPECT_TRUE(torch::equal(one.scales, each.scales)) << what;
    EXPECT_TRUE(torch::equal(one.values, each.values)) << what;
    EXPECT_EQ(one.zeros.defined(), each.zeros.defined()) << what;
    if (one.zeros.defined()) EXPECT_TRUE(torch::equal(one.zeros, each.zeros)) << what;
    EXPECT_EQ(one.thresholds.defined(), each.thresholds.defined()) << what;
    if (one.thresholds.defined()) EXPECT_TRUE(torch::equal(one.thresholds, each.thresholds)) << what;
    EXPECT_EQ(one.layout.type, each.layout.type) << what;
  }
}

TEST(OneGridTest, PackersReferenceQuantizerIsTheDefaultGrid) {
  // The format table's own quantizer (ternary: 0.7 * mean |w| per channel; uniform symmetric: max |w|) and the
  // grid give the same bytes.
  torch::manual_seed(12);
  const torch::Tensor w = torch::randn({6, 50});
  LayerQuantConfig ternary = SparsityConfig(0);
  ternary.grid.threshold_rule = ThresholdRule::kRatio;
  ternary.grid.threshold_value = 0.7;
  for (const LayerQuantConfig& config : {ternary, UniformConfig(4), UniformConfig(8)}) {
    const LayerQuantization q = QuantizeLayer(w, config);
    const std::vector<uint8_t> reference = Quantize(q.packed.layout, w.contiguous().data_ptr<float>());
    EXPECT_EQ(PackQuantized(q.packed), reference) << DescribeGrid(config.grid);
  }
}

TEST(TernaryTest, FullModeIsTheWeight) {
  LayerQuantConfig config;
  const torch::Tensor w = torch::randn({3, 3});
  EXPECT_TRUE(torch::equal(FakeQuantize(w, config), w));
  EXPECT_TRUE(torch::equal(QuantizedWeightValues(w, config), w));
}

TEST(TernaryTest, SparsityScheduleKnownAnswers) {
  EXPECT_DOUBLE_EQ(ScheduledSparsity(0.5, 0, 4, SparsityRamp::kLinear), 0);
  EXPECT_DOUBLE_EQ(ScheduledSparsity(0.5, 1, 4, SparsityRamp::kLinear), 0.125);
  EXPECT_DOUBLE_EQ(ScheduledSparsity(0.5, 2, 4, SparsityRamp::kLinear), 0.25);
  EXPECT_DOUBLE_EQ(ScheduledSparsity(0.5, 4, 4, SparsityRamp::kLinear), 0.5);
  EXPECT_DOUBLE_EQ(ScheduledSparsity(0.5, 10, 4, SparsityRamp::kLinear), 0.5);
  EXPECT_DOUBLE_EQ(ScheduledSparsity(0.5, 0, 4, SparsityRamp::kCubic), 0);
  EXPECT_DOUBLE_EQ(ScheduledSparsity(0.5, 1, 4, SparsityRamp::kCubic), 0.5 * (1 - 0.421875));  // 1 - 0.75^3
  EXPECT_DOUBLE_EQ(ScheduledSparsity(0.5, 2, 4, SparsityRamp::kCubic), 0.4375);              // 1 - 0.5^3
  EXPECT_DOUBLE_EQ(ScheduledSparsity(0.5, 4, 4, SparsityRamp::kCubic), 0.5);
  EXPECT_DOUBLE_EQ(ScheduledSparsity(0.5, 1.5, 3, SparsityRamp::kLinear), 0.25);
  EXPECT_DOUBLE_EQ(ScheduledSparsity(0.7, 0, 0, SparsityRamp::kCubic), 0.7);
}

}  // namespace
}  // namespace atq
