// Products of a packed weight matrix W [rows, cols] with float activations X [n, cols]: Y [n, rows] = X W^T.
// n = 1 is the decode matrix-vector product, n > 1 the prefill / batched one.
//
// Quantized types run in integers: X is quantized per segment to int8 (Int8Activations) and
//   y = sum over segments s of (scale_w[s] * scale_x[s]) * (sum_j code_j * q_j - offset_w[s] * sum_j q_j).
// Float types (f32, f16, bf16) multiply float weights with float activations.
//
// MatMulReference is that arithmetic in plain scalar code; MatMul runs Highway kernels chosen at run time for the
// CPU (AVX-512 with VNNI, AVX-512, AVX2, SSE4, NEON, ...), threaded over output rows, and agrees with the
// reference within float rounding of the per-segment sums (integer sums are exact in both).
#pragma once

#include <cstdint>
#include <string>

#include "kernels/int8_activations.h"
#include "kernels/packed_matrix.h"
#include "util/thread_pool.h"

namespace atq {

void MatMulReference(const PackedMatrix& weights, const float* x, int64_t n, float* y);
void MatMul(const PackedMatrix& weights, const float* x, int64_t n, float* y, ThreadPool& pool = KernelThreadPool());

// The same products on activations the caller quantized (a convolution builds its int8 patches directly):
// `x` shaped by ShapeActivations with the weights' KernelSegment and filled as QuantizeActivations fills it.
// Y [x.rows, rows]. Integer types only: float types and a mismatched shape are an atq::Error.
void MatMulQuantizedReference(const PackedMatrix& weights, const Int8Activations& x, float* y);
void MatMulQuantized(const PackedMatrix& weights, const Int8Activations& x, float* y,
                     ThreadPool& pool = KernelThreadPool());
void CheckQuantizedInput(const PackedMatrix& weights, const Int8Activations& x);

// The Highway target MatMul runs on this CPU (e.g. "AVX3_DL"), for benchmarks and reports.
std::string KernelTargetName();

}  // namespace atq
