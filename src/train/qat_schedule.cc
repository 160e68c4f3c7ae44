#include "train/qat_schedule.h"

#include <algorithm>

#include <torch/torch.h>

#include "util/error.h"

namespace atq {

void WeightQatOptions::Validate() const {
  Require(sparsity >= 0 && sparsity <= 1, "sparsity must be in [0, 1], got {}", sparsity);
  Require(ramp_epochs >= 0, "sparsity ramp must be >= 0 epochs, got {}", ramp_epochs);
  Require(rpb_fraction >= 0 && rpb_fraction < 1, "RPB fraction must be in [0, 1), got {}", rpb_fraction);
  Require(mode != WeightMode::kUniform || (bits >= 2 && bits <= 8), "uniform quantization needs 2..8 bits, got {}",
          bits);
}

nlohmann::json WeightQatOptions::ToJson() const {
  return {{"mode", WeightModeName(mode)},
          {"bits", bits},
          {"sparsity", sparsity},
          {"ramp_epochs", ramp_epochs},
          {"ramp", ramp == SparsityRamp::kCubic ? "cubic" : "linear"},
          {"threshold_mode", ThresholdRuleName(threshold_rule)},
          {"magnitude", magnitude},
          {"per_channel", per_channel},
          {"rpb_fraction", rpb_fraction}};
}

LayerQuantConfig QatLayerConfig(const WeightQatOptions& options) {
  if (options.mode == WeightMode::kFull) return FullPrecisionLayer();
  WeightGrid grid = DefaultLayerGrid();
  grid.kind = options.mode == WeightMode::kTernary ? GridKind::kTernary : GridKind::kUniform;
  grid.bits = options.bits;
  grid.threshold_rule = options.threshold_rule;
  grid.threshold_value = options.threshold_rule == ThresholdRule::kSparsity ? options.sparsity : options.magnitude;
  grid.granularity = options.per_channel ? Granularity::kChannel : Granularity::kTensor;
  return QuantizedLayer(grid, options.rpb_fraction);
}

void ApplyQatConfig(const WeightQatOptions& options, const NamedQuantLayers& layers,
                    const std::vector<std::string>& keep_full) {
  const LayerQuantConfig config = QatLayerConfig(options);
  for (const auto& [name, layer] : layers) {
    LayerQuantConfig own = config;
    if (std::find(keep_full.begin(), keep_full.end(), name) != keep_full.end()) own.quantized = false;
    layer->SetQuantConfig(own);
  }
}

void ScheduleSparsity(const WeightQatOptions& options, const NamedQuantLayers& layers, double epochs) {
  if (!options.Scheduled()) return;
  const double sparsity = ScheduledSparsity(options.sparsity, epochs, options.ramp_epochs, options.ramp);
  for (const auto& [name, layer] : layers) {
    LayerQuantConfig config = layer->quant_config();
    if (!FollowsSparsitySchedule(config)) continue;
    config.grid.threshold_value = sparsity;
    layer->SetQuantConfig(config);
  }
}

double MeasuredSparsity(const NamedQuantLayers& layers) {
  torch::NoGradGuard no_grad;
  double zeros = 0;
  int64_t weights = 0;
  for (const auto& [name, layer] : layers) {
    if (layer->quant_config().mode() != WeightMode::kTernary) continue;
    const LayerQuantStats stats = layer->Stats(name);
    zeros += stats.share_zero * static_cast<double>(stats.weights);
    weights += stats.weights;
  }
  return weights > 0 ? zeros / static_cast<double>(weights) : 0.0;
}

}  // namespace atq
