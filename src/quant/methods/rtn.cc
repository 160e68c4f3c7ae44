// Round to nearest: the grid fitted on each span of the weight, every weight rounded to it (no calibration).
#include "quant/method.h"

#include <algorithm>
#include <vector>

#include <torch/torch.h>

namespace atq {
namespace {

bool AnyGrid(const WeightGrid&) { return true; }

// Rows are rounded independently unless one scale spans the tensor, so a large matrix is rounded a chunk of rows
// at a time: the same codes, with a chunk's temporaries in memory instead of the whole matrix's (a 14336 x 4096
// layer of a 7B model would otherwise take 2 GB of them).
constexpr int64_t kChunkWeights = int64_t{1} << 22;

MethodResult Quantize(const MethodInput& input) {
  const torch::Tensor& weight = input.weight;
  const int64_t rows = weight.size(0), cols = weight.dim() == 2 ? weight.size(1) : 0;
  const int64_t step = std::max<int64_t>(1, kChunkWeights / std::max<int64_t>(1, cols));
  if (weight.dim() != 2 || input.grid.granularity == Granularity::kTensor || rows <= step) {
    return {QuantizeRtn(weight, input.grid)};
  }
  std::vector<QuantizedWeight> parts;
  for (int64_t first = 0; first < rows; first += step) {
    parts.push_back(QuantizeRtn(weight.narrow(0, first, std::min(step, rows - first)), input.grid));
  }
  const auto cat = [&](torch::Tensor QuantizedWeight::*field) {
    if (!(parts.front().*field).defined()) return torch::Tensor();
    std::vector<torch::Tensor> pieces;
    for (QuantizedWeight& part : parts) {
      pieces.push_back(part.*field);
      part.*field = torch::Tensor();  // freed as soon as it is copied
    }
    return torch::cat(pieces, 0);
  };
  QuantizedWeight out;
  out.layout = parts.front().layout;
  out.layout.rows = rows;
  out.codes = cat(&QuantizedWeight::codes);
  out.scales = cat(&QuantizedWeight::scales);
  out.zeros = cat(&QuantizedWeight::zeros);
  out.thresholds = cat(&QuantizedWeight::thresholds);
  out.values = cat(&QuantizedWeight::values);
  return {out};
}

}  // namespace

QuantMethodRow RtnMethod() {
  return {"rtn", "round to nearest on any grid", /*needs_hessian=*/false, AnyGrid, "rtn", Quantize};
}

}  // namespace atq
