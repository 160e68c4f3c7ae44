// Shape arithmetic shared by every tensor file reader.
#include "io/tensor_info.h"

#include <fmt/format.h>
#include <fmt/ranges.h>

#include "util/error.h"

namespace atq {

int64_t CheckedElementCount(const std::vector<int64_t>& shape, const std::string& what) {
  int64_t count = 1;
  for (int64_t dim : shape) {
    Require(dim >= 0, "{}: negative dimension {} in shape {}", what, dim, ShapeString(shape));
    if (dim != 0 && count > INT64_MAX / dim) {
      Fail("{}: shape {} has more elements than fit in 64 bits", what, ShapeString(shape));
    }
    count *= dim;
  }
  return count;
}

Layout LayoutForShape(QuantType type, const std::vector<int64_t>& shape) {
  Layout layout;
  layout.type = type;
  if (shape.size() <= 1) {
    layout.rows = 1;
    layout.cols = shape.empty() ? 1 : shape[0];
    return layout;
  }
  layout.rows = shape[0];
  layout.cols = 1;
  // A zero dim makes the whole tensor empty, but the other dims may still overflow cols: check each step.
  for (size_t i = 1; i < shape.size(); ++i) {
    Require(shape[i] >= 0 && (shape[i] == 0 || layout.cols <= INT64_MAX / shape[i]),
            "shape {} does not fit a 64-bit layout", ShapeString(shape));
    layout.cols *= shape[i];
  }
  return layout;
}

std::string ShapeString(const std::vector<int64_t>& shape) { return fmt::format("[{}]", fmt::join(shape, ", ")); }

}  // namespace atq
