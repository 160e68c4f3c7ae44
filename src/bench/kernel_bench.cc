// The kernel benchmark: random packed matrices, timed MatMul calls, a read-bandwidth loop.
#include "bench/kernel_bench.h"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstring>
#include <random>
#include <thread>
#include <utility>

#include <fmt/format.h>

#include "formats/atq_packed.h"
#include "kernels/interleaved.h"
#include "kernels/matmul.h"
#include "util/thread_pool.h"

namespace atq {
namespace {

using Clock = std::chrono::steady_clock;
constexpr int64_t kTileRows = 64;

double Seconds(Clock::time_point start) { return std::chrono::duration<double>(Clock::now() - start).count(); }

// Calls `run` until min_seconds have passed (at least 3 times) after one warm-up; seconds per call.
double TimePerCall(double min_seconds, const std::function<void()>& run) {
  run();
  int64_t calls = 0;
  const auto start = Clock::now();
  do {
    run();
    ++calls;
  } while (calls < 3 || Seconds(start) < min_seconds);
  return Seconds(start) / static_cast<double>(calls);
}

}  // namespace

std::vector<uint8_t> RandomPackedMatrix(const Layout& layout, uint32_t seed) {
  Layout tile = layout;
  tile.rows = std::min(layout.rows, kTileRows);
  std::mt19937 rng(seed);
  std::normal_distribution<float> normal(0.0f, 0.02f);
  std::vector<float> weights(static_cast<size_t>(tile.rows * tile.cols));
  for (float& w : weights) w = normal(rng);
  const std::vector<uint8_t> tile_bytes = Quantize(tile, weights.data());
  std::vector<uint8_t> out(static_cast<size_t>(PackedBytes(layout)));
  const TypeFamily family = Traits(layout.type).family;
  if (family != TypeFamily::kTernary && family != TypeFamily::kUniform) {
    // Row-major rows of equal size: repeat the tile's rows.
    const size_t row_bytes = tile_bytes.size() / static_cast<size_t>(tile.rows);
    for (int64_t r = 0; r < layout.rows; ++r) {
      std::memcpy(out.data() + r * row_bytes, tile_bytes.data() + (r % tile.rows) * row_bytes, row_bytes);
    }
    return out;
  }
  // atq layouts: codes rows, then scales (and zero points) per group; repeat both.
  const int64_t row_bytes = RowBytes(layout);
  for (int64_t r = 0; r < layout.rows; ++r) {
    std::memcpy(out.data() + r * row_bytes, tile_bytes.data() + (r % tile.rows) * row_bytes,
                static_cast<size_t>(row_bytes));
  }
  const int64_t groups = NumScaleGroups(layout), tile_groups = NumScaleGroups(tile);
  for (int64_t g = 0; g < groups; ++g) {
    std::memcpy(out.data() + ScalesOffset(layout) + 4 * g, tile_bytes.data() + ScalesOffset(tile) + 4 * (g % tile_groups), 4);
    if (IsAsymmetric(layout.type)) {
      out[ScalesOffset(layout) + 4 * groups + g] = tile_bytes[ScalesOffset(tile) + 4 * tile_groups + g % tile_groups];
    }
  }
  return out;
}

double MeasureReadBandwidth(int64_t bytes, int threads) {
  const int64_t count = bytes / static_cast<int64_t>(sizeof(uint64_t));
  std::vector<uint64_t> buffer(static_cast<size_t>(count));
  ThreadPool pool(threads);
  // First touch from the threads that will read (pages land near them).
  pool.ParallelFor(count, 4096, [&](int64_t begin, int64_t end, int) {
    for (int64_t i = begin; i < end; ++i) buffer[i] = static_cast<uint64_t>(i);
  });
  std::atomic<uint64_t> sink{0};
  double best = 0.0;
  // Two ways to read; the faster counts: a plain sum that leaves the fetching to the hardware prefetcher, and the
  // same sum asking for each line 16 KiB ahead into L2 (as the matrix-vector kernels do).
  for (const bool prefetch : {false, true}) {
    for (int pass = 0; pass < 5; ++pass) {
      const auto start = Clock::now();
      pool.ParallelFor(count, 4096, [&](int64_t begin, int64_t end, int) {
        constexpr int64_t kLine = 64 / sizeof(uint64_t), kAhead = 16384 / sizeof(uint64_t);
        uint64_t s0 = 0, s1 = 0, s2 = 0, s3 = 0;
        int64_t i = begin;
        for (; i + 4 <= end; i += 4) {
          if (prefetch && i % kLine == 0) __builtin_prefetch(buffer.data() + i + kAhead, 0, 2);
          s0 += buffer[i];
          s1 += buffer[i + 1];
          s2 += buffer[i + 2];
          s3 += buffer[i + 3];
        }
        for (; i < end; ++i) s0 += buffer[i];
        sink += s0 + s1 + s2 + s3;
      });
      best = std::max(best, static_cast<double>(bytes) / Seconds(start));
    }
  }
  return best;
}

nlohmann::json RunKernelBench(const KernelBenchOptions& options) {
  nlohmann::json out;
  out["target"] = KernelTargetName();
  std::map<int, double> bandwidth;
  for (int threads : options.threads) {
    bandwidth[threads] = MeasureReadBandwidth(options.bandwidth_bytes, threads);
    out["read_bandwidth_gbps"][std::to_string(threads)] = bandwidth[threads] / 1e9;
    if (options.on_line) {
      options.on_line(fmt::format("memory read bandwidth, {} thread(s): {:.1f} GB/s", threads, bandwidth[threads] / 1e9));
    }
  }
  if (options.on_line) {
    options.on_line(fmt::format("{:<14} {:<8} {:>5} {:>3} {:>10} {:>8} {:>9} {:>8} {:>7}", "shape", "type", "batch",
                                "thr", "time (us)", "GB/s", "Gweight/s", "GOPS", "of BW"));
  }
  nlohmann::json results = nlohmann::json::array();
  for (const MatrixShape& shape : options.shapes) {
    std::mt19937 rng(7);
    std::normal_distribution<float> normal(0.0f, 1.0f);
    const int64_t max_batch = *std::max_element(options.batches.begin(), options.batches.end());
    std::vector<float> x(static_cast<size_t>(max_batch * shape.cols));
    for (float& v : x) v = normal(rng);
    std::vector<float> y(static_cast<size_t>(max_batch * shape.rows));
    auto record = [&](const std::string& type, double bits, int64_t weight_bytes, int64_t batch, int threads,
                      double seconds) {
      const double weights = static_cast<double>(shape.rows) * static_cast<double>(shape.cols);
      nlohmann::json row = {{"shape", shape.name},
                            {"rows", shape.rows},
                            {"cols", shape.cols},
                            {"type", type},
                            {"bits_per_weight", bits},
                            {"weight_bytes", weight_bytes},
                            {"batch", batch},
                            {"threads", threads},
                            {"seconds", seconds},
                            {"weight_gbps", static_cast<double>(weight_bytes) / seconds / 1e9},
                            {"gweights_per_second", weights / seconds / 1e9},
                            {"gops", 2.0 * weights * static_cast<double>(batch) / seconds / 1e9}};
      row["bandwidth_share"] = static_cast<double>(weight_bytes) / seconds / bandwidth[threads];
      if (options.on_line) {
        options.on_line(fmt::format("{:<14} {:<8} {:>5} {:>3} {:>10.1f} {:>8.2f} {:>9.2f} {:>8.1f} {:>6.0f}%",
                                    shape.name, type, batch, threads, seconds * 1e6, row["weight_gbps"].get<double>(),
                                    row["gweights_per_second"].get<double>(), row["gops"].get<double>(),
                                    100.0 * row["bandwidth_share"].get<double>()));
      }
      results.push_back(row);
    };
    for (QuantType type : options.types) {
      Layout layout{type, shape.rows, shape.cols, Granularity::kChannel, 0};
      // llama.cpp's blocks need whole blocks per row; atq's types take any width (t1.6's 5 codes per byte pad the
      // last byte), so they always run.
      if (Traits(type).family == TypeFamily::kGgmlBlock && shape.cols % Traits(type).block_size != 0) continue;
      const std::vector<uint8_t> bytes = RandomPackedMatrix(layout, 11);
      // Under the type's name what a model runs: Q8_0 and Q4_0 with their rows interleaved, as the CPU decoder
      // holds them (kernels/interleaved.h); those also in the file's order, as "<type>:rows".
      const std::vector<uint8_t> interleaved = InterleaveRows({layout, bytes.data()});
      std::vector<std::pair<std::string, PackedMatrix>> variants;
      variants.emplace_back(TypeName(type), PackedMatrix{layout, bytes.data()});
      if (!interleaved.empty()) {
        variants.back().second.interleaved = interleaved.data();
        variants.emplace_back(fmt::format("{}:rows", TypeName(type)), PackedMatrix{layout, bytes.data()});
      }
      const double bits = 8.0 * static_cast<double>(bytes.size()) / (static_cast<double>(shape.rows) * shape.cols);
      for (const auto& variant : variants) {
        const PackedMatrix& matrix = variant.second;
        for (int threads : options.threads) {
          ThreadPool pool(threads);
          for (int64_t batch : options.batches) {
            const double seconds =
                TimePerCall(options.min_seconds, [&] { MatMul(matrix, x.data(), batch, y.data(), pool); });
            record(variant.first, bits, static_cast<int64_t>(bytes.size()), batch, threads, seconds);
          }
        }
      }
    }
    for (const auto& [name, run] : options.baselines) {
      for (int threads : options.threads) {
        for (int64_t batch : options.batches) {
          record(name, 32.0, shape.rows * shape.cols * 4, batch, threads, run(shape.rows, shape.cols, batch, threads));
        }
      }
    }
  }
  out["results"] = results;
  return out;
}

}  // namespace atq
