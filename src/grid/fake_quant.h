// What a weight layer of a quantization-aware model gets (LayerQuantConfig: a WeightGrid plus residual precision
// boosting and the straight-through estimator's clip), and the fake quantizers that train through it. The forward
// value is exactly what the packer stores: the grid's own fitting and rounding (grid/weight_grid.h) on the
// weight's [rows = dim 0, cols = everything else] view, the same view as atq's packed formats; so what QAT trains
// is what export packs, bit for bit.
#pragma once

#include <cstdint>
#include <string_view>

#include <torch/csrc/autograd/custom_function.h>
#include <torch/types.h>

#include "grid/quantized_weight.h"
#include "grid/weight_grid.h"

namespace atq {

// Full precision, or quantized on a ternary or uniform grid (the grid's kind says which).
enum class WeightMode { kFull, kTernary, kUniform };

// "full", "ternary", "uniform" and back; Parse throws atq::Error listing the accepted names.
std::string_view WeightModeName(WeightMode mode);
WeightMode ParseWeightMode(std::string_view name);

// The grid a QAT layer starts from: ternary, threshold at the 0.5 sparsity quantile, one scale per channel.
WeightGrid DefaultLayerGrid();

struct LayerQuantConfig {
  bool quantized = false;             // false: the float weight as it is (grid ignored)
  WeightGrid grid = DefaultLayerGrid();  // ternary or uniform; the training schedule moves a sparsity threshold
  double rpb_fraction = 0;  // residual precision boosting: share of weights kept exactly (sparse f16 residual)
  // Straight-through estimator: the gradient reaches a latent weight while |w| <= ste_clip * max(scale,
  // threshold) of its span (or when it points back toward zero); see TernaryFn.
  double ste_clip = 2.0;

  WeightMode mode() const;
};

// A full-precision layer, and one quantized on `grid` (ternary or uniform; throws atq::Error for others).
LayerQuantConfig FullPrecisionLayer();
LayerQuantConfig QuantizedLayer(const WeightGrid& grid, double rpb_fraction = 0);

// Throws atq::Error naming what is wrong (the grid's own rules, an rpb_fraction outside [0, 1), a ggml grid).
void ValidateLayerConfig(const LayerQuantConfig& config);

// Residual precision boosting: the floor(fraction * n) weights of the layer with the largest quantization
// error |w - q| (bool mask, shape of weight). Those are the weights whose rounding adds most to the layer's error;
// keeping them exactly removes the most error per stored weight. Ties broken by torch::topk.
torch::Tensor RpbMask(const torch::Tensor& weight, const torch::Tensor& quantized, double fraction);

// Bytes of the sparse residual of `boosted` weights: an int32 flat index and an f16 value each.
constexpr int64_t kRpbBytesPerWeight = 4 + 2;

struct LayerQuantization {
  QuantizedWeight packed;   // [rows, cols] view: codes, scales, thresholds exactly as the packer stores them
  torch::Tensor boosted;    // bool, shape of weight: kept exactly by RPB (all false when rpb_fraction = 0)
  torch::Tensor effective;  // float, shape of weight: the packed values, and w rounded to f16 where boosted
};

// The whole step on a weight, without gradient: fit the grid and round (QuantizeRtn on the [rows, cols] view);
// for ternary grids with RPB, pick the largest errors and refit the scales without them (again the minimizer for
// the final pattern). With `learned_scales` (LearnedScales' layout), those are the scales instead of the fit
// (QuantizeWithScales; RPB then keeps the largest errors under them and refits nothing). Throws atq::Error for an
// empty or non-float weight or an invalid config.
LayerQuantization QuantizeLayer(const torch::Tensor& weight, const LayerQuantConfig& config,
                                const torch::Tensor& learned_scales = {});

// Learned scales (LSQ, Esser et al. 2020, for ternary and symmetric uniform grids; ScalesCanBeLearned): a layer's
// span scales become trained parameters. They are a 1-D tensor, row-major [rows, spans] (one element for a
// per-tensor grid), so the optimizer's rule of no weight decay on 1-D tensors leaves them alone: decay would pull
// every scale toward 0 for no reason. The forward pass uses them as the format stores them (float16 for tq2_0),
// the codes still come from the grid's rule. Starts from the grid's fit of `weight` (QuantizeLayer's scales).
// Throws atq::Error for a grid that cannot learn its scales.
torch::Tensor LearnedScales(const torch::Tensor& weight, const LayerQuantConfig& config);
// Learned scales are kept at least this large (a span of zeros fits 0, and a scale at 0 would get no gradient).
constexpr double kSmallestLearnedScale = 1e-7;
// The [rows, spans] view of learned scales (per tensor: the one scale for every row), differentiable.
torch::Tensor LearnedScaleMatrix(const torch::Tensor& learned_scales, const WeightGrid& grid, int64_t rows,
                                 int64_t cols);

// Ternary codes {-1, 0, 1} as int8 in the weight's shape, from a quantization of it.
torch::Tensor Trits(const LayerQuantization& quantization, const torch::Tensor& weight);

// Straight-through estimator for ternary weights. forward(latent w, quantized q, clip c) returns q;
// backward routes dL/dq to w where
//     |w| <= c   or   dL/dq * w > 0,
// and gives 0 elsewhere (and nothing to q and c). c is ste_clip * max(scale, threshold) of the weight's span
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

// Identity straight-through estimator: forward(latent, quantized) returns quantized, backward passes dL/dq to
// latent unchanged. A uniform grid fitted by max|w| holds every weight inside its range, so no clipping rule is
// needed.
class UniformFn : public torch::autograd::Function<UniformFn> {
 public:
  static torch::Tensor forward(torch::autograd::AutogradContext* ctx, torch::Tensor latent,
                               torch::Tensor quantized);
  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grad_outputs);
};

// Straight-through estimator for a layer with learned scales. forward(latent w, scale s, quantized q, levels l,
// clip c, empty for uniform grids) returns q = s l (the packer's values; s expanded over each span, l the integer
// levels, 0 where RPB keeps a weight). Backward, with v = w / s:
//   dL/dw = dL/dq where the weight is inside the grid's range (ternary: |w| <= c as TernaryFn; uniform:
//           -2^(b-1) <= v <= 2^(b-1) - 1) or the gradient points back toward zero, else 0 (TernaryFn's rule);
//   dL/ds = g dL/dq * (ternary: l; uniform: l - v inside the range, l outside), LSQ's estimate with its gradient
//           scale g = 1 / sqrt(weights per scale * Qp), Qp = 2^(b-1) - 1 (1 for ternary): the sum over a span's weights
//           would otherwise outweigh every weight's gradient in the global norm that clipping uses.
// Ternary levels do not depend on s (the threshold rule picks them), so dq/ds = l exactly; uniform levels round
// w / s, whose derivative LSQ takes as 1 through the rounding, hence l - v.
class LearnedScaleFn : public torch::autograd::Function<LearnedScaleFn> {
 public:
  static torch::Tensor forward(torch::autograd::AutogradContext* ctx, torch::Tensor latent, torch::Tensor scale,
                               torch::Tensor quantized, torch::Tensor levels, torch::Tensor clip, double low,
                               double high, double gradient_scale);
  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grad_outputs);
};

// The weight a layer's forward pass uses under `config` (full: the weight itself): QuantizeLayer's effective
// weight, differentiable w.r.t. the latent weight through the estimators above, and w.r.t. `learned_scales`
// (when given) through LearnedScaleFn.
torch::Tensor FakeQuantize(const torch::Tensor& weight, const LayerQuantConfig& config,
                           const torch::Tensor& learned_scales = {});
// The same, detached and without gradient bookkeeping.
torch::Tensor QuantizedWeightValues(const torch::Tensor& weight, const LayerQuantConfig& config,
                                    const torch::Tensor& learned_scales = {});

// Progressive sparsity: the sparsity target at `epoch` (0-based; fractional values give per-step schedules),
// rising from 0 at epoch 0 to `target` at epoch `ramp_epochs` and staying there. With p = min(1, epoch / ramp):
//   kLinear: target * p
//   kCubic:  target * (1 - (1 - p)^3)   (Zhu & Gupta 2017: prune fast while weights are redundant, then slowly)
// ramp_epochs <= 0 gives `target` from the start.
enum class SparsityRamp { kLinear, kCubic };
double ScheduledSparsity(double target, double epoch, int ramp_epochs, SparsityRamp ramp);

// Whether a progressive-sparsity schedule moves this layer's threshold: ternary with a sparsity-target rule (the
// classifier, image-text and language-model trainers all ask this one question).
bool FollowsSparsitySchedule(WeightMode mode, ThresholdRule rule);
bool FollowsSparsitySchedule(const LayerQuantConfig& config);

}  // namespace atq
