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
// OpenBLAS's thread count, where the BLAS is OpenBLAS (weak: another BLAS leaves it null and keeps its own).
extern "C" void openblas_set_num_threads(int threads) __attribute__((weak));
#endif

namespace atq {

#ifdef ATQ_WITH_BLAS

bool HaveBlas() { return true; }

bool BlasFloatMatMul(const PackedMatrix& weights, const float* x, int64_t n, float* y, int threads) {
  const Layout& layout = weights.layout;
  if (!IsFloatWeight(layout.type) || n <= 0 || layout.rows <= 0 || layout.cols <= 0) return false;
  if (openblas_set_num_threads != nullptr) openblas_set_num_threads(std::max(1, threads));
  const int64_t rows = layout.rows, cols = layout.cols;
  const auto product = [&](const float* w, int64_t first, int64_t count) {
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, static_cast<int>(n), static_cast<int>(count),
                static_cast<int>(cols), 1.0f, x, static_cast<int>(cols), w, static_cast<int>(cols), 0.0f, y + first,
                static_cast<int>(rows));
  };
  const bool aligned_f32 =
      layout.type == QuantType::kF32 && reinterpret_cast<uintptr_t>(weights.data) % alignof(float) == 0;
  if (aligned_f32) {
    product(reinterpret_cast<const float*>(weights.data), 0, rows);
    return true;
  }
  // Slabs of about 4 MB of float32: in cache while sgemm runs over them, and no float copy of the whole matrix.
  constexpr int64_t kSlabFloats = int64_t{1} << 20;
  const int64_t slab = std::clamp<int64_t>(kSlabFloats / cols, 16, rows);
  // Kept per thread between calls: a fresh buffer each product cost its page faults again (glibc trims it).
  thread_local std::vector<float> widened;
  widened.resize(static_cast<size_t>(slab * cols));
  const int64_t element = layout.type == QuantType::kF32 ? 4 : 2;
  for (int64_t first = 0; first < rows; first += slab) {
    const int64_t count = std::min(slab, rows - first);
    const uint8_t* bytes = weights.data + first * cols * element;
    if (layout.type == QuantType::kF32) {  // a misaligned mapping: copied
      std::memcpy(widened.data(), bytes, static_cast<size_t>(count * cols * element));
    } else if (layout.type == QuantType::kF16) {
      vec::HalfToFloat(reinterpret_cast<const uint16_t*>(bytes), widened.data(), count * cols);
    } else {
      vec::Bfloat16ToFloat(reinterpret_cast<const uint16_t*>(bytes), widened.data(), count * cols);
    }
    product(widened.data(), first, count);
  }
  return true;
}

#else

bool HaveBlas() { return false; }

bool BlasFloatMatMul(const PackedMatrix&, const float*, int64_t, float*, int) { return false; }

#endif

}  // namespace atq
