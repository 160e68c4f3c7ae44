// Adaptive Ternary Quantization on torch tensors: thresholds, closed-form scales, residual precision boosting,
// straight-through estimators, uniform b-bit fake quantization and the progressive sparsity schedule.
//
// A weight of any rank is viewed as [rows = dim 0 (output channels), cols = everything else], the same view as
// atq's packed formats (formats/atq_packed.h). Per-channel quantities have one value per row; per-layer ones
// have a single value.
#pragma once

#include <cstdint>

#include <torch/csrc/autograd/custom_function.h>
#include <torch/types.h>

#include "models/classifier.h"

namespace atq {

// The threshold below which (|w| <= threshold) a weight's ternary code is 0. Shape [rows] when per_channel,
// else [1]. Float32, no gradient.
//   kSparsity: the order statistic |w|_(k), the k-th smallest |w| of the row (or layer) with
//              k = floor(sparsity * n), as torch::kthvalue counts (1-based); k = 0 gives threshold 0.
//              So exactly k weights are <= the threshold when the |w| are distinct (ties at the threshold
//              all become 0, so the zero share can exceed the target only through ties).
//   kMagnitudeAbsolute: `magnitude` itself.
//   kMagnitudeRelative: magnitude * mean |w| of the row (or layer).
torch::Tensor TernaryThresholds(const torch::Tensor& weight, const LayerQuantConfig& config);

// Ternary codes sign(w) * [|w| > threshold], int8 in {-1, 0, 1}, shape of `weight`. `thresholds` as returned
// by TernaryThresholds ([rows] or [1]).
torch::Tensor TernaryCodes(const torch::Tensor& weight, const torch::Tensor& thresholds);

// The scale a minimizing ||w - a t||^2 over a row (or the layer) for a fixed pattern t in {-1,0,1}:
// d/da = -2 sum t (w - a t) = 0 gives a = sum |w| [t != 0] / #(t != 0), the mean |w| over the nonzero codes
// (0 when no code is nonzero). `exclude` (bool, shape of weight, may be undefined) leaves positions out of the
// fit: residual precision boosting keeps those weights exactly, so they add no error whatever a is.
// Shape [rows] when per_channel, else [1].
torch::Tensor TernaryScales(const torch::Tensor& weight, const torch::Tensor& codes, bool per_channel,
                            const torch::Tensor& exclude = {});

// Residual precision boosting: the floor(fraction * n) weights of the layer with the largest quantization
// error |w - a t| (bool mask, shape of weight). Those are the weights whose rounding adds most to
// ||W - Q||^2, which bounds the layer's output error ||(W - Q) x|| for inputs of similar size in every
// direction; keeping them exactly removes the most error per stored weight. Ties broken by torch::topk.
torch::Tensor RpbMask(const torch::Tensor& weight, const torch::Tensor& ternary, double fraction);

// Bytes of the sparse residual of `boosted` weights: an int32 flat index and an f16 value each.
constexpr int64_t kRpbBytesPerWeight = 4 + 2;

struct TernaryResult {
  torch::Tensor codes;       // int8 {-1,0,1}, shape of weight (boosted positions keep their code)
  torch::Tensor scales;      // float [rows] or [1]
  torch::Tensor thresholds;  // float [rows] or [1]
  torch::Tensor boosted;     // bool, shape of weight: kept exactly by RPB (all false when rpb_fraction = 0)
  torch::Tensor effective;   // float, shape of weight: scale * code, and w rounded to f16 where boosted
};

// The whole ATQ step on a weight, without gradient: threshold -> codes -> closed-form scale -> RPB (pick the
// largest errors, then refit the scale without them, which is again the minimizer for the final pattern).
// Throws atq::Error for an empty weight, a sparsity outside [0, 1] or an rpb_fraction outside [0, 1).
TernaryResult Ternarize(const torch::Tensor& weight, const LayerQuantConfig& config);

// Straight-through estimator for ternary weights. forward(latent w, quantized q, clip c) returns q;
// backward routes dL/dq to w where
//     |w| <= c   or   dL/dq * w > 0,
// and gives 0 elsewhere (and nothing to q and c). c is ste_clip * max(scale, threshold) of the weight's channel
// (broadcastable to w), +inf where RPB keeps the weight exactly.
// Why this rule: q = a t(w) follows w with slope ~1 inside the quantizer's range, so the identity gradient
// (unscaled) is the right local estimate there, as for a hard-tanh STE. Far outside the range q is saturated
// at +-a: pushing such a weight further out changes nothing, and letting it drift makes it ever harder to flip
// back, so that gradient is dropped. A gradient that points back toward zero (the descent step -dL/dq has the
// sign opposite to w) still passes, so a saturated weight is never frozen when the loss wants it smaller.
// Boosted weights are used exactly (q = w), so their identity gradient is exact.
class TernaryFn : public torch::autograd::Function<TernaryFn> {
 public:
  static torch::Tensor forward(torch::autograd::AutogradContext* ctx, torch::Tensor latent,
                               torch::Tensor quantized, torch::Tensor clip);
  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grad_outputs);
};

// Ternary fake quantization with gradient: Ternarize(weight) in the forward pass, TernaryFn's routing in the
// backward pass.
torch::Tensor FakeTernary(const torch::Tensor& weight, const LayerQuantConfig& config);

// Uniform b-bit symmetric quantization per output channel (or per layer), the grid of atq's uniform<b>sym
// format: scale = max|w| / (2^(b-1) - 1), q = clamp(round(w / scale), -2^(b-1), 2^(b-1) - 1), w ~ scale * q.
// A row of zeros gets scale 0 and q 0. Throws atq::Error unless 2 <= bits <= 8.
struct UniformResult {
  torch::Tensor codes;      // int8 q, shape of weight (the packed code is q + 2^(b-1))
  torch::Tensor scales;     // float [rows] or [1]
  torch::Tensor effective;  // float, shape of weight
};
UniformResult QuantizeUniform(const torch::Tensor& weight, int bits, bool per_channel);

// Identity straight-through estimator: forward(latent, quantized) returns quantized, backward passes dL/dq to
// latent unchanged. The uniform grid's scale comes from max|w|, so every weight is inside its range and no
// clipping rule is needed.
class UniformFn : public torch::autograd::Function<UniformFn> {
 public:
  static torch::Tensor forward(torch::autograd::AutogradContext* ctx, torch::Tensor latent,
                               torch::Tensor quantized);
  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grad_outputs);
};

torch::Tensor FakeUniform(const torch::Tensor& weight, int bits, bool per_channel);

// The weight a layer's forward pass uses under `config` (full: the weight itself), differentiable w.r.t. the
// latent weight through the estimators above.
torch::Tensor FakeQuantize(const torch::Tensor& weight, const LayerQuantConfig& config);
// The same, detached and without gradient bookkeeping.
torch::Tensor QuantizedWeight(const torch::Tensor& weight, const LayerQuantConfig& config);

// Progressive sparsity: the sparsity target at `epoch` (0-based; fractional values give per-step schedules),
// rising from 0 at epoch 0 to `target` at epoch `ramp_epochs` and staying there. With p = min(1, epoch / ramp):
//   kLinear: target * p
//   kCubic:  target * (1 - (1 - p)^3)   (Zhu & Gupta 2017: prune fast while weights are redundant, then slowly)
// ramp_epochs <= 0 gives `target` from the start.
enum class SparsityRamp { kLinear, kCubic };
double ScheduledSparsity(double target, double epoch, int ramp_epochs, SparsityRamp ramp);

}  // namespace atq
