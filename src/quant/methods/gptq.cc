// GPTQ (quant/gptq.h): column-by-column rounding with error compensation through the inverse Hessian, any grid.
#include "quant/method.h"

#include "util/error.h"
#include "util/log.h"

namespace atq {
namespace {

bool AnyGrid(const WeightGrid&) { return true; }

MethodResult Quantize(const MethodInput& input) {
  Require(input.hessian.defined(), "{}: gptq needs calibration data", input.name);
  GptqResult gptq = Gptq(input.weight, input.hessian, input.grid, input.options.gptq);
  if (gptq.damp_raises > 0) {
    LogWarn("{}: Cholesky of the Hessian failed; dampening raised {} times to {} of its mean diagonal", input.name,
            gptq.damp_raises, gptq.damp);
  }
  MethodResult result;
  result.damp = gptq.damp;
  result.weight = std::move(gptq.weight);
  return result;
}

}  // namespace

QuantMethodRow GptqMethod() {
  return {"gptq", "GPTQ error compensation on any grid; needs calibration", /*needs_hessian=*/true, AnyGrid, "gptq",
          Quantize};
}

}  // namespace atq
