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

LayerQuantization QuantizeLayer(const torch::Tensor& weight, const LayerQuantConfig& config,
                                const torch::Tensor& learned_scales) {
  CheckWeight(weight);
  Require(config.quantized, "QuantizeLayer needs a quantized layer config");
  ValidateLayerConfig(config);
  torch::NoGradGuard no_grad;
  const torch::Tensor w = RowsView(weight.detach().to(torch::kFloat));  // [rows, cols]
  LayerQuantization out;
  out.packed = learned_scales.defined()
                   ? QuantizeWithScales(w, config.grid,
                                        LearnedScaleMatrix(learned_scales.detach(), config.grid, w.size(0), w.size(1)))
                   : QuantizeRtn(w, config.grid);
  torch::Tensor boosted = torch::zeros(w.sizes(), w.options().dtype(torch::kBool));
  if (config.rpb_fraction > 0) {
    boosted = RpbMask(w, out.packed.values, config.rpb_fraction);
    // The boosted weights are exact whatever the scale, so the error-minimizing scale ignores them (a learned
    // scale is the training's to move).
    if (!learned_scales.defined()) RefitTernaryScales(out.packed, config.grid, w, boosted);
  }
  // Boosted weights are stored as f16 (kRpbBytesPerWeight), so the forward pass uses exactly the stored value.
  out.effective = torch::where(boosted, w.to(torch::kHalf).to(torch::kFloat), out.packed.values).view(weight.sizes());
  out.boosted = boosted.view(weight.sizes());
  return out;
}

torch::Tensor LearnedScales(const torch::Tensor& weight, const LayerQuantConfig& config) {
  Require(config.quantized && ScalesCanBeLearned(config.grid),
          "learned scales need a ternary or symmetric uniform grid, not {}",
          config.quantized ? DescribeGrid(config.grid) : std::string("full precision"));
  torch::Tensor scales = QuantizeLayer(weight, config).packed.scales;  // [rows, spans]
  if (config.grid.granularity == Granularity::kTensor) scales = scales.slice(0, 0, 1);
  // A span of zeros fits scale 0, which no learned scale may be (it would stay 0): start it at the smallest.
  return scales.clamp_min(kSmallestLearnedScale).reshape({-1}).contiguous();
}

torch::Tensor LearnedScaleMatrix(const torch::Tensor& learned_scales, const WeightGrid& grid, int64_t rows,
                                 int64_t cols) {
  const int64_t spans = static_cast<int64_t>(ScaleSpans(grid, cols).size());
  if (grid.granularity == Granularity::kTensor) {
    Require(learned_scales.numel() == 1, "a per-tensor grid learns 1 scale, got {}", learned_scales.numel());
    return learned_scales.reshape({1, 1}).expand({rows, 1});
  }
  Require(learned_scales.numel() == rows * spans, "{} learned scales for a {}x{} weight under {}: need {}",
          learned_scales.numel(), rows, cols, DescribeGrid(grid), rows * spans);
  return learned_scales.reshape({rows, spans});
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

torch::Tensor LearnedScaleFn::forward(torch::autograd::AutogradContext* ctx, torch::Tensor latent,
                                      torch::Tensor scale, torch::Tensor quantized, torch::Tensor levels,
                                      torch::Tensor clip, double low, double high, double gradient_scale) {
  ctx->save_for_backward({latent, scale, levels, clip});
  ctx->saved_data["low"] = low;
  ctx->saved_data["high"] = high;
  ctx->saved_data["gradient_scale"] = gradient_scale;
  return quantized;
}

torch::autograd::variable_list LearnedScaleFn::backward(torch::autograd::AutogradContext* ctx,
                                                        torch::autograd::variable_list grad_outputs) {
  const torch::autograd::variable_list saved = ctx->get_saved_variables();
  const torch::Tensor& latent = saved[0];
  const torch::Tensor& scale = saved[1];
  const torch::Tensor& levels = saved[2];
  const torch::Tensor& clip = saved[3];
  const double gradient_scale = ctx->saved_data["gradient_scale"].toDouble();
  const torch::Tensor& grad = grad_outputs[0];
  const torch::Tensor back_toward_zero = grad * latent > 0;
  torch::Tensor inside, scale_grad;
  if (clip.numel() > 0) {  // ternary: the level does not depend on the scale
    inside = latent.abs() <= clip;
    scale_grad = grad * levels;
  } else {
    const torch::Tensor v = latent / scale;
    inside = (v >= ctx->saved_data["low"].toDouble()) & (v <= ctx->saved_data["high"].toDouble());
    scale_grad = grad * torch::where(inside, levels - v, levels);
  }
  return {grad * (inside | back_toward_zero), scale_grad * gradient_scale, torch::Tensor(), torch::Tensor(),
          torch::Tensor(), torch::Tensor(), torch::Tensor(), torch::Tensor()};
}

namespace {

// FakeQuantize with learned scales: the values QuantizeLayer gives for them, with gradients to the latent weight
// and to the scales through LearnedScaleFn.
torch::Tensor FakeQuantizeLearned(const torch::Tensor& weight, const LayerQuantConfig& config,
                                  const torch::Tensor& learned_scales) {
  const WeightGrid& grid = config.grid;
  const torch::Tensor w = RowsView(weight);
  const int64_t rows = w.size(0), cols = w.size(1);
  // As stored (float16 for tq2_0), with the identity gradient: r - s is exact for r within a factor 2 of s
  // (Sterbenz), so s + (r - s) is r itself.
  const torch::Tensor s = LearnedScaleMatrix(learned_scales, grid, rows, cols).clamp_min(kSmallestLearnedScale);
  const torch::Tensor stored = s + (StoredScale(grid, s.detach()) - s.detach());
  const torch::Tensor expanded = ExpandSpans(grid, stored, cols).to(weight.scalar_type());
  torch::Tensor quantized, levels, clip;
  double low = -1, high = 1;
  {
    torch::NoGradGuard no_grad;
    const LayerQuantization q = QuantizeLayer(weight, config, learned_scales);
    quantized = q.effective.view({rows, cols}).to(weight.scalar_type());
    const torch::Tensor boosted = q.boosted.view({rows, cols});
    const bool ternary = config.mode() == WeightMode::kTernary;
    const double offset = ternary ? 1.0 : static_cast<double>(1 << (grid.bits - 1));
    levels = (q.packed.codes - offset).masked_fill(boosted, 0).to(weight.scalar_type());
    if (ternary) {
      const torch::Tensor range = q.packed.thresholds.defined()
                                      ? torch::maximum(q.packed.scales.to(torch::kFloat64), q.packed.thresholds)
                                      : q.packed.scales.to(torch::kFloat64);
      clip = (ExpandSpans(grid, range, cols) * config.ste_clip)
                 .masked_fill(boosted, std::numeric_limits<double>::infinity())
                 .to(weight.scalar_type());
    } else {
      clip = torch::empty({0}, weight.options());  // none (autograd takes no undefined input)
      low = -offset;
      high = offset - 1;
    }
  }
  const int64_t per_scale = grid.granularity == Granularity::kTensor  ? rows * cols
                            : grid.granularity == Granularity::kGroup ? std::min(grid.group_size, cols)
                                                                      : cols;
  const double gradient_scale = 1.0 / std::sqrt(static_cast<double>(per_scale) * high);
  return LearnedScaleFn::apply(w, expanded, quantized, levels, clip, low, high, gradient_scale).view(weight.sizes());
}

}  // namespace

torch::Tensor FakeQuantize(const torch::Tensor& weight, const LayerQuantConfig& config,
                           const torch::Tensor& learned_scales) {
  if (!config.quantized) return weight;
  if (learned_scales.defined()) return FakeQuantizeLearned(weight, config, learned_scales);
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

torch::Tensor QuantizedWeightValues(const torch::Tensor& weight, const LayerQuantConfig& config,
                                    const torch::Tensor& learned_scales) {
  torch::NoGradGuard no_grad;
  if (!config.quantized) return weight.detach().clone();
  return QuantizeLayer(weight, config, learned_scales).effective.to(weight.scalar_type());
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

bool FollowsSparsitySchedule(WeightMode mode, ThresholdRule rule) {
  return mode == WeightMode::kTernary && rule == ThresholdRule::kSparsity;
}

bool FollowsSparsitySchedule(const LayerQuantConfig& config) {
  return FollowsSparsitySchedule(config.mode(), config.grid.threshold_rule);
}

}  // namespace atq
