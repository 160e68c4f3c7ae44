// Per-row threshold search for ternary weights under the layer's output error.
#include "quant/ternary_calibration.h"

#include <limits>

#include <torch/torch.h>

#include "util/error.h"

namespace atq {

std::vector<double> DefaultTernaryRatios() { return {0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0, 1.1, 1.2}; }

CalibratedTernary CalibrateTernary(const torch::Tensor& weight, const torch::Tensor& hessian, const WeightGrid& grid,
                                   const std::vector<double>& ratios) {
  Require(grid.kind == GridKind::kTernary, "threshold calibration needs a ternary grid, not {}", DescribeGrid(grid));
  Require(!ratios.empty(), "threshold calibration needs at least one candidate ratio");
  torch::NoGradGuard no_grad;
  const torch::Tensor w = weight.to(torch::kFloat32);
  const torch::Tensor h = hessian.to(w.device(), torch::kFloat32);
  const bool per_tensor = grid.granularity == Granularity::kTensor;
  CalibratedTernary best;
  torch::Tensor best_error;  // [rows, 1] (per tensor: the layer's total, repeated)
  for (const double ratio : ratios) {
    WeightGrid candidate = grid;
    candidate.threshold_rule = ThresholdRule::kRatio;
    candidate.threshold_value = ratio;
    ValidateGrid(candidate);
    QuantizedWeight q = QuantizeRtn(w, candidate);
    if (grid.granularity == Granularity::kChannel) {
      const torch::Tensor trits = q.codes - 1;                  // [rows, cols]
      const torch::Tensor projected = torch::matmul(trits, h);  // rows of t^T H
      const torch::Tensor numerator = (projected * w).sum(1, /*keepdim=*/true);
      const torch::Tensor denominator = (projected * trits).sum(1, /*keepdim=*/true);
      q.scales = torch::where(denominator > 0, numerator / denominator.clamp_min(std::numeric_limits<float>::min()),
                              torch::zeros_like(numerator))
                     .clamp_min(0);
      q.values = q.scales * trits;
    }
    const torch::Tensor difference = w - q.values;
    torch::Tensor error = (torch::matmul(difference, h) * difference).sum(1, /*keepdim=*/true);
    if (per_tensor) error = error.sum().expand_as(error);
    const torch::Tensor ratio_column = torch::full_like(error, ratio, torch::kFloat64);
    if (!best_error.defined()) {
      best = {q, ratio_column};
      best_error = error;
      continue;
    }
    const torch::Tensor better = error < best_error;  // [rows, 1]
    best.weight.codes = torch::where(better, q.codes, best.weight.codes);
    best.weight.scales = torch::where(better, q.scales, best.weight.scales);
    best.weight.values = torch::where(better, q.values, best.weight.values);
    best.ratios = torch::where(better, ratio_column, best.ratios);
    best_error = torch::where(better, error, best_error);
  }
  best.ratios = best.ratios.squeeze(1);
  return best;
}

}  // namespace atq
