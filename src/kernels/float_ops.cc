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

void SiluGateTarget(float* gate, const float* up, int64_t n) {
  ForEach(
      n,
      [&](D d, int64_t i) {
        const auto g = hn::LoadU(d, gate + i);
        const auto e = hn::Exp(d, hn::Min(hn::Neg(g), hn::Set(d, kExpLimit)));
        hn::StoreU(hn::Mul(hn::Div(g, hn::Add(hn::Set(d, 1.0f), e)), hn::LoadU(d, up + i)), d, gate + i);
      },
      [&](int64_t i) { gate[i] = gate[i] / (1.0f + std::exp(std::min(-gate[i], kExpLimit))) * up[i]; });
}

constexpr float kSqrt2OverPi = 0.7978845608028654f;

void GeluTanhGateTarget(float* gate, const float* up, int64_t n) {
  ForEach(
      n,
      [&](D d, int64_t i) {
        const auto g = hn::LoadU(d, gate + i);
        const auto inner = hn::Mul(hn::Set(d, kSqrt2OverPi),
                                   hn::MulAdd(hn::Mul(hn::Set(d, 0.044715f), hn::Mul(g, g)), g, g));
        const auto t = hn::Tanh(d, inner);
        const auto gelu = hn::Mul(hn::Mul(hn::Set(d, 0.5f), g), hn::Add(hn::Set(d, 1.0f), t));
        hn::StoreU(hn::Mul(gelu, hn::LoadU(d, up + i)), d, gate + i);
      },
      [&](int64_t i) {
        const float g = gate[i];
        gate[i] = 0.5f * g * (1.0f + std::tanh(kSqrt2OverPi * (g + 0.044715f * g * g * g))) * up[i];
      });
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
HWY_EXPORT(ExpShiftedTarget);
HWY_EXPORT(SoftcapTarget);
HWY_EXPORT(SiluGateTarget);
HWY_EXPORT(GeluTanhGateTarget);

float Dot(const float* a, const float* b, int64_t n) { return HWY_DYNAMIC_DISPATCH(DotTarget)(a, b, n); }
void AddScaled(float a, const float* x, float* y, int64_t n) { HWY_DYNAMIC_DISPATCH(AddScaledTarget)(a, x, y, n); }
void Add(const float* x, float* y, int64_t n) { HWY_DYNAMIC_DISPATCH(AddTarget)(x, y, n); }
void RmsNorm(const float* x, const float* scale, int64_t n, float eps, float* y) {
  HWY_DYNAMIC_DISPATCH(RmsNormTarget)(x, scale, n, eps, y);
}
float ExpShifted(float* x, int64_t n, float shift) { return HWY_DYNAMIC_DISPATCH(ExpShiftedTarget)(x, n, shift); }
void Softcap(float* x, int64_t n, float cap) { HWY_DYNAMIC_DISPATCH(SoftcapTarget)(x, n, cap); }
void SiluGate(float* gate, const float* up, int64_t n) { HWY_DYNAMIC_DISPATCH(SiluGateTarget)(gate, up, n); }
void GeluTanhGate(float* gate, const float* up, int64_t n) { HWY_DYNAMIC_DISPATCH(GeluTanhGateTarget)(gate, up, n); }

}  // namespace atq::vec
#endif  // HWY_ONCE
