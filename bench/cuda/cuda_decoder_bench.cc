// GPU benchmark of the whole decoder (kernels/cuda/cuda_decoder.h) on a synthetic model of tinyllama-1.1b's
// dimensions (bench/synthetic_decoder.h: random weights, real shapes, an untied head), one packed format at a time:
// prefill tokens/s for a prompt, decode tokens/s one token at a time through the key/value cache, and the weight
// bytes a decode step reads per second against a device-to-device copy measured in the same run. Writes JSON
// (--out) and prints a table.
//
//   atq_cuda_decoder_bench [--out FILE.json] [--prompt 128] [--tokens 128] [--formats t2,tq2_0,...]
//
// Timing: wall clock around whole calls (each returns once its logits are on the host), after a warm-up prompt.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <deque>
#include <fstream>
#include <optional>
#include <string>
#include <vector>

#include <cuda_runtime_api.h>
#include <fmt/format.h>

#include "bench/synthetic_decoder.h"
#include "formats/quant_type.h"
#include "kernels/cuda/cuda_backend.h"
#include "kernels/decoder.h"
#include "util/error.h"

namespace atq {
namespace {

using Clock = std::chrono::steady_clock;
double Seconds(Clock::time_point since) { return std::chrono::duration<double>(Clock::now() - since).count(); }

// Device-to-device copy of 1 GiB: bytes read plus bytes written per second (GB/s), best of 5.
double CopyBandwidth() {
  const size_t bytes = size_t{1} << 30;
  void *a = nullptr, *b = nullptr;
  if (cudaMalloc(&a, bytes) != cudaSuccess || cudaMalloc(&b, bytes) != cudaSuccess) Fail("cudaMalloc of 2 GiB failed");
  cudaMemset(a, 1, bytes);
  double best = 1e30;
  for (int i = 0; i < 6; ++i) {
    cudaDeviceSynchronize();
    const auto start = Clock::now();
    cudaMemcpy(b, a, bytes, cudaMemcpyDeviceToDevice);
    cudaDeviceSynchronize();
    if (i > 0) best = std::min(best, Seconds(start));
  }
  cudaFree(a);
  cudaFree(b);
  return 2.0 * static_cast<double>(bytes) / best / 1e9;
}

int64_t WeightBytesPerToken(const DecoderSpec& spec) {
  int64_t total = static_cast<int64_t>(spec.head->size());
  for (const DecoderLayer& l : spec.layers) {
    for (const DecoderLinear* linear : {&l.q, &l.k, &l.v, &l.o, &l.gate, &l.up, &l.down}) {
      total += static_cast<int64_t>(linear->weights->size());
    }
  }
  return total;
}

int Run(int argc, char** argv) {
  std::string out;
  int64_t prompt = 128, tokens = 128;
  std::vector<std::string> formats = {"t2", "tq2_0", "tq1_0", "q4_0", "u4s", "q8_0"};
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    const auto value = [&] {
      Require(i + 1 < argc, "{} needs a value", arg);
      return std::string(argv[++i]);
    };
    if (arg == "--out") {
      out = value();
    } else if (arg == "--prompt") {
      prompt = std::stoll(value());
    } else if (arg == "--tokens") {
      tokens = std::stoll(value());
    } else if (arg == "--formats") {
      formats.clear();
      std::string list = value(), item;
      for (const char c : list + ",") {
        if (c == ',') {
          if (!item.empty()) formats.push_back(item);
          item.clear();
        } else {
          item += c;
        }
      }
    } else {
      Fail("unknown argument {} (--out FILE --prompt N --tokens N --formats a,b)", arg);
    }
  }
  Require(cuda::Available(), "no CUDA device: {}", cuda::DeviceSummary());
  const double copy = CopyBandwidth();
  std::printf("%s; device copy %.0f GB/s (read + write)\n", cuda::DeviceSummary().c_str(), copy);
  std::printf("%-7s %10s %12s %12s %12s %10s %9s\n", "format", "MB/token", "prefill t/s", "decode t/s",
              "ms/token", "GB/s", "of copy");
  std::string rows;
  for (const std::string& name : formats) {
    const std::optional<QuantType> parsed = ParseQuantType(name);
    Require(parsed.has_value(), "unknown format {}", name);
    const QuantType type = *parsed;
    const auto build_start = Clock::now();
    std::deque<PackedWeights> storage;
    const DecoderSpec spec = SyntheticDecoder(TinyLlamaShape(type), storage);
    auto runner = MakeDecoderRunner(Device::kCuda, spec, prompt + tokens + 16);
    const double build_seconds = Seconds(build_start);
    std::vector<int64_t> ids(static_cast<size_t>(prompt + tokens));
    for (size_t i = 0; i < ids.size(); ++i) ids[i] = static_cast<int64_t>((i * 7919 + 13) % spec.vocab);
    std::vector<float> logits;
    runner->Forward(ids.data(), 16, false, logits);  // warm-up: kernels loaded, buffers sized
    runner->Reset();
    auto start = Clock::now();
    runner->Forward(ids.data(), prompt, false, logits);
    const double prefill_seconds = Seconds(start);
    std::vector<double> steps;
    start = Clock::now();
    for (int64_t t = 0; t < tokens; ++t) {
      const auto step = Clock::now();
      runner->Forward(&ids[static_cast<size_t>(prompt + t)], 1, false, logits);
      steps.push_back(Seconds(step));
    }
    const double decode_seconds = Seconds(start);
    std::sort(steps.begin(), steps.end());
    const double median = steps[steps.size() / 2];
    const int64_t bytes = WeightBytesPerToken(spec);
    const double gbps = static_cast<double>(bytes) / median / 1e9;
    // a decode step only reads its weights, so it is set against half the copy figure (which reads and writes)
    const double share = gbps / (copy / 2);
    std::printf("%-7s %10.1f %12.0f %12.1f %12.3f %10.0f %8.1f%%\n", name.c_str(), static_cast<double>(bytes) / 1e6,
                static_cast<double>(prompt) / prefill_seconds, static_cast<double>(tokens) / decode_seconds,
                median * 1e3, gbps, 100 * share);
    rows += fmt::format(
        "{}    {{\"format\": \"{}\", \"weight_bytes_per_token\": {}, \"prompt_tokens\": {}, \"prefill_seconds\": {:.6f}, "
        "\"prefill_tokens_per_s\": {:.1f}, \"decode_tokens\": {}, \"decode_seconds\": {:.6f}, "
        "\"decode_tokens_per_s\": {:.2f}, \"decode_median_ms\": {:.4f}, \"decode_weight_gbps\": {:.1f}, "
        "\"share_of_copy_read\": {:.4f}, \"setup_seconds\": {:.2f}}}",
        rows.empty() ? "" : ",\n", name, bytes, prompt, prefill_seconds, static_cast<double>(prompt) / prefill_seconds,
        tokens, decode_seconds, static_cast<double>(tokens) / decode_seconds, median * 1e3, gbps, share,
        build_seconds);
  }
  if (!out.empty()) {
    const std::string temporary = out + ".tmp";
    std::ofstream file(temporary);
    file << fmt::format(
        "{{\n  \"device\": \"{}\",\n  \"model\": \"synthetic tinyllama-1.1b (22 layers, 2048 wide, 32/4 heads, 5632 "
        "intermediate, 32000 vocab, untied head; random weights)\",\n  \"copy_gbps_read_plus_write\": {:.1f},\n  "
        "\"timing\": \"wall clock per call, logits copied to the host; decode GB/s from the median step\",\n  "
        "\"rows\": [\n{}\n  ]\n}}\n",
        cuda::DeviceSummary(), copy, rows);
    file.close();
    Require(file.good(), "{}: could not be written", temporary);
    Require(std::rename(temporary.c_str(), out.c_str()) == 0, "{}: could not be renamed", out);
  }
  return 0;
}

}  // namespace
}  // namespace atq

int main(int argc, char** argv) {
  try {
    return atq::Run(argc, argv);
  } catch (const std::exception& error) {
    std::fprintf(stderr, "atq_cuda_decoder_bench: %s\n", error.what());
    return 1;
  }
}
