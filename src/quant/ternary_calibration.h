// ATQ's calibration mode: each output row's ternary threshold chosen to minimize the layer's output error on
// calibration inputs, not the error of its weights. Rows are independent in that error,
// ||(W - Q) X||^2 = sum_r d_r^T H d_r with H = X X^T, so the best threshold of every row is found exactly
// among the candidates at the cost of one product with H per candidate.
#pragma once

#include <vector>

#include <torch/types.h>

#include "grid/quantized_weight.h"
#include "grid/weight_grid.h"

namespace atq {

// Candidate thresholds as multiples of each span's mean |w| (ThresholdRule::kRatio).
std::vector<double> DefaultTernaryRatios();  // 0.3, 0.4, ..., 1.2

struct CalibratedTernary {
  QuantizedWeight weight;
  torch::Tensor ratios;  // [rows] float64: the ratio each row chose (per-tensor grids: one for all rows)
};

// weight: [rows, cols]; hessian: [cols, cols] (HessianAccumulator). For per-channel grids each row's scale is
// then refit in closed form for the same error: a = t^T H w / t^T H t for the row's pattern t, the minimizer
// of (w - a t)^T H (w - a t). Per-group and per-tensor grids keep the weight-space scale (mean |w| above the
// threshold), which the packed format's groups need. Throws atq::Error for a non-ternary grid.
CalibratedTernary CalibrateTernary(const torch::Tensor& weight, const torch::Tensor& hessian, const WeightGrid& grid,
                                   const std::vector<double>& ratios = DefaultTernaryRatios());

}  // namespace atq
