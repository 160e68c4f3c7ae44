// The compute backends of the packed kernels, one row each (as ggml keeps its per-backend type traits apart from
// the format table): where the bytes and activations live, whether the backend is usable here, which formats it
// runs, and its matrix product. Callers ask for a device; PackedMatMul dispatches. The CPU row is built from
// kernels/matmul.h; a GPU backend is one more row (its own file under src/kernels/<backend>/) and no caller
// changes.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "kernels/packed_matrix.h"
#include "util/thread_pool.h"

namespace atq {

// Where a packed matrix's bytes, the activations and the outputs live.
enum class Device { kCpu, kCuda };
std::string_view DeviceName(Device device);  // "cpu", "cuda"

struct KernelBackend {
  std::string_view name;
  Device device;
  bool (*available)();                // usable on this machine (built, and a device present)
  bool (*supports)(QuantType type);   // formats it multiplies
  // y [n, rows] = x [n, cols] W^T, all three in the backend's memory; `pool` for backends that thread on the host.
  void (*matmul)(const PackedMatrix& weights, const float* x, int64_t n, float* y, ThreadPool& pool);
  std::string (*target)();            // what runs (e.g. "AVX3_DL"), for reports
};

// Every backend this build has, CPU first.
const std::vector<KernelBackend>& KernelBackends();

// The backend for `device`; throws atq::Error naming the device and the backends built when there is none or it
// is not usable here.
const KernelBackend& BackendFor(Device device);

// MatMul on `device`'s backend; throws atq::Error when the backend does not run the format.
void PackedMatMul(Device device, const PackedMatrix& weights, const float* x, int64_t n, float* y,
                  ThreadPool& pool = KernelThreadPool());

}  // namespace atq
