// QAT's fake quantizers: the grid's own rounding in the forward pass, straight-through estimators backward.
#include "grid/fake_quant.h"

#include <algorithm>
#include <cmath>
#include <limits>

#include <torch/torch.h>

#include "util/error.h"

namespace atq {
namespace {

void CheckWeight(const torch::Tensor& weight) {
  Require(weight.defined() && weight.numel() > 0 && weight.dim() >= 1, "quantization of an empty weight");
  Require(weight.is_floating_point(), "quantization needs a floating-point weight, got {}",
          std::string(c10::toString(weight.scalar_type())));
}

// The [rows = output channels, cols] view every packed format stores.
torch::Tensor RowsView(const torch::Tensor& weight) { return weight.reshape({weight.size(0), -1}); }

}  // namespace

std::string_view WeightModeName(WeightMode mode) {
  switch (mode) {
    case WeightMode::kFull: return "full";
    case WeightMode::kTernary: return "ternary";
    case WeightMode::kUniform: return "uniform";
  }
  return "?";
}

WeightMode ParseWeightMode(std::string_view name) {
  for (const WeightMode mode : {WeightMode::kFull, WeightMode::kTernary, WeightMode::kUniform}) {
    if (WeightModeName(mode) == name) return mode;
  }
  Fail("unknown weight mode '{}' (full, ternary, uniform)", name);
}

WeightGrid DefaultLayerGrid() {
  WeightGrid grid;
  grid.kind = GridKind::kTernary;
  grid.bits = 8;
  grid.granularity = Granularity::kChannel;
  grid.threshold_rule = ThresholdRule::kSparsity;
  grid.threshold_value = 0.5;
  return grid;
}

WeightMode LayerQuantConfig::mode() const {
  if (!quantized) return WeightMode::kFull;
  return grid.kind == GridKind::kTernary || grid.kind == GridKind::kTQ2_0 ? WeightMode::kTernary : WeightMode::kUniform;
}

LayerQuantConfig FullPrecisionLayer() { return {}; }

LayerQuantConfig QuantizedLayer(const WeightGrid& grid, double rpb_fraction) {
  LayerQuantConfig config;
  config.quantized = true;
  config.grid = grid;
  config.rpb_fraction = rpb_fraction;
  ValidateLayerConfig(config);
  return config;
}

void ValidateLayerConfig(const LayerQuantConfig& config) {
  if (!config.quantized) return;
  Require(config.grid.kind != GridKind::kQ8_0 && config.grid.kind != GridKind::kQ4_0,
          "a quantized layer's grid is ternary (atq's or tq2_0/tq1_0) or uniform, not {}", DescribeGrid(config.grid));
  ValidateGrid(config.grid);
  Require(config.rpb_fraction >= 0 && config.rpb_fraction < 1, "rpb fraction {} is outside [0, 1)",
          config.rpb_fraction);
  Require(config.rpb_fraction == 0 || config.grid.kind == GridKind::kTernary,
          "residual precision boosting applies to atq's ternary layers (a GGUF block cannot hold the residual), not {}",
          DescribeGrid(config.grid));
}

torch::Tensor RpbMask(const torch::Tensor& weight, const torch::Tensor& quantized, double fraction) {
  torch::NoGradGuard no_grad;
  Require(fraction >= 0 && fraction < 1, "rpb fraction {} is outside [0, 1)", fraction);
  const int64_t count = SparsityCount(fraction, weight.numel());
  torch::Tensor mask = torch::zeros(weight.sizes(), weight.options().dtype(torch::kBool));
  if (count == 0) return mask;
  const torch::Tensor errors = (weight.detach().to(torch::kFloat) - quantized).abs().reshape({-1});
  const torch::Tensor picked = std::get<1>(errors.topk(count, /*dim=*/0, /*largest=*/true, /*sorted=*/false));
  mask.view({-1}).index_fill_(0, picked, true);
  return mask;
}

LayerQuantization QuantizeLayer(const torch::Tensor& weight, const LayerQuantConfig& config) {
  CheckWeight(weight);
  Require(config.quantized, "QuantizeLayer needs a quantized layer config");
  ValidateLayerConfig(config);
  torch::NoGradGuard no_grad;
  const torch::Tensor w = RowsView(weight.detach().to(torch::kFloat));  // [rows, cols]
  LayerQuantization out;
  out.packed = QuantizeRtn(w, config.grid);
  torch::Tensor boosted = torch::zeros(w.sizes(), w.options().dtype(torch::kBool));
  if (config.rpb_fraction > 0) {
    boosted = RpbMask(w, out.packed.values, config.rpb_fraction);
    // The boosted weights are exact whatever the scale, so the error-minimizing scale ignores them.
    RefitTernaryScales(out.packed, config.grid, w, boosted);
  }
  // Boosted weights are stored as f16 (kRpbBytesPerWeight), so the forward pass uses exactly the stored value.
  out.effective = torch::where(boosted, w.to(torch::kHalf).to(torch::kFloat), out.packed.values).view(weight.sizes());
  out.boosted = boosted.view(weight.sizes());
  return out;
}

torch::Tensor Trits(const LayerQuantization& quantization, const torch::Tensor& weight) {
  return (quantization.packed.codes - 1).to(torch::kInt8).view(weight.sizes());
}

torch::Tensor TernaryFn::forward(torch::autograd::AutogradContext* ctx, torch::Tensor latent,
                                 torch::Tensor quantized, torch::Tensor clip) {
  ctx->save_for_backward({latent, clip});
  return quantized;
}

torch::autograd::variable_list TernaryFn::backward(torch::autograd::AutogradContext* ctx,
                                                   torch::autograd::variable_list grad_outputs) {
  const torch::autograd::variable_list saved = ctx->get_saved_variables();
  const torch::Tensor& latent = saved[0];
  const torch::Tensor& clip = saved[1];
  const torch::Tensor& grad = grad_outputs[0];
  const torch::Tensor pass = (latent.abs() <= clip) | (grad * latent > 0);
  return {grad * pass, torch::Tensor(), torch::Tensor()};
}

torch::Tensor UniformFn::forward(torch::autograd::AutogradContext* /*ctx*/, torch::Tensor /*latent*/,
                                 torch::Tensor quantized) {
  return quantized;
}

torch::autograd::variable_list UniformFn::backward(torch::autograd::AutogradContext* /*ctx*/,
                                                   torch::autograd::variable_list grad_outputs) {
  return {grad_outputs[0], torch::Tensor()};
}

torch::Tensor FakeQuantize(const torch::Tensor& weight, const LayerQuantConfig& config) {
  if (!config.quantized) return weight;
  torch::Tensor quantized, clip;
  {
    torch::NoGradGuard no_grad;
    const LayerQuantization q = QuantizeLayer(weight, config);
    quantized = q.effective.to(weight.scalar_type());
    if (config.mode() == WeightMode::kTernary) {
      const int64_t cols = q.packed.values.size(1);
      // tq2_0's scale is the block's max |w| (no threshold is stored): every weight is inside its range.
      const torch::Tensor scales = q.packed.scales.to(torch::kFloat64);
      const torch::Tensor range =
          (q.packed.thresholds.defined() ? torch::maximum(scales, q.packed.thresholds) : scales) * config.ste_clip;
      clip = ExpandSpans(config.grid, range, cols)
                 .view(weight.sizes())
                 .masked_fill(q.boosted, std::numeric_limits<double>::infinity())
                 .to(weight.scalar_type());
    }
  }
  if (config.mode() == WeightMode::kTernary) return TernaryFn::apply(weight, quantized, clip);
  return UniformFn::apply(weight, quantized);
}

torch::Tensor QuantizedWeightValues(const torch::Tensor& weight, const LayerQuantConfig& config) {
  torch::NoGradGuard no_grad;
  if (!config.quantized) return weight.detach().clone();
  return QuantizeLayer(weight, config).effective.to(weight.scalar_type());
}

double ScheduledSparsity(double target, double epoch, int ramp_epochs, SparsityRamp ramp) {
  if (ramp_epochs <= 0) return target;
  const double progress = std::clamp(epoch / ramp_epochs, 0.0, 1.0);
  switch (ramp) {
    case SparsityRamp::kLinear:
      return target * progress;
    case SparsityRamp::kCubic:
      return target * (1 - std::pow(1 - progress, 3));
  }
  Fail("unknown sparsity ramp {}", static_cast<int>(ramp));
}

}  // namespace atq
