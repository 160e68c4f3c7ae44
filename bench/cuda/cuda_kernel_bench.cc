// GPU benchmark of the CUDA packed kernels: weight bytes streamed per second for every format the backend runs, at
// the shapes of 7-8B models' layers, batch 1 (decode) and 16 (prefill), against a device-to-device copy measured in
// the same run. Writes JSON (--out) and prints a table.
//
//   atq_cuda_bench [--out FILE.json] [--quick]
//
// Timing: CUDA events around 100 back-to-back products (each the activation quantizer and the matrix kernel, what
// cuda::MatMul does), median of 5 such runs, after a warm-up; once launched from the host one by one ("us") and
// once replayed from a CUDA graph ("us graph": the device's own time), and the matrix kernel alone on activations
// quantized once ("us matmul", graph replay; the bandwidth figures use it: a model quantizes an input once for all
// the matrices that read it). The weights rotate among copies that together are
// several times the L2 cache, so each product reads its weights from device memory. Copy bandwidth counts bytes
// read plus bytes written; a product's bandwidth counts its weight bytes (the activations are kilobytes).
#include <algorithm>
#include <cstdlib>
#include <cstdio>
#include <filesystem>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include <cuda_runtime_api.h>
#include <fmt/format.h>

#include "formats/atq_packed.h"
#include "formats/quant_type.h"
#include "kernels/cuda/cuda_backend.h"

namespace atq {
namespace {

void Check(cudaError_t status, const char* what) {
  if (status != cudaSuccess) {
    std::fprintf(stderr, "atq_cuda_bench: %s: %s\n", what, cudaGetErrorString(status));
    std::exit(1);
  }
}

// Random weights packed on all host cores: ggml rows are independent; atq's codes, scales and zero points are each
// one region, filled block of rows by block of rows.
std::vector<uint8_t> PackRandom(const Layout& layout, uint32_t seed) {
  std::vector<uint8_t> bytes(static_cast<size_t>(PackedBytes(layout)));
  const bool atq = Traits(layout.type).family != TypeFamily::kGgmlBlock;
  const int threads = std::max(1u, std::thread::hardware_concurrency());
  const int64_t block_rows = std::max<int64_t>(1, (layout.rows + threads - 1) / threads);
  std::vector<std::thread> workers;
  for (int64_t first = 0; first < layout.rows; first += block_rows) {
    workers.emplace_back([&, first] {
      Layout part = layout;
      part.rows = std::min(block_rows, layout.rows - first);
      std::mt19937 rng(seed + static_cast<uint32_t>(first));
      std::normal_distribution<float> normal(0.0f, 0.02f);
      std::vector<float> w(static_cast<size_t>(part.rows * part.cols));
      for (float& v : w) v = normal(rng);
      const std::vector<uint8_t> packed = Quantize(part, w.data());
      if (!atq) {
        std::copy(packed.begin(), packed.end(), bytes.begin() + first * (PackedBytes(layout) / layout.rows));
        return;
      }
      const int64_t row_bytes = RowBytes(layout), groups = NumScaleGroups(part), first_group = first * GroupsPerRow(layout);
      std::copy_n(packed.begin(), part.rows * row_bytes, bytes.begin() + first * row_bytes);
      std::copy_n(packed.begin() + ScalesOffset(part), 4 * groups, bytes.begin() + ScalesOffset(layout) + 4 * first_group);
      if (IsAsymmetric(layout.type)) {
        std::copy_n(packed.begin() + ScalesOffset(part) + 4 * groups, groups,
                    bytes.begin() + ScalesOffset(layout) + 4 * NumScaleGroups(layout) + first_group);
      }
    });
  }
  for (std::thread& worker : workers) worker.join();
  return bytes;
}

struct Timer {
  cudaEvent_t start, stop;
  Timer() {
    Check(cudaEventCreate(&start), "cudaEventCreate");
    Check(cudaEventCreate(&stop), "cudaEventCreate");
  }
  ~Timer() {
    cudaEventDestroy(start);
    cudaEventDestroy(stop);
  }
  // Median over 5 runs of `repeats` calls of fn, in seconds per call. With `graph`, the calls are captured once
  // into a CUDA graph and the runs replay it: the device's time without the host's launch overhead (as a model's
  // decode step replays its graph).
  template <class Fn>
  double Median(const cuda::Stream& stream, int repeats, Fn&& fn, bool graph = false) {
    const auto handle = static_cast<cudaStream_t>(stream.handle());
    for (int i = 0; i < 3; ++i) fn(i);
    cudaGraphExec_t exec = nullptr;
    if (graph) {
      Check(cudaStreamSynchronize(handle), "cudaStreamSynchronize");
      cudaGraph_t captured = nullptr;
      Check(cudaStreamBeginCapture(handle, cudaStreamCaptureModeThreadLocal), "cudaStreamBeginCapture");
      for (int i = 0; i < repeats; ++i) fn(i);
      Check(cudaStreamEndCapture(handle, &captured), "cudaStreamEndCapture");
      Check(cudaGraphInstantiate(&exec, captured, 0), "cudaGraphInstantiate");
      Check(cudaGraphDestroy(captured), "cudaGraphDestroy");
      Check(cudaGraphLaunch(exec, handle), "cudaGraphLaunch");
    }
    std::vector<double> times;
    for (int run = 0; run < 5; ++run) {
      Check(cudaEventRecord(start, handle), "cudaEventRecord");
      if (graph) {
        Check(cudaGraphLaunch(exec, handle), "cudaGraphLaunch");
      } else {
        for (int i = 0; i < repeats; ++i) fn(i);
      }
      Check(cudaEventRecord(stop, handle), "cudaEventRecord");
      Check(cudaEventSynchronize(stop), "cudaEventSynchronize");
      float ms = 0.0f;
      Check(cudaEventElapsedTime(&ms, start, stop), "cudaEventElapsedTime");
      times.push_back(ms * 1e-3 / repeats);
    }
    if (exec != nullptr) Check(cudaGraphExecDestroy(exec), "cudaGraphExecDestroy");
    std::sort(times.begin(), times.end());
    return times[2];
  }
};

int Run(int argc, char** argv) {
  std::string out;
  bool quick = false;
  std::vector<std::string> only;  // --format NAME (repeatable): just these formats
  int repeats = 100;
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    if (arg == "--out" && i + 1 < argc) {
      out = argv[++i];
    } else if (arg == "--quick") {
      quick = true;
    } else if (arg == "--format" && i + 1 < argc) {
      only.push_back(argv[++i]);
    } else if (arg == "--repeats" && i + 1 < argc) {
      repeats = std::max(1, std::atoi(argv[++i]));
    } else {
      std::fprintf(stderr, "usage: atq_cuda_bench [--out FILE.json] [--quick] [--format NAME]... [--repeats N]\n");
      return 2;
    }
  }
  if (!cuda::Available()) {
    std::fprintf(stderr, "atq_cuda_bench: %s\n", cuda::DeviceSummary().c_str());
    return 1;
  }
  const std::string device = cuda::DeviceSummary();
  std::printf("device: %s\n", device.c_str());
  cuda::Stream stream;
  const auto handle = static_cast<cudaStream_t>(stream.handle());
  Timer timer;

  // The ceiling: a 1 GiB device-to-device copy.
  const size_t copy_bytes = size_t{1} << 30;
  cuda::DeviceBuffer from(copy_bytes), to(copy_bytes);
  Check(cudaMemsetAsync(from.get(), 0x5A, copy_bytes, handle), "cudaMemset");
  const double copy_seconds = timer.Median(stream, 10, [&](int) {
    Check(cudaMemcpyAsync(to.get(), from.get(), copy_bytes, cudaMemcpyDeviceToDevice, handle), "cudaMemcpyAsync");
  });
  const double copy_gbs = 2.0 * static_cast<double>(copy_bytes) / copy_seconds / 1e9;
  std::printf("device-to-device copy: %.0f GB/s (read + write)\n", copy_gbs);

  struct Format {
    const char* name;
    QuantType type;
    Granularity granularity;
    int64_t group;
  };
  const std::vector<Format> formats = {
      {"t2", QuantType::kTernary2, Granularity::kChannel, 0},
      {"tq2_0", QuantType::kTQ2_0, Granularity::kChannel, 0},
      {"tq1_0", QuantType::kTQ1_0, Granularity::kChannel, 0},
      {"q4_0", QuantType::kQ4_0, Granularity::kChannel, 0},
      {"q8_0", QuantType::kQ8_0, Granularity::kChannel, 0},
      {"u4s", QuantType::kUniform4Sym, Granularity::kChannel, 0},
      {"u4a/group:128", QuantType::kUniform4Asym, Granularity::kGroup, 128},
  };
  std::vector<std::pair<int64_t, int64_t>> shapes = {{4096, 4096}, {8192, 8192}, {14336, 4096}, {4096, 14336}};
  if (quick) shapes = {{8192, 8192}};
  const std::vector<int64_t> batches = {1, 16};

  std::string rows_json;
  std::printf("%-14s %-12s %-6s %5s %9s %9s %9s %8s %8s %12s\n", "format", "shape", "kernel", "batch", "us",
              "us graph", "us matmul", "GB/s", "of copy", "Gweights/s");
  struct Variant {
    const char* kernel;
    cuda::KernelChoice choice;
    int64_t n;
  };
  const std::vector<Variant> variants = {
      {"mma", cuda::KernelChoice::kTensorCores, 1}, {"dp4a", cuda::KernelChoice::kDp4a, 1},
      {"mma", cuda::KernelChoice::kTensorCores, 16}};
  for (const Format& format : formats) {
    if (!only.empty() && std::find(only.begin(), only.end(), format.name) == only.end()) continue;
    for (const auto& [rows, cols] : shapes) {
      const Layout layout{format.type, rows, cols, format.granularity, format.group};
      const std::vector<uint8_t> bytes = PackRandom(layout, 7);
      const size_t size = bytes.size();
      // Copies together at least 512 MiB (the H200's L2 is 60 MB).
      const int copies = static_cast<int>(std::max<size_t>(2, ((size_t{512} << 20) + size - 1) / size));
      std::vector<cuda::DeviceBuffer> weights;
      for (int c = 0; c < copies; ++c) {
        weights.emplace_back(size);
        cuda::CopyToDevice(weights.back().get(), bytes.data(), size, stream);
      }
      double batch1_per_second = 0.0;
      for (const Variant& variant : variants) {
        const int64_t n = variant.n;
        std::vector<float> x(static_cast<size_t>(n * cols));
        std::mt19937 rng(3);
        std::normal_distribution<float> normal;
        for (float& v : x) v = normal(rng);
        cuda::DeviceBuffer device_x(x.size() * 4), device_y(static_cast<size_t>(n * rows) * 4);
        cuda::CopyToDevice(device_x.get(), x.data(), x.size() * 4, stream);
        auto product = [&](int i) {
          cuda::MatMul(stream, {layout, weights[static_cast<size_t>(i % copies)].get()},
                       reinterpret_cast<const float*>(device_x.get()), n, reinterpret_cast<float*>(device_y.get()),
                       variant.choice);
        };
        const double launched = timer.Median(stream, repeats, product);
        const double both = timer.Median(stream, repeats, product, /*graph=*/true);
        // The matrix kernel alone, on activations quantized once (as a model shares them among q, k and v).
        const cuda::DeviceActivations acts = cuda::QuantizeActivations(
            stream, layout, reinterpret_cast<const float*>(device_x.get()), n, variant.choice);
        const double seconds = timer.Median(stream, repeats, [&](int i) {
          cuda::MatMul(stream, {layout, weights[static_cast<size_t>(i % copies)].get()}, acts,
                       reinterpret_cast<float*>(device_y.get()));
        }, /*graph=*/true);
        const double gbs = static_cast<double>(size) / seconds / 1e9;
        const double weights_per_second = static_cast<double>(rows * cols * n) / seconds;
        if (n == 1) batch1_per_second = std::max(batch1_per_second, weights_per_second);
        const double speedup = n > 1 && batch1_per_second > 0 ? weights_per_second / batch1_per_second : 0.0;
        const std::string shape = fmt::format("{}x{}", rows, cols);
        std::printf("%-14s %-12s %-6s %5lld %9.2f %9.2f %9.2f %8.0f %7.1f%% %12.1f%s\n", format.name, shape.c_str(),
                    variant.kernel, static_cast<long long>(n), launched * 1e6, both * 1e6, seconds * 1e6, gbs,
                    100.0 * gbs / copy_gbs, weights_per_second / 1e9,
                    n > 1 ? fmt::format("  ({:.1f}x batch 1)", speedup).c_str() : "");
        rows_json += fmt::format(
            "{}    {{\"format\": \"{}\", \"kernel\": \"{}\", \"rows\": {}, \"cols\": {}, \"batch\": {}, "
            "\"bytes\": {}, \"seconds_launched\": {:.9f}, \"seconds_graph\": {:.9f}, \"seconds_matmul\": {:.9f}, "
            "\"weight_gb_per_s\": {:.1f}, "
            "\"share_of_copy\": {:.4f}, \"weights_per_s\": {:.6e}, \"weights_per_s_over_best_batch_1\": {:.3f}}}",
            rows_json.empty() ? "" : ",\n", format.name, variant.kernel, rows, cols, n, size, launched, both, seconds, gbs,
            gbs / copy_gbs, weights_per_second, speedup);
      }
    }
  }
  if (!out.empty()) {
    const std::string json = fmt::format(
        "{{\n  \"device\": \"{}\",\n  \"copy_gb_per_s\": {:.1f},\n  \"kernel_target\": \"{}\",\n  \"results\": [\n{}\n  ]\n}}\n",
        device, copy_gbs, cuda::Target(), rows_json);
    const std::string temporary = out + ".tmp";
    std::FILE* file = std::fopen(temporary.c_str(), "w");
    if (file == nullptr || std::fwrite(json.data(), 1, json.size(), file) != json.size() || std::fclose(file) != 0) {
      std::fprintf(stderr, "atq_cuda_bench: cannot write %s\n", temporary.c_str());
      return 1;
    }
    std::filesystem::rename(temporary, out);
    std::printf("wrote %s\n", out.c_str());
  }
  return 0;
}

}  // namespace
}  // namespace atq

int main(int argc, char** argv) {
  try {
    return atq::Run(argc, argv);
  } catch (const std::exception& error) {
    std::fprintf(stderr, "atq_cuda_bench: %s\n", error.what());
    return 1;
  }
}
