// The backend table: the CPU row (Highway kernels) and the lookups.
#include "kernels/backend.h"

#include <fmt/format.h>

#include "kernels/matmul.h"
#include "util/error.h"
#ifdef ATQ_WITH_CUDA
#include "kernels/cuda/cuda_backend.h"
#endif

namespace atq {
namespace {

bool Always() { return true; }

// The CPU kernels run every quantized type with a kernel segment, and the float ones.
bool CpuSupports(QuantType type) {
  if (IsFloatWeight(type)) return true;
  Layout layout;
  layout.type = type;
  layout.rows = 1;
  layout.cols = Traits(type).block_size;
  layout.granularity = Granularity::kChannel;
  try {
    KernelSegment(layout);
    return true;
  } catch (const Error&) {
    return false;
  }
}

#ifdef ATQ_SCALAR_CPU
// The CUDA-only build (cuda/CMakeLists.txt) has no Highway: its CPU row is the scalar reference.
void CpuMatMul(const PackedMatrix& weights, const float* x, int64_t n, float* y, ThreadPool&) {
  MatMulReference(weights, x, n, y);
}
std::string CpuTarget() { return "scalar reference"; }
#else
void CpuMatMul(const PackedMatrix& weights, const float* x, int64_t n, float* y, ThreadPool& pool) {
  MatMul(weights, x, n, y, pool);
}
std::string CpuTarget() { return KernelTargetName(); }
#endif

#ifdef ATQ_WITH_CUDA
void CudaMatMul(const PackedMatrix& weights, const float* x, int64_t n, float* y, ThreadPool&) {
  cuda::MatMulBlocking(weights, x, n, y);
}
#endif

}  // namespace

std::string_view DeviceName(Device device) {
  switch (device) {
    case Device::kCpu: return "cpu";
    case Device::kCuda: return "cuda";
  }
  return "?";
}

const std::vector<KernelBackend>& KernelBackends() {
  static const std::vector<KernelBackend> backends = {
      {"cpu", Device::kCpu, Always, CpuSupports, CpuMatMul, CpuTarget},
#ifdef ATQ_WITH_CUDA
      {"cuda", Device::kCuda, cuda::Available, cuda::Supports, CudaMatMul, cuda::Target},
#endif
  };
  return backends;
}

const KernelBackend& BackendFor(Device device) {
  std::vector<std::string_view> built;
  for (const KernelBackend& backend : KernelBackends()) {
    built.push_back(backend.name);
    if (backend.device == device) {
      Require(backend.available(), "the {} backend is built but not usable on this machine: {}", backend.name,
              backend.target());
      return backend;
    }
  }
  Fail("no kernel backend for device {} in this build (built: {})", DeviceName(device), fmt::join(built, ", "));
}

void PackedMatMul(Device device, const PackedMatrix& weights, const float* x, int64_t n, float* y, ThreadPool& pool) {
  const KernelBackend& backend = BackendFor(device);
  Require(backend.supports(weights.layout.type), "the {} backend has no kernel for {}", backend.name,
          TypeName(weights.layout.type));
  backend.matmul(weights, x, n, y, pool);
}

}  // namespace atq
