// Images per second of a packed classifier: atq's packed kernels against the same weights in float32 through
// libtorch's convolution and linear operators, on the same random images and thread count in one run. This is the
// measure of the packed-convolution target (packed ternary CNN and ResNet-18 at least as fast as libtorch float at
// batch 1 and 256).
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "formats/quant_type.h"

namespace atq {

struct ClassifierSpeedOptions {
  std::vector<int64_t> batches = {1, 256};
  double min_seconds = 1.0;  // timed forward passes per measurement, after one warm-up pass
  std::function<void(const std::string&)> on_line;  // each table line as it is measured
};

// `packed_path` is a file from ExportPackedClassifier. Runs it through the packed kernels, and as a float32 model
// holding the same weights dequantized once (libtorch's convolution and linear operators), on the threads libtorch
// is set to. Returns {"model", "format", "threads", "results": [{"batch", "runtime", "images_per_second", ...}]}.
nlohmann::json MeasureClassifierSpeed(const std::string& packed_path, const ClassifierSpeedOptions& options);

// A packed file of architecture `arch` (a MakeClassifier name) with seeded random weights, BatchNorm statistics
// and ternary inner layers (threshold 0.7 x mean |w|, the first and last layers float): a model to time without
// training one. Speed does not depend on the values, only on the shapes and the format.
void WriteRandomTernaryClassifier(const std::string& arch, int64_t image_size, QuantType type,
                                  const std::string& path);

}  // namespace atq
