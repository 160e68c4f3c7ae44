// Grids, RTN, GPTQ and calibrated ternary thresholds on known answers and against each other: RTN through the
// grids packs to exactly the bytes of the formats' reference quantizers; GPTQ equals RTN when the inputs are
// uncorrelated and beats it when they are not; ternary stays ternary; the Cholesky failure path raises damping.
#include "quant/gptq.h"

#include <vector>

#include <gtest/gtest.h>
#include <torch/torch.h>

#include "formats/atq_packed.h"
#include "grid/quantized_weight.h"
#include "quant/ternary_calibration.h"
#include "grid/weight_grid.h"
#include "test_util.h"

namespace atq {
namespace {

WeightGrid Uniform(int bits, bool symmetric, Granularity granularity, int64_t group_size = 0) {
  WeightGrid grid;
  grid.bits = bits;
  grid.symmetric = symmetric;
  grid.granularity = granularity;
  grid.group_size = group_size;
  return grid;
}

WeightGrid Ternary(Granularity granularity, int64_t group_size = 0) {
  WeightGrid grid;
  grid.kind = GridKind::kTernary;
  grid.granularity = granularity;
  grid.group_size = group_size;
  return grid;
}

std::vector<float> Values(const torch::Tensor& tensor) {
  const torch::Tensor flat = tensor.to(torch::kFloat32).contiguous().reshape({-1});
  return {flat.data_ptr<float>(), flat.data_ptr<float>() + flat.numel()};
}

// Inputs whose features are strongly correlated (a low-rank mix plus a little noise), as real activations are.
torch::Tensor CorrelatedInputs(int64_t samples, int64_t features) {
  const torch::Tensor mix = torch::randn({8, features});
  return torch::matmul(torch::randn({samples, 8}), mix) + 0.1 * torch::randn({samples, features});
}

torch::Tensor HessianOf(const torch::Tensor& inputs) {
  HessianAccumulator accumulator(inputs.size(1));
  accumulator.Add(inputs);
  return accumulator.hessian();
}

TEST(WeightGridTest, UniformSymmetricByHand) {
  // 2 bits: scale = max|w| / (2^1 - 1) = 1; levels round half away from zero and clamp to [-2, 1].
  const torch::Tensor w = torch::tensor({-1.0f, -0.5f, 0.0f, 0.5f, 1.0f}).reshape({1, 5});
  const QuantizedWeight q = QuantizeRtn(w, Uniform(2, true, Granularity::kChannel));
  EXPECT_EQ(Values(q.codes), std::vector<float>({1, 1, 2, 3, 3}));
  EXPECT_EQ(Values(q.values), std::vector<float>({-1, -1, 0, 1, 1}));
}

TEST(WeightGridTest, TernarySparsityRuleZeroesExactlyThatShare) {
  WeightGrid grid = Ternary(Granularity::kChannel);
  grid.threshold_rule = ThresholdRule::kSparsity;
  grid.threshold_value = 0.6;
  const torch::Tensor w = torch::randn({4, 100});
  const QuantizedWeight q = QuantizeRtn(w, grid);
  for (int64_t row = 0; row < 4; ++row) EXPECT_EQ((q.codes[row] == 1).sum().item<int64_t>(), 60);
  // Scale: mean |w| of the kept weights.
  const torch::Tensor kept = q.codes[0] != 1;
  EXPECT_NEAR(q.scales[0][0].item<float>(), w[0].abs().masked_select(kept).mean().item<float>(), 1e-6);
}

// Every atq format through the grids packs to the bytes of the format's own reference quantizer, and the
// bytes dequantize to exactly the values the quantizer used.
TEST(WeightGridTest, RtnPacksToTheReferenceQuantizersBytes) {
  torch::manual_seed(1);
  const torch::Tensor w = torch::randn({7, 77});  // odd rows, columns and a short last group
  std::vector<WeightGrid> grids = {Ternary(Granularity::kTensor), Ternary(Granularity::kChannel),
                                   Ternary(Granularity::kGroup, 32)};
  grids.back().base3_packing = true;
  for (int bits = 2; bits <= 8; ++bits) {
    for (const bool symmetric : {true, false}) {
      grids.push_back(Uniform(bits, symmetric, Granularity::kChannel));
      grids.push_back(Uniform(bits, symmetric, Granularity::kGroup, 32));
      grids.push_back(Uniform(bits, symmetric, Granularity::kTensor));
    }
  }
  const std::vector<float> source = Values(w);
  for (const WeightGrid& grid : grids) {
    SCOPED_TRACE(DescribeGrid(grid));
    const QuantizedWeight q = QuantizeRtn(w, grid);
    const Layout layout = GridLayout(grid, 7, 77);
    const std::vector<uint8_t> packed = PackQuantized(q);
    EXPECT_EQ(packed, Quantize(layout, source.data()));
    EXPECT_EQ(Dequantize(layout, packed.data(), static_cast<int64_t>(packed.size())), Values(q.values));
  }
}

// llama.cpp's block grids: RTN on them is llama.cpp's reference quantizer, byte for byte, and GPTQ's weights
// survive packing exactly.
TEST(WeightGridTest, GgmlGridsAreLlamaCppsQuantizers) {
  torch::manual_seed(5);
  const torch::Tensor w = torch::randn({5, 512});
  const torch::Tensor hessian = HessianOf(CorrelatedInputs(2048, 512));
  const std::vector<float> source = Values(w);
  for (const char* name : {"q8_0", "q4_0", "tq2_0", "tq1_0"}) {
    const WeightGrid grid = *GgmlGridByName(name);
    EXPECT_EQ(DescribeGrid(grid), name);
    SCOPED_TRACE(DescribeGrid(grid));
    const QuantizedWeight q = QuantizeRtn(w, grid);
    EXPECT_EQ(PackQuantized(q), Quantize(q.layout, source.data()));
    const QuantizedWeight gptq = Gptq(w, hessian, grid).weight;
    const std::vector<uint8_t> packed = PackQuantized(gptq);
    EXPECT_EQ(Dequantize(gptq.layout, packed.data(), static_cast<int64_t>(packed.size())), Values(gptq.values));
    EXPECT_LT(RelativeOutputError(w, gptq.values, hessian), RelativeOutputError(w, q.values, hessian));
  }
}

TEST(WeightGridTest, GgmlBlocksKeepScalesNoCodeReaches) {
  // GPTQ can leave a block without the extreme code its scale was fitted to; the blocks must still hold that
  // scale (llama.cpp's quantizer would derive 0.5 * 1 / -8 from these values instead).
  QuantizedWeight q;
  q.layout = GridLayout(WithKind(WeightGrid{}, GridKind::kQ4_0), 1, 32);
  q.codes = torch::full({1, 32}, 9.0f);
  q.scales = torch::full({1, 1}, 0.5f);
  q.values = torch::full({1, 32}, 0.5f);
  const std::vector<uint8_t> packed = PackQuantized(q);
  EXPECT_EQ(Dequantize(q.layout, packed.data(), static_cast<int64_t>(packed.size())), std::vector<float>(32, 0.5f));
}

TEST(HessianTest, RunningMeanIsTwiceTheSecondMoment) {
  const torch::Tensor x = torch::randn({10, 3});
  HessianAccumulator accumulator(3);
  accumulator.Add(x.slice(0, 0, 4));
  accumulator.Add(x.slice(0, 4, 10).reshape({2, 3, 3}));  // any leading shape
  EXPECT_EQ(accumulator.samples(), 10);
  EXPECT_TRUE(torch::allclose(accumulator.hessian(), 2.0 * torch::matmul(x.t(), x) / 10, 1e-5, 1e-6));
}

TEST(GptqTest, UncorrelatedInputsGiveRoundToNearest) {
  // With a diagonal Hessian no rounding error has anywhere to go, so GPTQ must round exactly like RTN.
  torch::manual_seed(2);
  const torch::Tensor w = torch::randn({16, 64});
  const torch::Tensor hessian = torch::diag(torch::rand({64}) + 0.5);
  for (const WeightGrid& grid : {Uniform(4, true, Granularity::kChannel), Uniform(3, false, Granularity::kGroup, 16),
                                 Ternary(Granularity::kChannel)}) {
    SCOPED_TRACE(DescribeGrid(grid));
    EXPECT_TRUE(torch::equal(Gptq(w, hessian, grid).weight.codes, QuantizeRtn(w, grid).codes));
  }
}

TEST(GptqTest, BeatsRoundToNearestOnOutputErrorAndStaysOnTheGrid) {
  torch::manual_seed(3);
  const torch::Tensor w = torch::randn({32, 128});
  const torch::Tensor hessian = HessianOf(CorrelatedInputs(2048, 128));
  GptqOptions act_order;
  act_order.act_order = true;
  for (const WeightGrid& grid : {Uniform(4, true, Granularity::kGroup, 32), Uniform(3, false, Granularity::kChannel),
                                 Ternary(Granularity::kGroup, 64), Ternary(Granularity::kChannel)}) {
    for (const GptqOptions& options : {GptqOptions{}, act_order}) {
      SCOPED_TRACE(DescribeGrid(grid) + (options.act_order ? " act-order" : ""));
      const QuantizedWeight gptq = Gptq(w, hessian, grid, options).weight;
      const double rtn_error = RelativeOutputError(w, QuantizeRtn(w, grid).values, hessian);
      EXPECT_LT(RelativeOutputError(w, gptq.values, hessian), 0.8 * rtn_error);
      // The packed bytes hold exactly the values GPTQ chose.
      const std::vector<uint8_t> packed = PackQuantized(gptq);
      EXPECT_EQ(Dequantize(gptq.layout, packed.data(), static_cast<int64_t>(packed.size())), Values(gptq.values));
      if (grid.kind == GridKind::kTernary) {  // every value is -s, 0 or +s of its group
        const int64_t group = grid.granularity == Granularity::kGroup ? grid.group_size : 128;
        const torch::Tensor scales = gptq.scales.repeat_interleave(group, 1).slice(1, 0, 128);
        EXPECT_TRUE(torch::equal(gptq.values, scales * (gptq.codes - 1)));
        EXPECT_TRUE(((gptq.codes == 0) | (gptq.codes == 1) | (gptq.codes == 2)).all().item<bool>());
      }
    }
  }
}

// GPTQ as its paper first states it (optimal brain surgeon, one column at a time): round column q, spread its
// error over the later columns by row q of the inverse Hessian, then remove q from the inverse (Gaussian
// elimination), all in double. The implementation's Cholesky form, lazy block updates and transposed blocks must
// choose the same codes.
torch::Tensor ObsReferenceCodes(const torch::Tensor& weight, const torch::Tensor& hessian, const WeightGrid& grid,
                                double damp) {
  torch::Tensor w = weight.to(torch::kFloat64).clone();
  const int64_t cols = w.size(1);
  const torch::Tensor h = hessian.to(torch::kFloat64);
  torch::Tensor hinv = torch::inverse(h + torch::eye(cols, torch::kFloat64) * (damp * h.diagonal().mean().item<double>()));
  const GridParams params = FitGrid(grid, weight.to(torch::kFloat32));
  torch::Tensor codes = torch::empty_like(weight);
  for (int64_t q = 0; q < cols; ++q) {
    const torch::Tensor column = w.slice(1, q, q + 1).to(torch::kFloat32);
    const torch::Tensor column_codes = RoundToCodes(grid, column, params);
    codes.slice(1, q, q + 1).copy_(column_codes);
    const double d = hinv[q][q].item<double>();
    const torch::Tensor error = (column - CodesToValues(grid, column_codes, params)).to(torch::kFloat64) / d;
    w -= error * hinv.slice(0, q, q + 1);
    hinv = hinv - torch::outer(hinv.select(1, q), hinv.select(0, q)) / d;
  }
  return codes;
}

TEST(GptqTest, ChoosesTheCodesOfTheTextbookColumnByColumnForm) {
  torch::manual_seed(7);
  const torch::Tensor w = torch::randn({48, 200});  // 200 columns: blocks of 64 with a short last one
  const torch::Tensor hessian = HessianOf(CorrelatedInputs(4096, 200));
  GptqOptions options;
  options.block_size = 64;
  for (const WeightGrid& grid : {Uniform(3, true, Granularity::kChannel), Uniform(4, false, Granularity::kChannel),
                                 Ternary(Granularity::kChannel)}) {
    SCOPED_TRACE(DescribeGrid(grid));
    const torch::Tensor codes = Gptq(w, hessian, grid, options).weight.codes;
    const torch::Tensor reference = ObsReferenceCodes(w, hessian, grid, options.damp);
    // float32 against double: a weight within rounding of a decision boundary may go the other way (and its
    // row's later columns then differ a little); anything systematic would differ in far more.
    const double differing = (codes != reference).to(torch::kFloat64).mean().item<double>();
    EXPECT_LE(differing, 0.002) << differing;
  }
}

TEST(HessianTest, TiledUpperTriangleEqualsTheFullProduct) {
  // Wide enough for several tiles and a short last one; added in two batches.
  torch::manual_seed(8);
  const torch::Tensor x = torch::randn({300, 1300});
  HessianAccumulator accumulator(1300);
  accumulator.Add(x.slice(0, 0, 100));
  accumulator.Add(x.slice(0, 100));
  const torch::Tensor h = accumulator.hessian();
  const torch::Tensor expected = 2.0 * torch::matmul(x.t().to(torch::kFloat64), x.to(torch::kFloat64)) / 300;
  EXPECT_TRUE(torch::allclose(h.to(torch::kFloat64), expected, 1e-4, 1e-4));
  // The tiles below the diagonal are mirrors of those above (within a diagonal tile the product's own order of
  // summation may differ by a rounding between (i, j) and (j, i), as a full product's does).
  EXPECT_TRUE(torch::equal(h.slice(0, 512).slice(1, 0, 512), h.slice(0, 0, 512).slice(1, 512).t()));
  EXPECT_TRUE(torch::equal(h.slice(0, 1024).slice(1, 512, 1024), h.slice(0, 512, 1024).slice(1, 1024).t()));
}

TEST(GptqTest, RaisesDampingUntilCholeskySucceeds) {
  // Eigenvalues -1 and 3, mean diagonal 1: damping 0.01 and 0.1 leave it indefinite, 1 singular, 10 works.
  const torch::Tensor hessian = torch::tensor({1.0f, 2.0f, 2.0f, 1.0f}).reshape({2, 2});
  const GptqResult result = Gptq(torch::randn({3, 2}), hessian, Uniform(4, true, Granularity::kChannel));
  EXPECT_EQ(result.damp_raises, 3);
  EXPECT_NEAR(result.damp, 10, 1e-9);
  GptqOptions few;
  few.max_damp_raises = 2;
  const std::string message = testutil::ErrorMessageOf(
      [&] { Gptq(torch::randn({3, 2}), hessian, Uniform(4, true, Granularity::kChannel), few); });
  EXPECT_NE(message.find("indefinite"), std::string::npos) << message;
}

TEST(GptqTest, DeadInputsQuantizeToZero) {
  torch::Tensor inputs = CorrelatedInputs(256, 16);
  inputs.select(1, 5).zero_();
  const QuantizedWeight q = Gptq(torch::randn({4, 16}), HessianOf(inputs), Uniform(4, true, Granularity::kChannel)).weight;
  EXPECT_TRUE((q.values.select(1, 5) == 0).all().item<bool>());
}

TEST(TernaryCalibrationTest, NoWorseThanAnyCandidateRuleOnOutputError) {
  torch::manual_seed(4);
  const torch::Tensor w = torch::randn({24, 96});
  const torch::Tensor hessian = HessianOf(CorrelatedInputs(1024, 96));
  for (const WeightGrid& grid : {Ternary(Granularity::kChannel), Ternary(Granularity::kGroup, 32)}) {
    SCOPED_TRACE(DescribeGrid(grid));
    const CalibratedTernary calibrated = CalibrateTernary(w, hessian, grid);
    const double error = RelativeOutputError(w, calibrated.weight.values, hessian);
    for (const double ratio : DefaultTernaryRatios()) {
      WeightGrid rule = grid;
      rule.threshold_value = ratio;
      EXPECT_LE(error, RelativeOutputError(w, QuantizeRtn(w, rule).values, hessian) + 1e-12) << ratio;
    }
    EXPECT_EQ(calibrated.ratios.size(0), 24);
    const std::vector<uint8_t> packed = PackQuantized(calibrated.weight);
    EXPECT_EQ(Dequantize(calibrated.weight.layout, packed.data(), static_cast<int64_t>(packed.size())),
              Values(calibrated.weight.values));
  }
  EXPECT_FALSE(testutil::ErrorMessageOf([&] { CalibrateTernary(w, hessian, Uniform(4, true, Granularity::kChannel)); })
                   .empty());
}

}  // namespace
}  // namespace atq
