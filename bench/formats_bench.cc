// Reference quantize and dequantize throughput for every quantized format of the table (4096 x 4096 floats).
#include <random>
#include <vector>

#include <benchmark/benchmark.h>

#include "formats/quant_type.h"

namespace atq {
namespace {

constexpr int64_t kRows = 4096, kCols = 4096;

const std::vector<float>& Weights() {
  static const std::vector<float> weights = [] {
    std::mt19937 rng(1);
    std::normal_distribution<float> normal(0.0f, 0.02f);
    std::vector<float> values(static_cast<size_t>(kRows * kCols));
    for (float& value : values) value = normal(rng);
    return values;
  }();
  return weights;
}

Layout BenchLayout(QuantType type) { return {type, kRows, kCols, Granularity::kGroup, 128}; }

void BM_Quantize(benchmark::State& state, QuantType type) {
  const Layout layout = BenchLayout(type);
  std::vector<uint8_t> packed(static_cast<size_t>(PackedBytes(layout)));
  for (auto _ : state) {
    Quantize(layout, Weights().data(), packed.data());
    benchmark::DoNotOptimize(packed.data());
  }
  state.SetItemsProcessed(state.iterations() * kRows * kCols);
}

void BM_Dequantize(benchmark::State& state, QuantType type) {
  const Layout layout = BenchLayout(type);
  const std::vector<uint8_t> packed = Quantize(layout, Weights().data());
  std::vector<float> restored(static_cast<size_t>(kRows * kCols));
  for (auto _ : state) {
    Dequantize(layout, packed.data(), restored.data());
    benchmark::DoNotOptimize(restored.data());
  }
  state.SetItemsProcessed(state.iterations() * kRows * kCols);
  state.SetBytesProcessed(state.iterations() * static_cast<int64_t>(packed.size()));
}

// One benchmark pair per quantized row of the table, so a new format is benchmarked without new code.
const bool kRegistered = [] {
  for (const TypeTraits& row : AllTypes()) {
    if (!row.is_quantized) continue;
    benchmark::RegisterBenchmark(("Quantize/" + std::string(row.name)).c_str(), BM_Quantize, row.type)
        ->Unit(benchmark::kMillisecond);
    benchmark::RegisterBenchmark(("Dequantize/" + std::string(row.name)).c_str(), BM_Dequantize, row.type)
        ->Unit(benchmark::kMillisecond);
  }
  return true;
}();

}  // namespace
}  // namespace atq
