// Round-trip measurement through the format table's reference quantizers.
#include "formats/roundtrip.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <limits>
#include <vector>

namespace atq {

double RoundtripError::RelativeRmse() const {
  if (sum_squared_weight == 0) return sum_squared_error == 0 ? 0.0 : std::numeric_limits<double>::infinity();
  return std::sqrt(sum_squared_error / sum_squared_weight);
}

double RoundtripError::SqnrDb() const {
  if (sum_squared_error == 0) return std::numeric_limits<double>::infinity();
  return 10.0 * std::log10(sum_squared_weight / sum_squared_error);
}

void RoundtripError::Add(const RoundtripError& other) {
  weights += other.weights;
  packed_bytes += other.packed_bytes;
  sum_squared_error += other.sum_squared_error;
  sum_squared_weight += other.sum_squared_weight;
  max_abs_error = std::max(max_abs_error, other.max_abs_error);
  seconds += other.seconds;
}

RoundtripError MeasureRoundtrip(const Layout& layout, const float* weights) {
  const auto start = std::chrono::steady_clock::now();
  const std::vector<uint8_t> packed = Quantize(layout, weights);
  std::vector<float> restored(static_cast<size_t>(layout.rows * layout.cols));
  Dequantize(layout, packed.data(), restored.data());
  RoundtripError result;
  result.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  result.weights = layout.rows * layout.cols;
  result.packed_bytes = static_cast<int64_t>(packed.size());
  for (size_t i = 0; i < restored.size(); ++i) {
    const double error = static_cast<double>(weights[i]) - restored[i];
    result.sum_squared_error += error * error;
    result.sum_squared_weight += static_cast<double>(weights[i]) * weights[i];
    result.max_abs_error = std::max(result.max_abs_error, std::abs(error));
  }
  return result;
}

}  // namespace atq
