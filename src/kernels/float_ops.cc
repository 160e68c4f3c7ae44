// The float vector operations, compiled for every Highway target and dispatched at run time.
#include "kernels/float_ops.h"

#include <algorithm>
#include <cmath>

#undef HWY_TARGET_INCLUDE
#define HWY_TARGET_INCLUDE "kernels/float_ops.cc"
#include <hwy/foreach_target.h>  // IWYU pragma: keep
#include <hwy/highway.h>
#include <hwy/contrib/math/math-inl.h>

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

}  // namespace HWY_NAMESPACE
}  // namespace atq::vec
HWY_AFTER_NAMESPACE();

#if HWY_ONCE
namespace atq::vec {

HWY_EXPORT(DotTarget);
HWY_EXPORT(AddScaledTarget);
HWY_EXPORT(AddTarget);
HWY_EXPORT(RmsNormTarget);
HWY_EXPORT(LayerNormTarget);
HWY_EXPORT(ExpShiftedTarget);
HWY_EXPORT(SoftcapTarget);
HWY_EXPORT(SiluGateTarget);
HWY_EXPORT(GeluTanhGateTarget);
HWY_EXPORT(SiluTarget);
HWY_EXPORT(GeluTanhTarget);

float Dot(const float* a, const float* b, int64_t n) { return HWY_DYNAMIC_DISPATCH(DotTarget)(a, b, n); }
void AddScaled(float a, const float* x, float* y, int64_t n) { HWY_DYNAMIC_DISPATCH(AddScaledTarget)(a, x, y, n); }
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

}  // namespace atq::vec
#endif  // HWY_ONCE
