// What the CUDA kernels are told about a packed matrix and its int8 activations: plain values and device pointers,
// so that kernels.cu needs none of atq's headers (nvcc compiles it; the host side in cuda_backend.cc fills these
// from the format table).
#pragma once

#include <cstdint>

#include <cuda_runtime_api.h>

namespace atq::cuda {

// The formats the CUDA kernels decode, one kernel instantiation each.
enum class KernelFormat : int { kT2, kU4Sym, kU4Asym, kQ8_0, kQ4_0, kTQ2_0, kTQ1_0 };

struct MatrixArgs {
  KernelFormat format = KernelFormat::kT2;
  const uint8_t* data = nullptr;  // device: the packed bytes, readable up to the next multiple of 16 past the end
  int64_t rows = 0, cols = 0;
  int64_t row_bytes = 0;          // bytes from one row's codes to the next
  // atq formats: float32 scales (and uint8 zero points) after the codes; group = row * groups_per_row + segment
  // (per group), row (per channel) or 0 (per tensor).
  const float* scales = nullptr;
  const uint8_t* zeros = nullptr;
  int granularity = 0;            // 0 tensor, 1 channel, 2 group
  int64_t groups_per_row = 0;
  int64_t segment = 0;            // columns per int8 activation scale (KernelSegment): a multiple of 32 or >= cols
  int64_t segments = 0;           // per row
  int64_t units_per_segment = 0;  // segment / 32 where a row has several segments (kernels never divide by segment)
};

// Activations X [n, cols] quantized per segment: int8 values, `stride` per row (a multiple of 256, zero past cols,
// in the order the weight format's decoder produces codes: see Destination in kernels.cu), and one float scale per
// row and segment.
struct ActArgs {
  int8_t* values = nullptr;
  float* scales = nullptr;
  int32_t* sums = nullptr;  // per 32 values of a row (stride / 32 per row): the kernels multiply unsigned codes and
                            // take offset * sum off afterwards (no per-byte subtraction, which sm_90 emulates)
  int64_t stride = 0;
};

// The order of the activation values within each 32 (t2 on the tensor cores: 64) columns, so that the decoders
// need no shuffles.
enum class ActOrder : int { kNatural, kTernary2, kTernary2Mma, kUniform4 };

// The two matrix kernels: __dp4a over rows staged in shared memory (one warp per row), and int8 tensor-core products
// (mma.sync) over 16-row tiles.
enum class KernelPath : int { kDp4a, kMma };

// X [n, cols] (device float32) -> out; a non-finite value in a segment makes its scale NaN, so that every output
// it touches is NaN (the CPU path throws; a device kernel cannot).
void LaunchQuantizeActivations(const float* x, int64_t n, int64_t cols, int64_t segment, int64_t segments,
                               ActOrder order, const ActArgs& out, cudaStream_t stream);
// y [n, rows] = X W^T for the quantized activations of X.
void LaunchMatMul(const MatrixArgs& matrix, const ActArgs& x, int64_t n, float* y, KernelPath path,
                  cudaStream_t stream);

}  // namespace atq::cuda
