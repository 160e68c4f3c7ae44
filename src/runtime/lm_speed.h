// Model-level speed of a language model in several weight formats run by the packed runtime: prefill and decode
// tokens/s, time to first token, model bytes and resident memory, one fresh load per format. Memory is this
// process's (VmRSS after the run, VmHWM so far): per format only when one format is run per process.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "kernels/backend.h"
#include "runtime/device_model.h"

namespace atq {

struct LmSpeedOptions {
  // "torch": the model as loaded, float32 through libtorch. Any kernel format (f32, f16, q8_0, q4_0, tq2_0,
  // tq1_0, t2, t1.6, ...): linear layers in that format through atq's kernels, the token embedding (and tied
  // head) in q8_0 for the ternary formats and in the same format otherwise.
  std::vector<std::string> variants = {"torch", "f32", "f16", "q8_0", "q4_0", "tq2_0", "tq1_0", "t2"};
  int64_t prompt_tokens = 64;
  int64_t decode_tokens = 64;
  // Timed generations per format after an untimed warm-up (first-touch pages, thread start-up); the figures are
  // their medians, the JSON also holds the fastest and slowest.
  int64_t repeats = 3;
  // kCuda: each packed variant on atq's CUDA decoder (runtime/device_model.h); "torch" stays on the CPU.
  Device device = Device::kCpu;
  // On the CPU, what runs the packed variants' float parts (ForWholePasses); "torch" is libtorch throughout.
  CpuRuntime runtime = CpuRuntime::kAuto;
  std::function<void(const std::string&)> on_line;
};

// Throws atq::Error for an unknown variant or a model that does not load.
nlohmann::json MeasureLmSpeed(const std::string& model_path, const LmSpeedOptions& options);

}  // namespace atq
