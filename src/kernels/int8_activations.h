// Activations quantized on the fly for the integer kernels: each row of X [rows, cols] cut into segments of the
// weight's segment length, each segment stored as int8 with its own scale max|x| / 127 (symmetric, round to
// nearest even), and the sum of its int8 values (the kernels subtract offset * sum for unsigned weight codes).
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <vector>

namespace atq {

struct Int8Activations {
  int64_t rows = 0, cols = 0;
  int64_t segment = 0, segments = 0;  // segments = ceil(cols / segment)
  int64_t stride = 0;                 // int8 values per row: segments * segment, zero past cols
  std::vector<int8_t> values;         // rows * stride
  std::vector<float> scales;          // rows * segments
  std::vector<int32_t> sums;          // rows * segments
};

// Sets out's shape for X [rows, cols] cut into segments of `segment`, with zeroed values, scales and sums.
void ShapeActivations(int64_t rows, int64_t cols, int64_t segment, Int8Activations& out);

// One value's int8 level: x / scale rounded to nearest even, clamped to +-127 (inverse = 1 / scale, or 0).
inline int8_t ActivationLevel(float x, float inverse) {
  return static_cast<int8_t>(std::min(127.0f, std::max(-127.0f, std::nearbyint(x * inverse))));
}

// The reference quantizer. Throws atq::Error for a non-finite activation (naming its row and column).
void QuantizeActivations(const float* x, int64_t rows, int64_t cols, int64_t segment, Int8Activations& out);

}  // namespace atq
