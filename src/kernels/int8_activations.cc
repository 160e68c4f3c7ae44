// Per-segment int8 quantization of activation rows.
#include "kernels/int8_activations.h"

#include <algorithm>
#include <cmath>

#include "util/error.h"

namespace atq {

void ShapeActivations(int64_t rows, int64_t cols, int64_t segment, Int8Activations& out) {
  Require(segment > 0 && rows >= 0 && cols >= 0, "activations {}x{} cannot be cut into segments of {}", rows, cols,
          segment);
  out.rows = rows;
  out.cols = cols;
  out.segment = segment;
  out.segments = (cols + segment - 1) / segment;
  out.stride = out.segments * segment;
  out.values.assign(static_cast<size_t>(rows * out.stride), 0);
  out.scales.assign(static_cast<size_t>(rows * out.segments), 0.0f);
  out.sums.assign(static_cast<size_t>(rows * out.segments), 0);
}

void QuantizeActivations(const float* x, int64_t rows, int64_t cols, int64_t segment, Int8Activations& out) {
  ShapeActivations(rows, cols, segment, out);
  for (int64_t r = 0; r < rows; ++r) {
    for (int64_t s = 0; s < out.segments; ++s) {
      const float* in = x + r * cols + s * segment;
      const int64_t length = std::min(segment, cols - s * segment);
      float max_abs = 0.0f;
      for (int64_t j = 0; j < length; ++j) {
        if (!std::isfinite(in[j])) Fail("activation row {}, column {} is {}", r, s * segment + j, in[j]);
        max_abs = std::max(max_abs, std::fabs(in[j]));
      }
      const float scale = max_abs / 127.0f;
      const float inverse = scale > 0.0f ? 1.0f / scale : 0.0f;
      int8_t* q = out.values.data() + r * out.stride + s * segment;
      int32_t sum = 0;
      for (int64_t j = 0; j < length; ++j) {
        q[j] = ActivationLevel(in[j], inverse);
        sum += q[j];
      }
      out.scales[r * out.segments + s] = scale;
      out.sums[r * out.segments + s] = sum;
    }
  }
}

}  // namespace atq
