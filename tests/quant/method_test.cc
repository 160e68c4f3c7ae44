// The method table: lookups, validation, fallbacks, and that each row's quantize call is its method.
#include "quant/method.h"

#include <gtest/gtest.h>
#include <torch/torch.h>

#include "quant/gptq.h"
#include "test_util.h"

namespace atq {
namespace {

WeightGrid Ternary() {
  WeightGrid grid;
  grid.kind = GridKind::kTernary;
  return grid;
}

TEST(QuantMethodTest, TableListsEveryMethodOnceAndUnknownNamesListThem) {
  EXPECT_EQ(QuantMethodNames(), "rtn, atq, gptq");
  for (const QuantMethodRow& row : QuantMethods()) EXPECT_EQ(&FindQuantMethod(row.name), &row);
  const std::string message = testutil::ErrorMessageOf([] { FindQuantMethod("awq"); });
  EXPECT_NE(message.find("awq"), std::string::npos) << message;
  EXPECT_NE(message.find("rtn, atq, gptq"), std::string::npos) << message;
}

TEST(QuantMethodTest, ValidationAndFallbacks) {
  const WeightGrid uniform;  // int4 sym channel
  EXPECT_NO_THROW(ValidateMethod("rtn", uniform, /*calibrated=*/false, "x"));
  EXPECT_NE(testutil::ErrorMessageOf([&] { ValidateMethod("atq", uniform, true, "layer"); }).find("layer: atq"),
            std::string::npos);
  EXPECT_NE(testutil::ErrorMessageOf([&] { ValidateMethod("gptq", uniform, false, "w"); }).find("calibration"),
            std::string::npos);
  EXPECT_NO_THROW(ValidateMethod("atq", Ternary(), false, "x"));
  // Mixed precision may give ATQ a uniform candidate: GPTQ takes it.
  EXPECT_EQ(MethodForGrid("atq", uniform).name, "gptq");
  EXPECT_EQ(MethodForGrid("atq", Ternary()).name, "atq");
  EXPECT_EQ(MethodForGrid("rtn", uniform).name, "rtn");
}

TEST(QuantMethodTest, RowsQuantizeAsTheirAlgorithms) {
  torch::manual_seed(4);
  const torch::Tensor w = torch::randn({8, 64});
  const torch::Tensor x = torch::randn({256, 64});
  HessianAccumulator accumulator(64);
  accumulator.Add(x);
  const torch::Tensor h = accumulator.hessian();
  const torch::Tensor none;
  MethodOptions options;
  WeightGrid grid;
  grid.granularity = Granularity::kGroup;
  grid.group_size = 32;
  const std::string name = "layer";
  EXPECT_TRUE(torch::equal(FindQuantMethod("rtn").quantize({w, none, grid, options, name}).weight.values,
                           QuantizeRtn(w, grid).values));
  const MethodResult gptq = FindQuantMethod("gptq").quantize({w, h, grid, options, name});
  EXPECT_TRUE(torch::equal(gptq.weight.values, Gptq(w, h, grid, options.gptq).weight.values));
  EXPECT_GT(gptq.damp, 0);
  // ATQ without calibration is the grid's own rule; with it, thresholds fitted to the output error.
  EXPECT_TRUE(torch::equal(FindQuantMethod("atq").quantize({w, none, Ternary(), options, name}).weight.values,
                           QuantizeRtn(w, Ternary()).values));
  EXPECT_GT(FindQuantMethod("atq").quantize({w, h, Ternary(), options, name}).threshold_ratio, 0);
}

// A matrix large enough for the RTN row to round it a chunk of rows at a time (above 4 M weights) gets exactly the
// codes, scales and values of rounding it whole, on every kind of grid whose rows stand alone.
TEST(QuantMethodTest, RtnInRowChunksIsRtnWhole) {
  torch::manual_seed(5);
  const torch::Tensor w = torch::randn({4100, 1088});
  const torch::Tensor none;
  MethodOptions options;
  const std::string name = "big";
  WeightGrid asym;
  asym.bits = 4;
  asym.symmetric = false;
  asym.granularity = Granularity::kGroup;
  asym.group_size = 64;
  WeightGrid q4;
  q4.kind = GridKind::kQ4_0;
  q4.granularity = Granularity::kGroup;
  q4.group_size = 32;
  WeightGrid per_tensor;
  per_tensor.granularity = Granularity::kTensor;
  for (const WeightGrid& grid : {Ternary(), asym, q4, per_tensor}) {
    SCOPED_TRACE(DescribeGrid(grid));
    const QuantizedWeight chunked = FindQuantMethod("rtn").quantize({w, none, grid, options, name}).weight;
    const QuantizedWeight whole = QuantizeRtn(w, grid);
    EXPECT_TRUE(torch::equal(chunked.codes, whole.codes));
    EXPECT_TRUE(torch::equal(chunked.scales, whole.scales));
    EXPECT_TRUE(torch::equal(chunked.values, whole.values));
    EXPECT_EQ(chunked.zeros.defined(), whole.zeros.defined());
    if (whole.zeros.defined()) {
      EXPECT_TRUE(torch::equal(chunked.zeros, whole.zeros));
    }
    EXPECT_EQ(PackQuantized(chunked), PackQuantized(whole));
  }
}

}  // namespace
}  // namespace atq
