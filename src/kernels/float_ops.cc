// The float vector operations, compiled for every Highway target and dispatched at run time.
#include "kernels/float_ops.h"

#include <algorithm>
#include <cmath>
#include <type_traits>

#include "formats/half.h"
#include "util/error.h"

#undef HWY_TARGET_INCLUDE
#define HWY_TARGET_INCLUDE "kernels/float_ops.cc"
#include <hwy/foreach_target.h>  // IWYU pragma: keep
#include <hwy/highway.h>
#include <hwy/contrib/math/math-inl.h>

#include "kernels/lane_sums-inl.h"

HWY_BEFORE_NAMESPACE();
namespace atq::vec {
namespace HWY_NAMESPACE {
namespace hn = hwy::HWY_NAMESPACE;

using D = hn::ScalableTag<float>;

// Applies `vector` to whole vectors of x (and y) and `scalar` to the tail, element by element.
template <class VectorOp, class ScalarOp>
HWY_INLINE void ForEach(int64_t n, const VectorOp& vector, const ScalarOp& scalar) {
  const D d;
  const int64_t lanes = static_cast<int64_t>(hn::Lanes(d));
  int64_t i = 0;
  for (; i + lanes <= n; i += lanes) vector(d, i);
  for (; i < n; ++i) scalar(i);
}

float DotTarget(const float* a, const float* b, int64_t n) {
  const D d;
  const int64_t lanes = static_cast<int64_t>(hn::Lanes(d));
  // Two accumulators: the multiply-adds of one would wait on each other's latency.
  auto sum0 = hn::Zero(d), sum1 = hn::Zero(d);
  int64_t i = 0;
  for (; i + 2 * lanes <= n; i += 2 * lanes) {
    sum0 = hn::MulAdd(hn::LoadU(d, a + i), hn::LoadU(d, b + i), sum0);
    sum1 = hn::MulAdd(hn::LoadU(d, a + i + lanes), hn::LoadU(d, b + i + lanes), sum1);
  }
  for (; i + lanes <= n; i += lanes) sum0 = hn::MulAdd(hn::LoadU(d, a + i), hn::LoadU(d, b + i), sum0);
  float sum = hn::GetLane(hn::SumOfLanes(d, hn::Add(sum0, sum1)));
  for (; i < n; ++i) sum += a[i] * b[i];
  return sum;
}

void AddScaledTarget(float a, const float* x, float* y, int64_t n) {
  ForEach(
      n,
      [&](D d, int64_t i) { hn::StoreU(hn::MulAdd(hn::Set(d, a), hn::LoadU(d, x + i), hn::LoadU(d, y + i)), d, y + i); },
      [&](int64_t i) { y[i] += a * x[i]; });
}

// R query rows against `count` keys; with one row, four keys at a time so that the lane sums go four at once.
template <int R>
void ScoreRowsOf(const float* q, int64_t q_stride, const float* keys, int64_t key_stride, int64_t count, int64_t dim,
                 float scale, float* scores, int64_t score_stride) {
  const D d;
  const int64_t lanes = static_cast<int64_t>(hn::Lanes(d)), whole = dim - dim % lanes;
  constexpr int kKeys = R == 1 ? 4 : 1;  // keys per step
  constexpr int kSums = R * kKeys;
  int64_t j = 0;
  const auto step = [&](auto keys_per_step) {
    constexpr int K = decltype(keys_per_step)::value;
    hn::Vec<D> acc[R * K];
    for (int a = 0; a < R * K; ++a) acc[a] = hn::Zero(d);
    for (int64_t e = 0; e < whole; e += lanes) {
      for (int k = 0; k < K; ++k) {
        const auto key = hn::LoadU(d, keys + (j + k) * key_stride + e);
        for (int i = 0; i < R; ++i) acc[i * K + k] = hn::MulAdd(hn::LoadU(d, q + i * q_stride + e), key, acc[i * K + k]);
      }
    }
    float sums[4];
    if constexpr (R * K == 4) {
      atq::HWY_NAMESPACE::SumsOfFour(d, acc, sums);
    } else {
      for (int a = 0; a < R * K; ++a) sums[a] = hn::GetLane(hn::SumOfLanes(d, acc[a]));
    }
    for (int i = 0; i < R; ++i) {
      for (int k = 0; k < K; ++k) {
        float sum = sums[i * K + k];
        const float* key = keys + (j + k) * key_stride;
        for (int64_t e = whole; e < dim; ++e) sum += q[i * q_stride + e] * key[e];
        scores[i * score_stride + j + k] = sum * scale;
      }
    }
  };
  static_assert(kSums <= 4, "a step's sums fit SumsOfFour");
  for (; j + kKeys <= count; j += kKeys) step(std::integral_constant<int, kKeys>());
  for (; j < count; ++j) step(std::integral_constant<int, 1>());
}

void ScoreRowsTarget(const float* q, int64_t q_stride, int64_t rows, const float* keys, int64_t key_stride,
                     int64_t count, int64_t dim, float scale, float* scores, int64_t score_stride) {
  switch (rows) {
    case 1: return ScoreRowsOf<1>(q, q_stride, keys, key_stride, count, dim, scale, scores, score_stride);
    case 2: return ScoreRowsOf<2>(q, q_stride, keys, key_stride, count, dim, scale, scores, score_stride);
    case 3: return ScoreRowsOf<3>(q, q_stride, keys, key_stride, count, dim, scale, scores, score_stride);
    case 4: return ScoreRowsOf<4>(q, q_stride, keys, key_stride, count, dim, scale, scores, score_stride);
    default: break;
  }
}

// R output rows, up to 4 vectors of each at a time held in registers over every value row, which is loaded once
// for the R.
template <int R>
void WeightedRowsOf(const float* p, int64_t p_stride, const float* values, int64_t value_stride, int64_t count,
                    int64_t dim, float* out, int64_t out_stride) {
  const D d;
  const int64_t lanes = static_cast<int64_t>(hn::Lanes(d)), whole = dim - dim % lanes;
  // 4 rows x 4 vectors of accumulators take 16 of AVX-512's 32 registers; with 16 registers, 2 vectors.
  constexpr int kVectors = hn::MaxLanes(D()) >= 16 ? 4 : 2;
  int64_t e = 0;
  const auto columns = [&](auto vectors) {
    constexpr int V = decltype(vectors)::value;
    hn::Vec<D> acc[R][V];
    for (int i = 0; i < R; ++i) {
      for (int c = 0; c < V; ++c) acc[i][c] = hn::Zero(d);
    }
    for (int64_t j = 0; j < count; ++j) {
      hn::Vec<D> value[V];
      for (int c = 0; c < V; ++c) value[c] = hn::LoadU(d, values + j * value_stride + e + c * lanes);
      for (int i = 0; i < R; ++i) {
        const auto weight = hn::Set(d, p[i * p_stride + j]);
        for (int c = 0; c < V; ++c) acc[i][c] = hn::MulAdd(weight, value[c], acc[i][c]);
      }
    }
    for (int i = 0; i < R; ++i) {
      for (int c = 0; c < V; ++c) hn::StoreU(acc[i][c], d, out + i * out_stride + e + c * lanes);
    }
    e += V * lanes;
  };
  while (e + kVectors * lanes <= whole) columns(std::integral_constant<int, kVectors>());
  while (e < whole) columns(std::integral_constant<int, 1>());
  for (; e < dim; ++e) {
    for (int i = 0; i < R; ++i) {
      float sum = 0.0f;
      for (int64_t j = 0; j < count; ++j) sum += p[i * p_stride + j] * values[j * value_stride + e];
      out[i * out_stride + e] = sum;
    }
  }
}

void WeightedRowsTarget(const float* p, int64_t p_stride, int64_t rows, const float* values, int64_t value_stride,
                        int64_t count, int64_t dim, float* out, int64_t out_stride) {
  switch (rows) {
    case 1: return WeightedRowsOf<1>(p, p_stride, values, value_stride, count, dim, out, out_stride);
    case 2: return WeightedRowsOf<2>(p, p_stride, values, value_stride, count, dim, out, out_stride);
    case 3: return WeightedRowsOf<3>(p, p_stride, values, value_stride, count, dim, out, out_stride);
    case 4: return WeightedRowsOf<4>(p, p_stride, values, value_stride, count, dim, out, out_stride);
    default: break;
  }
}

void AddTarget(const float* x, float* y, int64_t n) {
  ForEach(
      n, [&](D d, int64_t i) { hn::StoreU(hn::Add(hn::LoadU(d, x + i), hn::LoadU(d, y + i)), d, y + i); },
      [&](int64_t i) { y[i] += x[i]; });
}

void RmsNormTarget(const float* x, const float* scale, int64_t n, float eps, float* y) {
  const float inverse = 1.0f / std::sqrt(DotTarget(x, x, n) / static_cast<float>(n) + eps);
  ForEach(
      n,
      [&](D d, int64_t i) {
        hn::StoreU(hn::Mul(hn::Mul(hn::LoadU(d, x + i), hn::Set(d, inverse)), hn::LoadU(d, scale + i)), d, y + i);
      },
      [&](int64_t i) { y[i] = x[i] * inverse * scale[i]; });
}

void LayerNormTarget(const float* x, const float* scale, const float* bias, int64_t n, float eps, float* y) {
  auto sum = hn::Zero(D());
  float tail = 0;
  ForEach(n, [&](D d, int64_t i) { sum = hn::Add(sum, hn::LoadU(d, x + i)); }, [&](int64_t i) { tail += x[i]; });
  const float mean = (hn::GetLane(hn::SumOfLanes(D(), sum)) + tail) / static_cast<float>(n);
  // The variance from the centred values (not E[x^2] - mean^2, which cancels badly for rows far from zero mean).
  auto squares = hn::Zero(D());
  tail = 0;
  ForEach(
      n,
      [&](D d, int64_t i) {
        const auto centred = hn::Sub(hn::LoadU(d, x + i), hn::Set(d, mean));
        squares = hn::MulAdd(centred, centred, squares);
      },
      [&](int64_t i) { tail += (x[i] - mean) * (x[i] - mean); });
  const float variance = (hn::GetLane(hn::SumOfLanes(D(), squares)) + tail) / static_cast<float>(n);
  const float inverse = 1.0f / std::sqrt(variance + eps);
  ForEach(
      n,
      [&](D d, int64_t i) {
        const auto normed = hn::Mul(hn::Mul(hn::Sub(hn::LoadU(d, x + i), hn::Set(d, mean)), hn::Set(d, inverse)),
                                    hn::LoadU(d, scale + i));
        hn::StoreU(bias != nullptr ? hn::Add(normed, hn::LoadU(d, bias + i)) : normed, d, y + i);
      },
      [&](int64_t i) { y[i] = (x[i] - mean) * inverse * scale[i] + (bias != nullptr ? bias[i] : 0.0f); });
}

float ExpShiftedTarget(float* x, int64_t n, float shift) {
  auto sum = hn::Zero(D());
  float tail = 0;
  ForEach(
      n,
      [&](D d, int64_t i) {
        const auto e = hn::Exp(d, hn::Sub(hn::LoadU(d, x + i), hn::Set(d, shift)));
        hn::StoreU(e, d, x + i);
        sum = hn::Add(sum, e);
      },
      [&](int64_t i) { tail += (x[i] = std::exp(x[i] - shift)); });
  return hn::GetLane(hn::SumOfLanes(D(), sum)) + tail;
}

void SoftcapTarget(float* x, int64_t n, float cap) {
  ForEach(
      n,
      [&](D d, int64_t i) {
        const auto c = hn::Set(d, cap);
        hn::StoreU(hn::Mul(hn::Tanh(d, hn::Div(hn::LoadU(d, x + i), c)), c), d, x + i);
      },
      [&](int64_t i) { x[i] = std::tanh(x[i] / cap) * cap; });
}

// exp(-g) overflows float32 below g = -88.7 (inf, and g / inf is 0 only by luck of the order); clamped at 88 it
// gives silu(g) = g / 1.7e38, under 1e-35 for any g a model holds.
constexpr float kExpLimit = 88.0f;

template <class V>
HWY_INLINE V SiluOf(D d, V g) {
  return hn::Div(g, hn::Add(hn::Set(d, 1.0f), hn::Exp(d, hn::Min(hn::Neg(g), hn::Set(d, kExpLimit)))));
}
float SiluOf(float g) { return g / (1.0f + std::exp(std::min(-g, kExpLimit))); }

constexpr float kSqrt2OverPi = 0.7978845608028654f;

template <class V>
HWY_INLINE V GeluTanhOf(D d, V g) {
  const auto inner = hn::Mul(hn::Set(d, kSqrt2OverPi), hn::MulAdd(hn::Mul(hn::Set(d, 0.044715f), hn::Mul(g, g)), g, g));
  return hn::Mul(hn::Mul(hn::Set(d, 0.5f), g), hn::Add(hn::Set(d, 1.0f), hn::Tanh(d, inner)));
}
float GeluTanhOf(float g) { return 0.5f * g * (1.0f + std::tanh(kSqrt2OverPi * (g + 0.044715f * g * g * g))); }

void SiluGateTarget(float* gate, const float* up, int64_t n) {
  ForEach(
      n,
      [&](D d, int64_t i) { hn::StoreU(hn::Mul(SiluOf(d, hn::LoadU(d, gate + i)), hn::LoadU(d, up + i)), d, gate + i); },
      [&](int64_t i) { gate[i] = SiluOf(gate[i]) * up[i]; });
}

void GeluTanhGateTarget(float* gate, const float* up, int64_t n) {
  ForEach(
      n,
      [&](D d, int64_t i) {
        hn::StoreU(hn::Mul(GeluTanhOf(d, hn::LoadU(d, gate + i)), hn::LoadU(d, up + i)), d, gate + i);
      },
      [&](int64_t i) { gate[i] = GeluTanhOf(gate[i]) * up[i]; });
}

void SiluTarget(float* x, int64_t n) {
  ForEach(
      n, [&](D d, int64_t i) { hn::StoreU(SiluOf(d, hn::LoadU(d, x + i)), d, x + i); },
      [&](int64_t i) { x[i] = SiluOf(x[i]); });
}

void GeluTanhTarget(float* x, int64_t n) {
  ForEach(
      n, [&](D d, int64_t i) { hn::StoreU(GeluTanhOf(d, hn::LoadU(d, x + i)), d, x + i); },
      [&](int64_t i) { x[i] = GeluTanhOf(x[i]); });
}

// IEEE half or bfloat16 bit patterns widened to float32 (exact both ways); `scalar` converts the tail.
template <class Narrow>
void Widen(const uint16_t* x, float* y, int64_t n, float (*scalar)(uint16_t)) {
  const hn::Rebind<Narrow, D> dn;
  const auto* narrow = reinterpret_cast<const Narrow*>(x);
  ForEach(
      n, [&](D d, int64_t i) { hn::StoreU(hn::PromoteTo(d, hn::LoadU(dn, narrow + i)), d, y + i); },
      [&](int64_t i) { y[i] = scalar(x[i]); });
}

void HalfToFloatTarget(const uint16_t* x, float* y, int64_t n) { Widen<hwy::float16_t>(x, y, n, F16ToF32); }
void Bfloat16ToFloatTarget(const uint16_t* x, float* y, int64_t n) { Widen<hwy::bfloat16_t>(x, y, n, BF16ToF32); }

}  // namespace HWY_NAMESPACE
}  // namespace atq::vec
HWY_AFTER_NAMESPACE();

#if HWY_ONCE
namespace atq::vec {

HWY_EXPORT(DotTarget);
HWY_EXPORT(AddScaledTarget);
HWY_EXPORT(ScoreRowsTarget);
HWY_EXPORT(WeightedRowsTarget);
HWY_EXPORT(AddTarget);
HWY_EXPORT(RmsNormTarget);
HWY_EXPORT(LayerNormTarget);
HWY_EXPORT(ExpShiftedTarget);
HWY_EXPORT(SoftcapTarget);
HWY_EXPORT(SiluGateTarget);
HWY_EXPORT(GeluTanhGateTarget);
HWY_EXPORT(SiluTarget);
HWY_EXPORT(GeluTanhTarget);
HWY_EXPORT(HalfToFloatTarget);
HWY_EXPORT(Bfloat16ToFloatTarget);

float Dot(const float* a, const float* b, int64_t n) { return HWY_DYNAMIC_DISPATCH(DotTarget)(a, b, n); }
void AddScaled(float a, const float* x, float* y, int64_t n) { HWY_DYNAMIC_DISPATCH(AddScaledTarget)(a, x, y, n); }
void ScoreRows(const float* q, int64_t q_stride, int64_t rows, const float* keys, int64_t key_stride, int64_t count,
               int64_t dim, float scale, float* scores, int64_t score_stride) {
  Require(rows >= 1 && rows <= 4, "ScoreRows: {} query rows (1 to 4)", rows);
  HWY_DYNAMIC_DISPATCH(ScoreRowsTarget)(q, q_stride, rows, keys, key_stride, count, dim, scale, scores, score_stride);
}
void WeightedRows(const float* p, int64_t p_stride, int64_t rows, const float* values, int64_t value_stride,
                  int64_t count, int64_t dim, float* out, int64_t out_stride) {
  Require(rows >= 1 && rows <= 4, "WeightedRows: {} rows (1 to 4)", rows);
  HWY_DYNAMIC_DISPATCH(WeightedRowsTarget)(p, p_stride, rows, values, value_stride, count, dim, out, out_stride);
}
void Add(const float* x, float* y, int64_t n) { HWY_DYNAMIC_DISPATCH(AddTarget)(x, y, n); }
void RmsNorm(const float* x, const float* scale, int64_t n, float eps, float* y) {
  HWY_DYNAMIC_DISPATCH(RmsNormTarget)(x, scale, n, eps, y);
}
void LayerNorm(const float* x, const float* scale, const float* bias, int64_t n, float eps, float* y) {
  HWY_DYNAMIC_DISPATCH(LayerNormTarget)(x, scale, bias, n, eps, y);
}
float ExpShifted(float* x, int64_t n, float shift) { return HWY_DYNAMIC_DISPATCH(ExpShiftedTarget)(x, n, shift); }
void Softcap(float* x, int64_t n, float cap) { HWY_DYNAMIC_DISPATCH(SoftcapTarget)(x, n, cap); }
void SiluGate(float* gate, const float* up, int64_t n) { HWY_DYNAMIC_DISPATCH(SiluGateTarget)(gate, up, n); }
void GeluTanhGate(float* gate, const float* up, int64_t n) { HWY_DYNAMIC_DISPATCH(GeluTanhGateTarget)(gate, up, n); }
void Silu(float* x, int64_t n) { HWY_DYNAMIC_DISPATCH(SiluTarget)(x, n); }
void GeluTanh(float* x, int64_t n) { HWY_DYNAMIC_DISPATCH(GeluTanhTarget)(x, n); }
void HalfToFloat(const uint16_t* x, float* y, int64_t n) { HWY_DYNAMIC_DISPATCH(HalfToFloatTarget)(x, y, n); }
void Bfloat16ToFloat(const uint16_t* x, float* y, int64_t n) { HWY_DYNAMIC_DISPATCH(Bfloat16ToFloatTarget)(x, y, n); }

}  // namespace atq::vec
#endif  // HWY_ONCE
