// ATQ: ternary with a threshold per output row; with calibration each row's threshold is the one that minimizes
// the layer's output error (quant/ternary_calibration.h), without it the grid's own threshold rule.
#include "quant/method.h"

#include "quant/ternary_calibration.h"

namespace atq {
namespace {

bool Ternary(const WeightGrid& grid) { return grid.kind == GridKind::kTernary; }

MethodResult Quantize(const MethodInput& input) {
  if (!input.options.atq_calibrate || !input.hessian.defined()) return {QuantizeRtn(input.weight, input.grid)};
  CalibratedTernary calibrated =
      CalibrateTernary(input.weight, input.hessian, input.grid,
                       input.options.atq_ratios.empty() ? DefaultTernaryRatios() : input.options.atq_ratios);
  MethodResult result;
  result.threshold_ratio = calibrated.ratios.mean().item<double>();
  result.weight = std::move(calibrated.weight);
  return result;
}

}  // namespace

QuantMethodRow AtqMethod() {
  // Uniform candidates of a mixed-precision plan go to GPTQ: ATQ's thresholds have no uniform counterpart.
  return {"atq", "adaptive ternary thresholds; ternary grids only", /*needs_hessian=*/false, Ternary, "gptq",
          Quantize};
}

}  // namespace atq
