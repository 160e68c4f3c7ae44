// libtorch's float32 matrix product timed on the shapes of the kernel benchmark: the baseline packed kernels are
// held against (prefill at batch >= 64 must be at least as fast).
#pragma once

#include <cstdint>

namespace atq {

// Seconds per X [batch, cols] x W^T with W [rows, cols] float32, on `threads` threads (best of the timed calls).
double TorchMatMulSeconds(int64_t rows, int64_t cols, int64_t batch, int threads, double min_seconds);

}  // namespace atq
