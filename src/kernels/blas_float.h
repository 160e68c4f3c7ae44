// Float weights (f32, f16, bf16) against many activation rows through the system BLAS's sgemm: prompts and
// perplexity windows of a half-precision model are matrix-matrix products, where a tuned GEMM beats atq's
// row-tile kernel (which is made for one to a few rows, where the weights' bytes are the cost).
#pragma once

#include <cstdint>

#include "kernels/packed_matrix.h"
#include "util/thread_pool.h"

namespace atq {

// Activation rows from which MatMul hands float weights to BlasFloatMatMul (fewer stay with atq's kernel). Measured
// with `atq bench --types f16 --batch 16,32,64,512 --threads 1,2` (OpenBLAS 0.3.21, SkylakeX kernels, 2 cores):
// at 512 rows the BLAS took 4096x4096 f16 from 220 to 117 ms on one thread and 110 to 69 on two, while at 32-64
// rows on two threads atq's kernel was still ahead (7.2 against 14.1 ms at 32).
inline constexpr int64_t kBlasMinRows = 128;

// Whether this build has a BLAS (CMake found one; else BlasFloatMatMul does nothing and returns false).
bool HaveBlas();

// y[n, rows] = x[n, cols] W^T for float weights, slabs of rows on the pool's threads, one sgemm each; f16/bf16
// slabs are widened to float32 first (a few MB), so nothing the size of the matrix is allocated. Returns false
// (and writes nothing) without a BLAS or for weights that are not float.
bool BlasFloatMatMul(const PackedMatrix& weights, const float* x, int64_t n, float* y, ThreadPool& pool);

}  // namespace atq
