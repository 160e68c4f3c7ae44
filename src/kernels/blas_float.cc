// The BLAS path of float weights: a slab of rows widened to float32, then one sgemm per slab.
#include "kernels/blas_float.h"

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <vector>

#ifdef ATQ_WITH_BLAS
#include <cblas.h>
#endif

#include "kernels/float_ops.h"

#ifdef ATQ_WITH_BLAS
// OpenBLAS's thread count, where the BLAS is OpenBLAS (weak: another BLAS leaves them null and keeps its own).
extern "C" void openblas_set_num_threads(int threads) __attribute__((weak));
extern "C" int openblas_get_num_threads() __attribute__((weak));
#endif

namespace atq {

#ifdef ATQ_WITH_BLAS

bool HaveBlas() { return true; }

bool BlasFloatMatMul(const PackedMatrix& weights, const float* x, int64_t n, float* y, ThreadPool& pool) {
  const Layout& layout = weights.layout;
  if (!IsFloatWeight(layout.type) || n <= 0 || layout.rows <= 0 || layout.cols <= 0) return false;
  const int64_t rows = layout.rows, cols = layout.cols;
  const int64_t element = layout.type == QuantType::kF32 ? 4 : 2;
  const bool in_place =
      layout.type == QuantType::kF32 && reinterpret_cast<uintptr_t>(weights.data) % alignof(float) == 0;
  // Slabs of at most about 4 MB of float32 (in cache while sgemm runs over them; no float copy of the whole
  // matrix), at least one per thread, multiples of 16 rows.
  constexpr int64_t kSlabFloats = int64_t{1} << 20;
  const int64_t threads = std::max(1, pool.threads());
  const int64_t per_thread = ((rows + threads - 1) / threads + 15) / 16 * 16;
  const int64_t slab = std::max<int64_t>(16, std::min(kSlabFloats / cols, per_thread));
  const int64_t slabs = (rows + slab - 1) / slab;
  // Each slab's sgemm on one OpenBLAS thread, the slabs on the pool's threads: OpenBLAS's own threads would contend
  // for the cores with the pool's (libgomp's team spins between parallel regions). Restored afterwards for libtorch.
  const int previous = openblas_get_num_threads != nullptr ? openblas_get_num_threads() : 0;
  if (openblas_set_num_threads != nullptr) openblas_set_num_threads(1);
  pool.ParallelFor(slabs, 1, [&](int64_t begin, int64_t end, int) {
    // Kept per thread between calls: a fresh buffer each product cost its page faults again (glibc trims it).
    thread_local std::vector<float> widened;
    for (int64_t s = begin; s < end; ++s) {
      const int64_t first = s * slab, count = std::min(slab, rows - first);
      const uint8_t* bytes = weights.data + first * cols * element;
      const float* w = reinterpret_cast<const float*>(bytes);
      if (!in_place) {
        widened.resize(static_cast<size_t>(count * cols));
        if (layout.type == QuantType::kF32) {  // a misaligned mapping: copied
          std::memcpy(widened.data(), bytes, static_cast<size_t>(count * cols * element));
        } else if (layout.type == QuantType::kF16) {
          vec::HalfToFloat(reinterpret_cast<const uint16_t*>(bytes), widened.data(), count * cols);
        } else {
          vec::Bfloat16ToFloat(reinterpret_cast<const uint16_t*>(bytes), widened.data(), count * cols);
        }
        w = widened.data();
      }
      cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, static_cast<int>(n), static_cast<int>(count),
                  static_cast<int>(cols), 1.0f, x, static_cast<int>(cols), w, static_cast<int>(cols), 0.0f,
                  y + first, static_cast<int>(rows));
    }
  });
  if (openblas_set_num_threads != nullptr && previous > 0) openblas_set_num_threads(previous);
  return true;
}

#else

bool HaveBlas() { return false; }

bool BlasFloatMatMul(const PackedMatrix&, const float*, int64_t, float*, ThreadPool&) { return false; }

#endif

}  // namespace atq
