// The scalar reference of MatMul: decode a row's codes, multiply with the int8 activations segment by segment.
#include <algorithm>
#include <vector>

#include "kernels/int8_activations.h"
#include "kernels/matmul.h"
#include "util/error.h"

namespace atq {

void MatMulReference(const PackedMatrix& weights, const float* x, int64_t n, float* y) {
  const Layout& layout = weights.layout;
  const int64_t rows = layout.rows, cols = layout.cols;
  if (IsFloatWeight(layout.type)) {
    std::vector<float> row(static_cast<size_t>(cols));
    for (int64_t r = 0; r < rows; ++r) {
      DequantizeRow(weights, r, row.data());
      for (int64_t i = 0; i < n; ++i) {
        float sum = 0.0f;
        for (int64_t j = 0; j < cols; ++j) sum += row[j] * x[i * cols + j];
        y[i * rows + r] = sum;
      }
    }
    return;
  }
  Int8Activations acts;
  QuantizeActivations(x, n, cols, KernelSegment(layout), acts);
  MatMulQuantizedReference(weights, acts, y);
}

void MatMulQuantizedReference(const PackedMatrix& weights, const Int8Activations& acts, float* y) {
  const Layout& layout = weights.layout;
  const int64_t rows = layout.rows, cols = layout.cols;
  CheckQuantizedInput(weights, acts);
  const int64_t segment = acts.segment;
  std::vector<uint8_t> codes(static_cast<size_t>(acts.stride));
  std::vector<float> scales(static_cast<size_t>(acts.segments));
  std::vector<int32_t> offsets(static_cast<size_t>(acts.segments));
  const RowDecoder decoder(weights);
  for (int64_t r = 0; r < rows; ++r) {
    decoder.Decode(r, codes.data(), scales.data(), offsets.data());
    for (int64_t i = 0; i < acts.rows; ++i) {
      const int8_t* q = acts.values.data() + i * acts.stride;
      float sum = 0.0f;
      for (int64_t s = 0; s < acts.segments; ++s) {
        int32_t dot = 0;
        for (int64_t j = s * segment; j < std::min(cols, (s + 1) * segment); ++j) dot += codes[j] * q[j];
        const int32_t centered = dot - offsets[s] * acts.sums[i * acts.segments + s];
        sum += (scales[s] * acts.scales[i * acts.segments + s]) * static_cast<float>(centered);
      }
      y[i * rows + r] = sum;
    }
  }
}

void CheckQuantizedInput(const PackedMatrix& weights, const Int8Activations& acts) {
  const Layout& layout = weights.layout;
  Require(!IsFloatWeight(layout.type), "{} weights multiply float activations, not int8", TypeName(layout.type));
  Require(acts.cols == layout.cols && acts.segment == KernelSegment(layout),
          "int8 activations of {} columns in segments of {} do not fit {} weights of {} columns (segments of {})",
          acts.cols, acts.segment, TypeName(layout.type), layout.cols, KernelSegment(layout));
}

}  // namespace atq
