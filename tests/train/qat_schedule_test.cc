// The QAT schedule shared by the trainers: layers kept full precision by name, the sparsity ramp pushed into the
// ternary layers (and only into those that pick thresholds by sparsity), and the zero share measured.
#include "train/qat_schedule.h"

#include <gtest/gtest.h>
#include <torch/torch.h>

#include "models/quant_layers.h"
#include "test_util.h"

namespace atq {
namespace {

TEST(QatSchedule, RampsSparsityIntoTheTernaryLayersAndMeasuresIt) {
  torch::manual_seed(5);
  QuantLinear first(64, 64), middle(64, 64), magnitude(64, 64);
  const NamedQuantLayers layers = {{"first", first.get()}, {"middle", middle.get()}, {"magnitude", magnitude.get()}};
  WeightQatOptions options;
  options.mode = WeightMode::kTernary;
  options.sparsity = 0.5;
  options.ramp_epochs = 2;
  ApplyQatConfig(options, layers, {"first"});
  // A layer with its own magnitude rule is left alone by the schedule.
  LayerQuantConfig by_magnitude = magnitude->quant_config();
  by_magnitude.grid.threshold_rule = ThresholdRule::kRatio;
  by_magnitude.grid.threshold_value = 0.7;
  magnitude->SetQuantConfig(by_magnitude);
  EXPECT_EQ(first->quant_config().mode(), WeightMode::kFull);
  EXPECT_EQ(middle->quant_config().mode(), WeightMode::kTernary);

  ScheduleSparsity(options, layers, 1.0);  // halfway up the linear ramp
  EXPECT_DOUBLE_EQ(middle->quant_config().grid.threshold_value, 0.25);
  EXPECT_DOUBLE_EQ(magnitude->quant_config().grid.threshold_value, 0.7);
  ScheduleSparsity(options, layers, 5.0);
  EXPECT_DOUBLE_EQ(middle->quant_config().grid.threshold_value, 0.5);
  // The measured share over the ternary layers: `middle` at its target, `magnitude` by its own rule.
  const double middle_zero = middle->Stats("middle").share_zero, magnitude_zero = magnitude->Stats("m").share_zero;
  EXPECT_NEAR(middle_zero, 0.5, 0.01);
  EXPECT_NEAR(MeasuredSparsity(layers), 0.5 * (middle_zero + magnitude_zero), 1e-9);
  EXPECT_EQ(MeasuredSparsity({{"first", first.get()}}), 0.0);

  // Full precision: nothing scheduled; invalid options named.
  WeightQatOptions full;
  ScheduleSparsity(full, layers, 1.0);
  EXPECT_DOUBLE_EQ(middle->quant_config().grid.threshold_value, 0.5);
  options.rpb_fraction = 1.5;
  EXPECT_NE(testutil::ErrorMessageOf([&] { options.Validate(); }).find("RPB fraction"), std::string::npos);
  EXPECT_EQ(QatLayerConfig(full).mode(), WeightMode::kFull);
}

}  // namespace
}  // namespace atq
