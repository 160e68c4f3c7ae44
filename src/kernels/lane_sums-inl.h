// Lane reductions shared by the Highway kernels (matmul.cc, float_ops.cc, conv2d.cc). Included once per target by each file's
// foreach_target pass, hence the toggling guard Highway's -inl headers use.
#if defined(ATQ_KERNELS_LANE_SUMS_INL_H_) == defined(HWY_TARGET_TOGGLE)
#ifdef ATQ_KERNELS_LANE_SUMS_INL_H_
#undef ATQ_KERNELS_LANE_SUMS_INL_H_
#else
#define ATQ_KERNELS_LANE_SUMS_INL_H_
#endif

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>

#include <hwy/highway.h>

HWY_BEFORE_NAMESPACE();
namespace atq {
namespace HWY_NAMESPACE {
namespace hn = hwy::HWY_NAMESPACE;

#if HWY_TARGET != HWY_SCALAR && !HWY_HAVE_SCALABLE
// sums[i] = the sum of the lanes of v[i], i < 4: two rounds of interleaving add the four vectors lane-wise into
// one whose every 128-bit block holds a partial sum of each, then the blocks are added (instead of four separate
// lane reductions, which for a short row cost as much as its products).
template <class DF>
HWY_INLINE void SumsOfFour(DF df, const hn::Vec<DF>* v, float* sums) {
  const hn::Repartition<double, DF> d64;  // 64-bit lanes to interleave pairs of floats
  const auto ab = hn::Add(hn::InterleaveLower(df, v[0], v[1]), hn::InterleaveUpper(df, v[0], v[1]));
  const auto cd = hn::Add(hn::InterleaveLower(df, v[2], v[3]), hn::InterleaveUpper(df, v[2], v[3]));
  const auto abcd = hn::Add(hn::BitCast(df, hn::InterleaveLower(d64, hn::BitCast(d64, ab), hn::BitCast(d64, cd))),
                            hn::BitCast(df, hn::InterleaveUpper(d64, hn::BitCast(d64, ab), hn::BitCast(d64, cd))));
  alignas(64) float blocks[hn::MaxLanes(df)];
  hn::Store(abcd, df, blocks);
  for (int i = 0; i < 4; ++i) sums[i] = blocks[i];
  for (size_t b = 4; b < hn::Lanes(df); b += 4) {
    for (int i = 0; i < 4; ++i) sums[i] += blocks[b + i];
  }
}
#else
template <class DF>
HWY_INLINE void SumsOfFour(DF df, const hn::Vec<DF>* v, float* sums) {
  for (int i = 0; i < 4; ++i) sums[i] = hn::GetLane(hn::SumOfLanes(df, v[i]));
}
#endif

// The largest |x[i]| of n values, and in *finite whether every one of them is finite: the first pass of the int8
// quantizers (activation rows, image patches), which refuse what is not finite and scale by the largest.
template <class DF>
HWY_INLINE float MaxAbsIfFinite(DF df, const float* x, int64_t n, bool* finite) {
  const int64_t lanes = static_cast<int64_t>(hn::Lanes(df));
  auto max_abs = hn::Zero(df);
  auto ok = hn::FirstN(df, static_cast<size_t>(lanes));
  int64_t i = 0;
  for (; i + lanes <= n; i += lanes) {
    const auto v = hn::LoadU(df, x + i);
    ok = hn::And(ok, hn::IsFinite(v));
    max_abs = hn::Max(max_abs, hn::Abs(v));
  }
  float largest = hn::GetLane(hn::MaxOfLanes(df, max_abs));
  bool all = hn::AllTrue(df, ok);
  for (; i < n; ++i) {
    all = all && std::isfinite(x[i]);
    largest = std::max(largest, std::fabs(x[i]));
  }
  *finite = all;
  return largest;
}

}  // namespace HWY_NAMESPACE
}  // namespace atq
HWY_AFTER_NAMESPACE();

#endif  // ATQ_KERNELS_LANE_SUMS_INL_H_
