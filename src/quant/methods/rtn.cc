// Round to nearest: the grid fitted on each span of the weight, every weight rounded to it (no calibration).
#include "quant/method.h"

namespace atq {
namespace {

bool AnyGrid(const WeightGrid&) { return true; }

MethodResult Quantize(const MethodInput& input) { return {QuantizeRtn(input.weight, input.grid)}; }

}  // namespace

QuantMethodRow RtnMethod() {
  return {"rtn", "round to nearest on any grid", /*needs_hessian=*/false, AnyGrid, "rtn", Quantize};
}

}  // namespace atq
