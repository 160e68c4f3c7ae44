#include "torch_qat_flags.h"

#include "command.h"
#include "util/error.h"

namespace atq::cli {

void AddWeightQatFlags(CLI::App& app, WeightQatFlags& flags) {
  WeightQatOptions& q = flags.options;
  app.add_option("--mode", flags.mode, "full, ternary (ATQ) or uniform")
      ->check(CLI::IsMember({"full", "ternary", "uniform"}))
      ->capture_default_str();
  app.add_option("--bits", q.bits, "Bits for --mode uniform")->check(CLI::Range(2, 8))->capture_default_str();
  app.add_option("--sparsity", q.sparsity, "Target share of zeros in ternary layers (threshold mode sparsity)")
      ->check(CLI::Range(0.0, 0.99))
      ->capture_default_str();
  app.add_option("--ramp-epochs", q.ramp_epochs, "Raise sparsity from 0 to the target over these epochs")
      ->check(CountFrom(0))
      ->capture_default_str();
  app.add_option("--ramp", flags.ramp, "Sparsity schedule: linear or cubic")
      ->check(CLI::IsMember({"linear", "cubic"}))
      ->capture_default_str();
  app.add_option("--threshold-mode", flags.threshold_mode, "sparsity, magnitude_absolute or magnitude_relative")
      ->capture_default_str();
  app.add_option("--magnitude", q.magnitude, "Cutoff for the magnitude threshold modes")->capture_default_str();
  app.add_flag("!--per-layer-scale", q.per_channel, "One scale per layer instead of per output channel");
  app.add_flag("--use-rpb", flags.use_rpb, "Residual precision boosting (see --rpb-fraction)");
  app.add_option("--rpb-fraction", q.rpb_fraction, "Share of each layer's weights kept exactly with --use-rpb")
      ->check(CLI::Range(0.0, 0.5));
}

WeightQatOptions ResolveWeightQat(const WeightQatFlags& flags) {
  WeightQatOptions options = flags.options;
  options.mode = ParseWeightMode(flags.mode);
  const auto rule = ParseThresholdRule(flags.threshold_mode);
  Require(rule.has_value(), "--threshold-mode '{}' is not sparsity, magnitude_absolute or magnitude_relative",
          flags.threshold_mode);
  options.threshold_rule = *rule;
  options.ramp = flags.ramp == "cubic" ? SparsityRamp::kCubic : SparsityRamp::kLinear;
  if (flags.use_rpb && options.rpb_fraction == 0) options.rpb_fraction = 0.01;
  if (!flags.use_rpb) options.rpb_fraction = 0;
  return options;
}

}  // namespace atq::cli
