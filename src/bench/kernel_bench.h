// Kernel-level benchmark of MatMul: for each shape, format, batch and thread count, the time per product, the
// weight bytes streamed per second, weights per second and effective GOPS, set against the machine's memory read
// bandwidth measured in the same run by a STREAM-style read loop.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "formats/quant_type.h"

namespace atq {

struct MatrixShape {
  int64_t rows = 0, cols = 0;  // output features x input features
  std::string name;            // e.g. "4096x4096" or a fixture layer
};

struct KernelBenchOptions {
  std::vector<MatrixShape> shapes;
  std::vector<QuantType> types;
  std::vector<int64_t> batches = {1};  // activation rows: 1 is decode, more is prefill
  std::vector<int> threads;            // e.g. {1, hardware threads}
  double min_seconds = 0.3;            // per measurement, after one warm-up product
  int64_t bandwidth_bytes = int64_t{1} << 30;  // the read-bandwidth buffer (well past any L3)
  // Optional extra rows measured on the same shapes: name, and seconds per product for (rows, cols, batch, threads).
  std::vector<std::pair<std::string, std::function<double(int64_t, int64_t, int64_t, int)>>> baselines;
  std::function<void(const std::string&)> on_line;  // each table line as it is measured
};

// Bytes per second of a multithreaded read-and-sum over `bytes` (best of several passes).
double MeasureReadBandwidth(int64_t bytes, int threads);

// Runs every combination; returns {"target", "bandwidth": {threads: GB/s}, "results": [...]}.
nlohmann::json RunKernelBench(const KernelBenchOptions& options);

// A packed matrix of `type` with random weights, built from a quantized block of rows repeated to `rows`
// (quantizing 16384 x 16384 weights one by one would take longer than the benchmark).
std::vector<uint8_t> RandomPackedMatrix(const Layout& layout, uint32_t seed);

}  // namespace atq
