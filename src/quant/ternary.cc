// Adaptive Ternary Quantization math on torch tensors (see ternary.h for the definitions).
#include "quant/ternary.h"

#include <algorithm>
#include <cmath>
#include <limits>

#include <torch/types.h>
#include <torch/utils.h>

#include "util/error.h"

namespace atq {
namespace {

// Guards floor(sparsity * n) against products such as 0.29 * 100 = 28.999999999999996.
constexpr double kCountEpsilon = 1e-9;

// [rows, cols] view of a weight (rows = output channels), or [1, n] for per-layer quantities.
torch::Tensor Rows(const torch::Tensor& weight, bool per_channel) {
  return per_channel ? weight.reshape({weight.size(0), -1}) : weight.reshape({1, -1});
}

// A [rows] or [1] per-group tensor shaped to broadcast against `weight`: [rows, 1, 1, ...] or [1].
torch::Tensor Broadcastable(const torch::Tensor& per_group, const torch::Tensor& weight) {
  std::vector<int64_t> shape(static_cast<size_t>(weight.dim()), 1);
  shape[0] = per_group.numel();
  return per_group.reshape(shape);
}

void CheckWeight(const torch::Tensor& weight) {
  Require(weight.defined() && weight.numel() > 0 && weight.dim() >= 1, "ternary quantization of an empty weight");
  Require(weight.is_floating_point(), "ternary quantization needs a floating-point weight, got {}",
          std::string(c10::toString(weight.scalar_type())));
}

int64_t CountOf(double fraction, int64_t n) {
  return std::min(n, static_cast<int64_t>(std::floor(fraction * static_cast<double>(n) + kCountEpsilon)));
}

}  // namespace

torch::Tensor TernaryThresholds(const torch::Tensor& weight, const LayerQuantConfig& config) {
  CheckWeight(weight);
  torch::NoGradGuard no_grad;
  const torch::Tensor magnitudes = Rows(weight.detach(), config.per_channel).abs().to(torch::kFloat);
  const int64_t groups = magnitudes.size(0);
  switch (config.threshold_mode) {
    case ThresholdMode::kSparsity: {
      Require(config.sparsity >= 0 && config.sparsity <= 1, "sparsity {} is outside [0, 1]", config.sparsity);
      const int64_t k = CountOf(config.sparsity, magnitudes.size(1));
      if (k == 0) return torch::zeros({groups}, magnitudes.options());
      return std::get<0>(magnitudes.kthvalue(k, /*dim=*/1));
    }
    case ThresholdMode::kMagnitudeAbsolute:
      Require(config.magnitude >= 0, "magnitude threshold {} is negative", config.magnitude);
      return torch::full({groups}, config.magnitude, magnitudes.options());
    case ThresholdMode::kMagnitudeRelative:
      Require(config.magnitude >= 0, "relative magnitude threshold {} is negative", config.magnitude);
      return magnitudes.mean(/*dim=*/1) * config.magnitude;
  }
  Fail("unknown threshold mode {}", static_cast<int>(config.threshold_mode));
}

torch::Tensor TernaryCodes(const torch::Tensor& weight, const torch::Tensor& thresholds) {
  torch::NoGradGuard no_grad;
  const torch::Tensor w = weight.detach().to(torch::kFloat);
  const torch::Tensor above = w.abs() > Broadcastable(thresholds, w);
  return (torch::sign(w) * above).to(torch::kInt8);
}

torch::Tensor TernaryScales(const torch::Tensor& weight, const torch::Tensor& codes, bool per_channel,
                            const torch::Tensor& exclude) {
  torch::NoGradGuard no_grad;
  torch::Tensor used = codes != 0;
  if (exclude.defined()) used = used & exclude.logical_not();
  const torch::Tensor used_rows = Rows(used, per_channel).to(torch::kFloat);
  const torch::Tensor magnitudes = Rows(weight.detach(), per_channel).abs().to(torch::kFloat);
  const torch::Tensor sums = (magnitudes * used_rows).sum(/*dim=*/1);
  const torch::Tensor counts = used_rows.sum(/*dim=*/1);
  return torch::where(counts > 0, sums / counts.clamp_min(1), torch::zeros_like(sums));
}

torch::Tensor RpbMask(const torch::Tensor& weight, const torch::Tensor& ternary, double fraction) {
  torch::NoGradGuard no_grad;
  Require(fraction >= 0 && fraction < 1, "rpb fraction {} is outside [0, 1)", fraction);
  const int64_t count = CountOf(fraction, weight.numel());
  torch::Tensor mask = torch::zeros(weight.sizes(), weight.options().dtype(torch::kBool));
  if (count == 0) return mask;
  const torch::Tensor errors = (weight.detach().to(torch::kFloat) - ternary).abs().reshape({-1});
  const torch::Tensor picked = std::get<1>(errors.topk(count, /*dim=*/0, /*largest=*/true, /*sorted=*/false));
  mask.view({-1}).index_fill_(0, picked, true);
  return mask;
}

TernaryResult Ternarize(const torch::Tensor& weight, const LayerQuantConfig& config) {
  CheckWeight(weight);
  torch::NoGradGuard no_grad;
  const torch::Tensor w = weight.detach().to(torch::kFloat);
  TernaryResult result;
  result.thresholds = TernaryThresholds(w, config);
  result.codes = TernaryCodes(w, result.thresholds);
  result.scales = TernaryScales(w, result.codes, config.per_channel);
  torch::Tensor ternary = Broadcastable(result.scales, w) * result.codes.to(torch::kFloat);
  result.boosted = RpbMask(w, ternary, config.rpb_fraction);
  if (config.rpb_fraction > 0) {
    // The boosted weights are exact whatever the scale, so the error-minimizing scale ignores them.
    result.scales = TernaryScales(w, result.codes, config.per_channel, result.boosted);
    ternary = Broadcastable(result.scales, w) * result.codes.to(torch::kFloat);
  }
  // Boosted weights are stored as f16 (kRpbBytesPerWeight), so the forward pass uses exactly the stored value.
  result.effective = torch::where(result.boosted, w.to(torch::kHalf).to(torch::kFloat), ternary);
  return result;
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

torch::Tensor FakeTernary(const torch::Tensor& weight, const LayerQuantConfig& config) {
  torch::Tensor quantized;
  torch::Tensor clip;
  {
    torch::NoGradGuard no_grad;
    const TernaryResult ternary = Ternarize(weight, config);
    const torch::Tensor range = torch::maximum(ternary.scales, ternary.thresholds) * config.ste_clip;
    clip = Broadcastable(range, weight)
               .expand(weight.sizes())
               .masked_fill(ternary.boosted, std::numeric_limits<float>::infinity());
    quantized = ternary.effective.to(weight.scalar_type());
    clip = clip.to(weight.scalar_type());
  }
  return TernaryFn::apply(weight, quantized, clip);
}

UniformResult QuantizeUniform(const torch::Tensor& weight, int bits, bool per_channel) {
  CheckWeight(weight);
  Require(bits >= 2 && bits <= 8, "uniform quantization needs 2..8 bits, got {}", bits);
  torch::NoGradGuard no_grad;
  const torch::Tensor w = weight.detach().to(torch::kFloat);
  const double levels = std::ldexp(1.0, bits - 1) - 1;  // largest |q|
  UniformResult result;
  result.scales = std::get<0>(Rows(w, per_channel).abs().max(/*dim=*/1)) / levels;
  const torch::Tensor scales = Broadcastable(result.scales, w);
  const torch::Tensor safe = torch::where(scales > 0, scales, torch::ones_like(scales));
  result.codes = torch::round(w / safe).clamp(-levels - 1, levels).to(torch::kInt8);
  result.effective = scales * result.codes.to(torch::kFloat);
  return result;
}

torch::Tensor UniformFn::forward(torch::autograd::AutogradContext* /*ctx*/, torch::Tensor /*latent*/,
                                 torch::Tensor quantized) {
  return quantized;
}

torch::autograd::variable_list UniformFn::backward(torch::autograd::AutogradContext* /*ctx*/,
                                                   torch::autograd::variable_list grad_outputs) {
  return {grad_outputs[0], torch::Tensor()};
}

torch::Tensor FakeUniform(const torch::Tensor& weight, int bits, bool per_channel) {
  torch::Tensor quantized;
  {
    torch::NoGradGuard no_grad;
    quantized = QuantizeUniform(weight, bits, per_channel).effective.to(weight.scalar_type());
  }
  return UniformFn::apply(weight, quantized);
}

torch::Tensor FakeQuantize(const torch::Tensor& weight, const LayerQuantConfig& config) {
  switch (config.mode) {
    case WeightMode::kFull:
      return weight;
    case WeightMode::kTernary:
      return FakeTernary(weight, config);
    case WeightMode::kUniform:
      return FakeUniform(weight, config.bits, config.per_channel);
  }
  Fail("unknown weight mode {}", static_cast<int>(config.mode));
}

torch::Tensor QuantizedWeight(const torch::Tensor& weight, const LayerQuantConfig& config) {
  torch::NoGradGuard no_grad;
  switch (config.mode) {
    case WeightMode::kFull:
      return weight.detach().clone();
    case WeightMode::kTernary:
      return Ternarize(weight, config).effective.to(weight.scalar_type());
    case WeightMode::kUniform:
      return QuantizeUniform(weight, config.bits, config.per_channel).effective.to(weight.scalar_type());
  }
  Fail("unknown weight mode {}", static_cast<int>(config.mode));
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
