// The SIMD kernels behind MatMul, compiled for every Highway target and picked at run time; matmul_ref.cc holds
// the arithmetic they reproduce. Fast paths by layout, one row each in kCpuKernels (the CPU backend's table):
//   - 2-bit ternary (atq ternary2, TQ2_0): codes decoded in registers (shift, mask) and multiplied with
//     activations permuted once per call into the order the shifts produce, up to 4 activation rows per pass;
//   - Q8_0 and Q4_0 with their rows interleaved 8 at a time (kernels/interleaved.h; 256-bit x86 targets): 8 rows'
//     integer sums in the 8 lanes of one vector, their scales applied as one vector;
//   - Q8_0 and Q4_0 otherwise: one 32-weight block at a time, weights as signed int8;
//   - TQ1_0: base-3 digits decoded in 8-bit registers and multiplied in place (256-bit targets); on narrower
//     ones each row's digits decoded in 16-bit vectors, then the generic integer dot;
//   - t1.6: up to 4 activation rows, each byte turned into TQ1_0's fixed point and decoded as TQ1_0 is, against
//     activations permuted once per call (256-bit targets, segments of whole 160-weight chunks); otherwise each
//     row's codes by a table of the 243 byte values, then the generic integer dot;
//   - f32, f16, bf16: float multiply-add;
//   - every other type: a row decoded to codes (RowDecoder) once, then the generic integer dot.
// On AVX-512 VNNI the integer products are vpdpbusd; elsewhere widening 16-bit multiply-adds.

#include <algorithm>
#include <atomic>
#include <cstddef>
#include <cstring>
#include <type_traits>
#include <vector>

#include "formats/atq_packed.h"
#include "formats/ggml_blocks.h"
#include "formats/half.h"
#include "kernels/blas_float.h"
#include "kernels/int8_activations.h"
#include "kernels/interleaved.h"
#include "kernels/matmul.h"

#undef HWY_TARGET_INCLUDE
#define HWY_TARGET_INCLUDE "kernels/matmul.cc"
#include <hwy/foreach_target.h>  // IWYU pragma: keep
#include <hwy/cache_control.h>
#include <hwy/highway.h>

#include "kernels/lane_sums-inl.h"

HWY_BEFORE_NAMESPACE();
namespace atq {
namespace HWY_NAMESPACE {
namespace hn = hwy::HWY_NAMESPACE;

constexpr int kMaxRowsPerPass = 4;  // activation rows sharing one decode of the weights
// Activation values a task of the per-row steps before a product (quantizing, reordering) gets at least.
constexpr int64_t kMinRowTaskValues = int64_t{1} << 16;

#if HWY_TARGET == HWY_SCALAR || HWY_HAVE_SCALABLE
// Single-lane and sizeless-vector targets take the reference arithmetic.
void MatMulTarget(const PackedMatrix& weights, const float* x, int64_t n, float* y, ThreadPool&) {
  MatMulReference(weights, x, n, y);
}
void MatMulQuantizedTarget(const PackedMatrix& weights, const Int8Activations& x, float* y, ThreadPool&) {
  MatMulQuantizedReference(weights, x, y);
}
#else

// acc (int32 lanes) += products of unsigned codes and signed activations, summed in groups of 4 lanes.
template <class D, class V32>
HWY_INLINE V32 DotUnsigned(D d8, V32 acc, hn::Vec<D> codes, hn::Vec<hn::Repartition<int8_t, D>> q) {
#if HWY_TARGET == HWY_AVX3_DL
  // vpdpbusd written out: its intrinsic needs an avx512vnni target attribute that Highway 1.0's target string
  // lacks (it names AVX-VNNI, the VEX form Zen 4 does not have), and the {evex} prefix keeps the assembler from
  // choosing that VEX form for 256/128-bit vectors.
  (void)d8;
  auto raw = acc.raw;
  asm("%{evex%} vpdpbusd %2, %1, %0" : "+v"(raw) : "v"(codes.raw), "v"(q.raw));
  return V32{raw};
#else
  const hn::Repartition<int16_t, D> d16;
  const hn::Repartition<int32_t, D> d32;
  const hn::Half<D> half8;
  const hn::Half<hn::Repartition<int8_t, D>> half_i8;
  auto extra = hn::Zero(d32);
  acc = hn::ReorderWidenMulAccumulate(d32, hn::PromoteTo(d16, hn::LowerHalf(half8, codes)),
                                      hn::PromoteTo(d16, hn::LowerHalf(half_i8, q)), acc, extra);
  acc = hn::ReorderWidenMulAccumulate(d32, hn::PromoteTo(d16, hn::UpperHalf(half8, codes)),
                                      hn::PromoteTo(d16, hn::UpperHalf(half_i8, q)), acc, extra);
  return hn::Add(acc, extra);
#endif
}

// acc += products of two signed int8 vectors (|w| * (q with w's sign), as VNNI wants one operand unsigned).
template <class DI, class V32>
HWY_INLINE V32 DotSigned(DI di8, V32 acc, hn::Vec<DI> w, hn::Vec<DI> q) {
  const hn::RebindToUnsigned<DI> du8;
  const auto negative = hn::Lt(w, hn::Zero(di8));
  const auto signed_q = hn::IfThenElse(negative, hn::Neg(q), q);
  const auto magnitude = hn::BitCast(du8, hn::IfThenElse(negative, hn::Neg(w), w));
  return DotUnsigned(du8, acc, magnitude, signed_q);
}

template <class D>
HWY_INLINE int32_t DotCodesWith(D d8, const uint8_t* codes, const int8_t* q, int64_t& j, int64_t end) {
  const hn::Repartition<int8_t, D> di8;
  const hn::Repartition<int32_t, D> d32;
  const int64_t lanes = static_cast<int64_t>(hn::Lanes(d8));
  if (j + lanes > end) return 0;
  auto acc = hn::Zero(d32);
  for (; j + lanes <= end; j += lanes) acc = DotUnsigned(d8, acc, hn::LoadU(d8, codes + j), hn::LoadU(di8, q + j));
  return hn::GetLane(hn::SumOfLanes(d32, acc));
}

// sum_j codes[j] * q[j] over [0, length).
int32_t DotCodes(const uint8_t* codes, const int8_t* q, int64_t length) {
  int64_t j = 0;
  int32_t sum = DotCodesWith(hn::ScalableTag<uint8_t>(), codes, q, j, length);
  sum += DotCodesWith(hn::CappedTag<uint8_t, 32>(), codes, q, j, length);
  sum += DotCodesWith(hn::CappedTag<uint8_t, 16>(), codes, q, j, length);
  for (; j < length; ++j) sum += codes[j] * q[j];
  return sum;
}

// ---- generic quantized: a decoded row against every activation row ----

// sum_j codes[i][j] * q[m][j] over [0, length) for M activation rows and R decoded rows, as acc[m][i] (int32 lanes,
// whole vectors) plus tail[m][i] (the columns past them): each code vector loaded once for the M and each
// activation vector once for the R.
template <int M, int R, class V32>
HWY_INLINE void DotCodesTile(const uint8_t* const* codes, const int8_t* const* q, int64_t length, V32 (*acc)[R],
                             int32_t (*tail)[R]) {
  const hn::ScalableTag<uint8_t> d8;
  const hn::Repartition<int8_t, decltype(d8)> di8;
  const int64_t lanes = static_cast<int64_t>(hn::Lanes(d8));
  for (int m = 0; m < M; ++m) {
    for (int i = 0; i < R; ++i) acc[m][i] = hn::Zero(hn::DFromV<V32>());
  }
  int64_t j = 0;
  for (; j + lanes <= length; j += lanes) {
    hn::Vec<decltype(d8)> c[R];
    for (int i = 0; i < R; ++i) c[i] = hn::LoadU(d8, codes[i] + j);
    for (int m = 0; m < M; ++m) {
      const auto x = hn::LoadU(di8, q[m] + j);
      for (int i = 0; i < R; ++i) acc[m][i] = DotUnsigned(d8, acc[m][i], c[i], x);
    }
  }
  for (int m = 0; m < M; ++m) {
    for (int i = 0; i < R; ++i) tail[m][i] = j < length ? DotCodes(codes[i] + j, q[m] + j, length - j) : 0;
  }
}

// Output rows [begin, end), each row decoded once by decode(r, codes, scales, offsets), then multiplied with every
// activation row. Rows go in blocks of kCodeBlockRows whose codes stay in cache while every pass of up to 4
// activation rows goes over them (one row at a time streamed all the activations once per row), 4 decoded rows
// by 4 activation rows at a time where the 16 accumulators fit in the registers (AVX-512's 32).
template <class DecodeRow>
void CodeRows(const PackedMatrix& weights, const Int8Activations& acts, int64_t begin, int64_t end, float* y,
              const DecodeRow& decode) {
  constexpr int64_t kCodeBlockRows = 16;
  const int64_t rows = weights.layout.rows, cols = weights.layout.cols;
  // 8 bytes of slack: a decoder may write whole 8-byte words past the row's last code.
  const int64_t code_stride = acts.stride + 8;
  std::vector<uint8_t> codes(static_cast<size_t>(kCodeBlockRows * code_stride));
  std::vector<float> scales(static_cast<size_t>(kCodeBlockRows * acts.segments));
  std::vector<int32_t> offsets(static_cast<size_t>(kCodeBlockRows * acts.segments));
  // Activation rows first .. first + M - 1 against decoded rows i0 .. i0 + R - 1 of the block starting at row b.
  // Per segment the integer sums become float in their lanes (one convert and multiply-add per pair) and the
  // lanes are added once at the end: a horizontal sum per segment cost twice the products of a 256-weight one.
  auto tile = [&](auto m_rows, auto r_rows, int64_t first, int64_t b, int64_t i0) {
    constexpr int M = decltype(m_rows)::value, R = decltype(r_rows)::value;
    const hn::ScalableTag<int32_t> d32;
    const hn::Repartition<float, decltype(d32)> df;
    constexpr size_t kLanes = hn::MaxLanes(df);
    alignas(64) float total[M][R][kLanes];
    float correction[M][R];
    for (int m = 0; m < M; ++m) {
      for (int i = 0; i < R; ++i) hn::Store(hn::Zero(df), df, total[m][i]), correction[m][i] = 0.0f;
    }
    const uint8_t* c[R];
    const int8_t* q[M];
    for (int64_t s = 0; s < acts.segments; ++s) {
      const int64_t column = s * acts.segment;
      for (int i = 0; i < R; ++i) c[i] = codes.data() + (i0 + i) * code_stride + column;
      for (int m = 0; m < M; ++m) q[m] = acts.values.data() + (first + m) * acts.stride + column;
      hn::Vec<decltype(d32)> acc[M][R];
      int32_t tail[M][R];
      DotCodesTile<M, R>(c, q, std::min(acts.segment, cols - column), acc, tail);
      for (int m = 0; m < M; ++m) {
        const int64_t at = (first + m) * acts.segments + s;
        for (int i = 0; i < R; ++i) {
          const int64_t k = (i0 + i) * acts.segments + s;
          const float scale = scales[k] * acts.scales[at];
          hn::Store(hn::MulAdd(hn::ConvertTo(df, acc[m][i]), hn::Set(df, scale), hn::Load(df, total[m][i])), df,
                    total[m][i]);
          correction[m][i] += scale * static_cast<float>(tail[m][i] - offsets[k] * acts.sums[at]);
        }
      }
    }
    for (int m = 0; m < M; ++m) {
      float sums[R];
      if constexpr (R == 4) {
        const hn::Vec<decltype(df)> four[4] = {hn::Load(df, total[m][0]), hn::Load(df, total[m][1]),
                                               hn::Load(df, total[m][2]), hn::Load(df, total[m][3])};
        SumsOfFour(df, four, sums);
      } else {
        for (int i = 0; i < R; ++i) sums[i] = hn::GetLane(hn::SumOfLanes(df, hn::Load(df, total[m][i])));
      }
      for (int i = 0; i < R; ++i) y[(first + m) * rows + b + i0 + i] = sums[i] + correction[m][i];
    }
  };
  auto pass = [&](auto m_rows, int64_t first, int64_t b, int64_t count) {
    constexpr int M = decltype(m_rows)::value;
    constexpr int R = HWY_MAX_BYTES >= 64 ? 4 : 1;
    int64_t i = 0;
    for (; i + R <= count; i += R) tile(m_rows, std::integral_constant<int, R>(), first, b, i);
    for (; i < count; ++i) tile(m_rows, std::integral_constant<int, 1>(), first, b, i);
    (void)M;
  };
  for (int64_t b = begin; b < end; b += kCodeBlockRows) {
    const int64_t count = std::min(kCodeBlockRows, end - b);
    for (int64_t i = 0; i < count; ++i) {
      decode(b + i, codes.data() + i * code_stride, scales.data() + i * acts.segments,
             offsets.data() + i * acts.segments);
    }
    int64_t first = 0;
    for (; first + 4 <= acts.rows; first += 4) pass(std::integral_constant<int, 4>(), first, b, count);
    switch (acts.rows - first) {
      case 3: pass(std::integral_constant<int, 3>(), first, b, count); break;
      case 2: pass(std::integral_constant<int, 2>(), first, b, count); break;
      case 1: pass(std::integral_constant<int, 1>(), first, b, count); break;
      default: break;
    }
  }
}

// Every type: rows decoded by the table's plain decoder (formats/).
void GenericRows(const PackedMatrix& weights, const Int8Activations& acts, int64_t begin, int64_t end, float* y) {
  const RowDecoder decoder(weights);
  CodeRows(weights, acts, begin, end, y, [&](int64_t r, uint8_t* codes, float* scales, int32_t* offsets) {
    decoder.Decode(r, codes, scales, offsets);
  });
}

// ---- TQ1_0: base-3 digits decoded in vectors ----

// codes[k * count + m] = digit k of bytes[m] for k < digits, m < count, as TQ1_0 stores digits (ggml's fixed point:
// the top third of the byte times 3^k, dropping its high byte; formats/ggml_blocks.cc), in signed 16-bit lanes:
// 8-bit lanes have no multiply, and Highway demotes to bytes from signed lanes only.
template <class D16>
HWY_INLINE void FixedPointTrits(D16 d16, const uint8_t* bytes, int64_t count, int digits, uint8_t* codes) {
  static constexpr int16_t kPow3[5] = {1, 3, 9, 27, 81};  // products stay under 2^15
  const hn::Rebind<uint8_t, D16> d8;
  const int64_t lanes = static_cast<int64_t>(hn::Lanes(d16));
  int64_t m = 0;
  for (; m + lanes <= count; m += lanes) {
    const auto q = hn::PromoteTo(d16, hn::LoadU(d8, bytes + m));
    for (int k = 0; k < digits; ++k) {
      const auto low = hn::And(hn::Mul(q, hn::Set(d16, kPow3[k])), hn::Set(d16, 0xFF));
      hn::StoreU(hn::DemoteTo(d8, hn::ShiftRight<8>(hn::Mul(low, hn::Set(d16, 3)))), d8, codes + k * count + m);
    }
  }
  for (; m < count; ++m) {
    for (int k = 0; k < digits; ++k) {
      const uint8_t shifted = static_cast<uint8_t>(bytes[m] * kPow3[k]);
      codes[k * count + m] = static_cast<uint8_t>((shifted * 3) >> 8);
    }
  }
}

bool TQ1_0Applies(const PackedMatrix& weights) { return weights.layout.type == QuantType::kTQ1_0; }

// A TQ1_0 row's codes: per 256-weight block, weights 0-159 are the 5 digits of bytes 0-31 (digit-major), 160-239
// those of bytes 32-47, 240-255 the 4 digits of the 4 qh bytes; w = d * (code - 1).
void TQ1_0Rows(const PackedMatrix& weights, const Int8Activations& acts, int64_t begin, int64_t end, float* y) {
  constexpr int64_t kBlock = static_cast<int64_t>(sizeof(BlockTQ1_0));
  const int64_t blocks = weights.layout.cols / 256;
  const hn::CappedTag<int16_t, 32> wide;
  const hn::CappedTag<int16_t, 16> narrow;
  const hn::CappedTag<int16_t, 4> four;
  CodeRows(weights, acts, begin, end, y, [&](int64_t r, uint8_t* codes, float* scales, int32_t* offsets) {
    for (int64_t b = 0; b < blocks; ++b) {
      const uint8_t* block = weights.data + (r * blocks + b) * kBlock;
      uint8_t* out = codes + b * 256;
      FixedPointTrits(wide, block, 32, 5, out);
      FixedPointTrits(narrow, block + 32, 16, 5, out + 160);
      FixedPointTrits(four, block + 48, 4, 4, out + 240);
      uint16_t scale_bits;
      std::memcpy(&scale_bits, block + offsetof(BlockTQ1_0, d), 2);
      scales[b] = F16ToF32(scale_bits);
      offsets[b] = 1;
    }
  });
}

// ---- TQ1_0 fused: base-3 digits decoded in 8-bit registers and multiplied where they are decoded ----

// Digit k of a TQ1_0 byte q is floor(3 v / 256) with v = q * 3^k mod 256 (as above): v comes from q by tripling
// k times with wrapping 8-bit adds (x86 has no 8-bit multiply), and floor(3 v / 256), which is 0, 1 or 2, is
// [v > 85] + [v > 170]: two saturating subtractions clamped to 1. That is the code (trit + 1) of every byte value.
// Up to 4 activation rows multiply the codes where they are decoded; more take a decoded row (the decoding then
// costs more than one pass's products).
using DTrit = hn::CappedTag<uint8_t, 32>;  // one digit of a block's 32-byte run: weights 32k .. 32k + 31

template <class D>
HWY_INLINE hn::Vec<D> Triple(hn::Vec<D> v) {
  return hn::Add(hn::Add(v, v), v);
}

template <class D>
HWY_INLINE hn::Vec<D> TopThird(D d, hn::Vec<D> v) {
  const auto one = hn::Set(d, 1);
  return hn::Add(hn::Min(hn::SaturatedSub(v, hn::Set(d, 85)), one), hn::Min(hn::SaturatedSub(v, hn::Set(d, 170)), one));
}

// Where a block's digits fall in 32-weight runs (with 256-bit vectors; narrower targets take TQ1_0Rows).
bool TQ1_0FusedApplies(const PackedMatrix& weights) {
  return weights.layout.type == QuantType::kTQ1_0 && hn::Lanes(DTrit()) == 32;
}

// A block's codes as 8 vectors of 32: sink(weight, codes) gets weights weight .. weight + 31 of the block.
template <class Sink>
HWY_INLINE void TQ1_0BlockCodes(const uint8_t* block, const Sink& sink) {
  const DTrit d8;
  const hn::Half<DTrit> h8;
  const hn::Repartition<uint32_t, decltype(h8)> h32;
  // Weights 0..159: digit k of bytes 0..31 at 32 k.
  auto v = hn::LoadU(d8, block);
  sink(0, TopThird(d8, v));
  for (int k = 1; k < 5; ++k) {
    v = Triple<DTrit>(v);
    sink(32 * k, TopThird(d8, v));
  }
  // Weights 160..239: digit k of bytes 32..47 at 160 + 16 k, two digits to a vector.
  const auto low = hn::LoadU(h8, block + 32);
  auto pair = hn::Combine(d8, Triple<decltype(h8)>(low), low);  // digits 0 | 1
  sink(160, TopThird(d8, pair));
  pair = Triple<DTrit>(Triple<DTrit>(pair));  // digits 2 | 3
  sink(192, TopThird(d8, pair));
  pair = Triple<DTrit>(Triple<DTrit>(pair));  // digit 4 | unused
  // Weights 240..255: digit k of the 4 qh bytes at 240 + 4 k, as the 32-bit lane k of a 16-byte vector.
  uint32_t word;
  std::memcpy(&word, block + offsetof(BlockTQ1_0, qh), 4);
  const auto p0 = hn::Set(h32, word);
  const auto p1 = hn::BitCast(h32, Triple<decltype(h8)>(hn::BitCast(h8, p0)));
  const auto p2 = hn::BitCast(h32, Triple<decltype(h8)>(hn::BitCast(h8, p1)));
  const auto p3 = hn::BitCast(h32, Triple<decltype(h8)>(hn::BitCast(h8, p2)));
  const auto qh = hn::ConcatUpperLower(h32, hn::OddEven(p3, p2), hn::OddEven(p1, p0));
  sink(224, TopThird(d8, hn::Combine(d8, hn::BitCast(h8, qh), hn::LowerHalf(h8, pair))));
}

HWY_INLINE float TQ1_0Scale(const uint8_t* block) {
  uint16_t scale_bits;
  std::memcpy(&scale_bits, block + offsetof(BlockTQ1_0, d), 2);
  return F16ToF32(scale_bits);
}

// Output rows [begin, end) for at most 4 activation rows (first .. first + M - 1): each block's codes multiplied
// in registers. The block's integer sums become float once per block (one convert and multiply-add of 8 lanes),
// the lanes are added once per row, and the codes' +1 offset comes off as scale * sum of the activations.
template <int M>
void TQ1_0FusedRows(const PackedMatrix& weights, const Int8Activations& acts, int64_t first, int64_t begin,
                    int64_t end, float* y) {
  const DTrit d8;
  const hn::Repartition<int8_t, DTrit> di8;
  const hn::Repartition<int32_t, DTrit> d32;
  const hn::Repartition<float, DTrit> df;
  constexpr int64_t kBlock = static_cast<int64_t>(sizeof(BlockTQ1_0));
  const int64_t blocks = weights.layout.cols / 256, rows = weights.layout.rows, row_bytes = blocks * kBlock;
  const int8_t* q[M];
  for (int m = 0; m < M; ++m) q[m] = acts.values.data() + (first + m) * acts.stride;
  for (int64_t r = begin; r < end; ++r) {
    const uint8_t* row = weights.data + r * row_bytes;
    hn::Vec<decltype(df)> total[M];
    float correction[M];
    for (int m = 0; m < M; ++m) total[m] = hn::Zero(df), correction[m] = 0.0f;
    for (int64_t b = 0; b < blocks; ++b) {
      const uint8_t* block = row + b * kBlock;
      // Matrix-vector streams each row once: the next row's bytes asked into L2 a row ahead.
      if constexpr (M == 1) __builtin_prefetch(block + row_bytes, 0, 2);
      hn::Vec<decltype(d32)> acc[M];
      for (int m = 0; m < M; ++m) acc[m] = hn::Zero(d32);
      TQ1_0BlockCodes(block, [&](int64_t weight, hn::Vec<DTrit> codes) {
        for (int m = 0; m < M; ++m) acc[m] = DotUnsigned(d8, acc[m], codes, hn::LoadU(di8, q[m] + b * 256 + weight));
      });
      const float scale = TQ1_0Scale(block);
      for (int m = 0; m < M; ++m) {
        const int64_t at = (first + m) * acts.segments + b;
        const float both = scale * acts.scales[at];
        total[m] = hn::MulAdd(hn::ConvertTo(df, acc[m]), hn::Set(df, both), total[m]);
        correction[m] += both * static_cast<float>(acts.sums[at]);
      }
    }
    for (int m = 0; m < M; ++m) y[(first + m) * rows + r] = hn::GetLane(hn::SumOfLanes(df, total[m])) - correction[m];
  }
}

// More activation rows than one pass takes: each row's codes decoded once into L1 (the decoding costs more than
// the products of one pass), then every pass of the generic integer dot.
void TQ1_0DecodedRows(const PackedMatrix& weights, const Int8Activations& acts, int64_t begin, int64_t end,
                      float* y) {
  constexpr int64_t kBlock = static_cast<int64_t>(sizeof(BlockTQ1_0));
  const int64_t blocks = weights.layout.cols / 256;
  CodeRows(weights, acts, begin, end, y, [&](int64_t r, uint8_t* codes, float* scales, int32_t* offsets) {
    for (int64_t b = 0; b < blocks; ++b) {
      const uint8_t* block = weights.data + (r * blocks + b) * kBlock;
      TQ1_0BlockCodes(block, [&](int64_t weight, hn::Vec<DTrit> v) { hn::StoreU(v, DTrit(), codes + b * 256 + weight); });
      scales[b] = TQ1_0Scale(block);
      offsets[b] = 1;
    }
  });
}

// ---- t1.6: five base-3 digits per byte, code_0 + 3 code_1 + ... + 81 code_4 ----

// The five codes of each byte value in the first 5 of 8 bytes, so that one unaligned 8-byte store writes a byte's
// codes (the next byte's store overwrites the other 3). Values past 242 never reach a kernel (CheckPackedMatrix
// refuses them at load).
struct Base3Table {
  alignas(64) uint8_t codes[256][8];
};

const Base3Table& Base3Codes() {
  static const Base3Table table = [] {
    Base3Table t{};
    for (int value = 0; value < 256; ++value) {
      for (int k = 0, rest = value; k < 5; ++k, rest /= 3) t.codes[value][k] = static_cast<uint8_t>(rest % 3);
    }
    return t;
  }();
  return table;
}

bool Ternary16Applies(const PackedMatrix& weights) { return weights.layout.type == QuantType::kTernary1_6; }

// A t1.6 row's codes by table, one load and one store per 5 weights instead of 5 divisions; scales and offsets as
// the plain decoder gives them.
void Ternary16Rows(const PackedMatrix& weights, const Int8Activations& acts, int64_t begin, int64_t end, float* y) {
  const RowDecoder decoder(weights);
  const Base3Table& table = Base3Codes();
  const int64_t row_bytes = RowBytes(weights.layout);
  CodeRows(weights, acts, begin, end, y, [&](int64_t r, uint8_t* codes, float* scales, int32_t* offsets) {
    const uint8_t* row = weights.data + r * row_bytes;
    for (int64_t b = 0; b < row_bytes; ++b) std::memcpy(codes + 5 * b, table.codes[row[b]], 8);
    decoder.Scales(r, scales, offsets);
  });
}

// ---- t1.6 fused: the base-3 byte turned into TQ1_0's fixed point, then decoded as TQ1_0 is ----

// A t1.6 byte v holds code_0 + 3 code_1 + ... + 81 code_4. As TQ1_0's fixed point f = ceil(256 v / 243) its codes
// come out by TopThird above, most significant first: code_4, code_3, ..., code_0. Since 256 v = 243 v + 13 v,
// f = v + floor((13 v + 242) / 243), the division a 16-bit multiply-high by ceil(2^20 / 243) = 4316 and a shift:
// exact, as its error (at most 3388 * 8.3e-7) stays below 1 - 242/243. Bytes past 242 never reach a kernel
// (CheckPackedMatrix refuses them at load). A chunk is 32 bytes, 160 weights; the activations are permuted once
// per call into the order the codes come out.
constexpr int64_t kBase3ChunkBytes = 32, kBase3ChunkWeights = 5 * kBase3ChunkBytes;

HWY_INLINE hn::Vec<DTrit> Base3ToFixedPoint(hn::Vec<DTrit> v) {
  const DTrit d8;
  const hn::Half<DTrit> h8;
  const hn::Rebind<int16_t, decltype(h8)> d16;
  const auto half = [&](hn::Vec<decltype(h8)> bytes) {
    const auto w = hn::PromoteTo(d16, bytes);
    const auto t = hn::Add(hn::Mul(w, hn::Set(d16, 13)), hn::Set(d16, 242));
    return hn::DemoteTo(h8, hn::Add(w, hn::ShiftRight<4>(hn::MulHigh(t, hn::Set(d16, 4316)))));
  };
  return hn::Combine(d8, half(hn::UpperHalf(h8, v)), half(hn::LowerHalf(h8, v)));
}

// The activations in decode order: a chunk's 160 as digit k of its 32 bytes at 32 k, zero past cols.
struct Base3Plan {
  int64_t chunks = 0;  // per row: ceil(cols / 160); a row's last chunk may be partial
  int64_t chunks_per_segment = 0;
  int64_t stride = 0;  // chunks * 160
  std::vector<int8_t> permuted;  // acts.rows * stride
};

// One segment per row, or segments of whole chunks.
bool Ternary16FusedApplies(const PackedMatrix& weights) {
  const Layout& layout = weights.layout;
  if (layout.type != QuantType::kTernary1_6 || hn::Lanes(DTrit()) != 32) return false;
  const int64_t segment = KernelSegment(layout);
  return segment >= layout.cols || segment % kBase3ChunkWeights == 0;
}

Base3Plan PlanBase3(const Layout& layout, const Int8Activations& acts) {
  Base3Plan plan;
  plan.chunks = (layout.cols + kBase3ChunkWeights - 1) / kBase3ChunkWeights;
  const int64_t segment = KernelSegment(layout);
  plan.chunks_per_segment = segment >= layout.cols ? plan.chunks : segment / kBase3ChunkWeights;
  plan.stride = plan.chunks * kBase3ChunkWeights;
  plan.permuted.assign(static_cast<size_t>(acts.rows * plan.stride), 0);
  for (int64_t i = 0; i < acts.rows; ++i) {
    const int8_t* q = acts.values.data() + i * acts.stride;
    int8_t* to = plan.permuted.data() + i * plan.stride;
    for (int64_t j = 0; j < layout.cols; ++j) {
      const int64_t byte = j / 5, digit = 4 - j % 5;  // code_(j % 5) is the digit decoded (4 - j % 5)-th
      to[(byte / kBase3ChunkBytes) * kBase3ChunkWeights + digit * kBase3ChunkBytes + byte % kBase3ChunkBytes] = q[j];
    }
  }
  return plan;
}

// Output rows [begin, end) for at most 4 activation rows (first .. first + M - 1), each chunk's codes multiplied
// in registers; one lane sum per segment.
template <int M>
void Ternary16FusedRows(const PackedMatrix& weights, const Int8Activations& acts, const Base3Plan& plan,
                        int64_t first, int64_t begin, int64_t end, float* y) {
  const DTrit d8;
  const hn::Repartition<int8_t, DTrit> di8;
  const hn::Repartition<int32_t, DTrit> d32;
  const RowDecoder decoder(weights);
  const int64_t rows = weights.layout.rows, row_bytes = RowBytes(weights.layout);
  std::vector<float> scales(static_cast<size_t>(acts.segments));
  std::vector<int32_t> offsets(static_cast<size_t>(acts.segments));
  const int8_t* q[M];
  for (int m = 0; m < M; ++m) q[m] = plan.permuted.data() + (first + m) * plan.stride;
  alignas(32) uint8_t tail[kBase3ChunkBytes];
  for (int64_t r = begin; r < end; ++r) {
    const uint8_t* row = weights.data + r * row_bytes;
    decoder.Scales(r, scales.data(), offsets.data());
    // The row's partial last chunk as a zero-padded copy (zero bytes decode to codes that meet zero activations),
    // so no load reads past the row.
    const int64_t whole = row_bytes / kBase3ChunkBytes;
    std::fill(tail, tail + kBase3ChunkBytes, 0);
    std::copy(row + whole * kBase3ChunkBytes, row + row_bytes, tail);
    float total[M] = {};
    for (int64_t s = 0; s < acts.segments; ++s) {
      hn::Vec<decltype(d32)> acc[M];
      for (int m = 0; m < M; ++m) acc[m] = hn::Zero(d32);
      const int64_t chunk_end = std::min(plan.chunks, (s + 1) * plan.chunks_per_segment);
      for (int64_t c = s * plan.chunks_per_segment; c < chunk_end; ++c) {
        if constexpr (M == 1) __builtin_prefetch(row + c * kBase3ChunkBytes + row_bytes, 0, 2);
        // Digit k of the chunk's 32 bytes against activations c * 160 + 32 k (decode order).
        auto v = Base3ToFixedPoint(hn::LoadU(d8, c < whole ? row + c * kBase3ChunkBytes : tail));
        for (int k = 0; k < 5; ++k) {
          if (k > 0) v = Triple<DTrit>(v);
          const auto codes = TopThird(d8, v);
          const int64_t at = c * kBase3ChunkWeights + k * kBase3ChunkBytes;
          for (int m = 0; m < M; ++m) acc[m] = DotUnsigned(d8, acc[m], codes, hn::LoadU(di8, q[m] + at));
        }
      }
      for (int m = 0; m < M; ++m) {
        const int64_t at = (first + m) * acts.segments + s;
        const int32_t dot = hn::GetLane(hn::SumOfLanes(d32, acc[m])) - offsets[s] * acts.sums[at];
        total[m] += (scales[s] * acts.scales[at]) * static_cast<float>(dot);
      }
    }
    for (int m = 0; m < M; ++m) y[(first + m) * rows + r] = total[m];
  }
}

// ---- 2-bit ternary: atq ternary2 and TQ2_0 ----

constexpr int64_t kMaxChunkBytes = 64;
using D2Bit = hn::CappedTag<uint8_t, kMaxChunkBytes>;  // a chunk: Lanes bytes = 4 * Lanes weights
// A row's last columns, when they do not fill a chunk, go as codes in column order (decoded once per row for every
// pass) against the activations in column order, 32 at a time: a convolution's 288 columns are one chunk and one
// such vector, not a second chunk's four fields, each against every activation row.
constexpr int64_t kMaxTailCodes = 4 * kMaxChunkBytes;
using D2Tail = hn::CappedTag<uint8_t, 32>;
constexpr int64_t kPrefetchBytes = 512;

// Where the weight decoded from byte `byte` of a TQ2_0 block's codes by the shift 2k sits in the block (in
// ternary2 it is weight 4 * byte + k of the row).
int64_t TQ2_0Weight(int64_t byte, int k) { return (byte / 32) * 128 + k * 32 + byte % 32; }

struct TwoBitPlan {
  bool tq2_0 = false;
  int64_t chunk_bytes = 0;        // Lanes(D2Bit)
  int64_t full_chunks = 0;        // ternary2: chunks that fit in a row; TQ2_0: cols / 256 blocks * chunks per block
  int64_t tail_cols = 0;          // ternary2: the row's last columns when they do not fill a chunk
  int64_t tail_padded = 0;        // those rounded up to whole vectors of D2Tail
  int64_t permuted_stride = 0;    // permuted activations per row: full chunks, then the tail in column order; zero
                                  // past cols
  std::vector<int8_t> permuted;   // acts.rows * permuted_stride, in decode order
};

// The 2-bit path needs each chunk inside one segment: segments of a multiple of 4 * Lanes weights, or a single
// segment per row (whose last columns a zero-padded chunk takes).
bool TwoBitApplies(const PackedMatrix& weights) {
  const Layout& layout = weights.layout;
  if (layout.type == QuantType::kTQ2_0) return true;
  if (layout.type != QuantType::kTernary2) return false;
  const int64_t segment = KernelSegment(layout);
  return segment >= layout.cols || segment % (4 * static_cast<int64_t>(hn::Lanes(D2Bit()))) == 0;
}

// The 4 * Lanes(d) activations at `from` de-interleaved by 4 to `to`: the order in which a chunk's 2-bit fields
// (weights 4b + k of byte b, for k = 0..3) come out of the shifts.
template <class D>
HWY_INLINE void DeinterleaveChunk(D d, const int8_t* from, int8_t* to) {
  const int64_t lanes = static_cast<int64_t>(hn::Lanes(d));
  hn::Vec<D> v0, v1, v2, v3;
  hn::LoadInterleaved4(d, from, v0, v1, v2, v3);
  hn::StoreU(v0, d, to);
  hn::StoreU(v1, d, to + lanes);
  hn::StoreU(v2, d, to + 2 * lanes);
  hn::StoreU(v3, d, to + 3 * lanes);
}

// Field k of every byte of `packed`: the codes of weights 4b + k.
template <int k, class D>
HWY_INLINE hn::Vec<D> TwoBitField(D, hn::Vec<D> packed, hn::Vec<D> mask) {
  if constexpr (k == 0) {
    return hn::And(packed, mask);
  } else if constexpr (k == 3) {
    return hn::ShiftRight<6>(packed);
  } else {
    return hn::And(hn::ShiftRight<2 * k>(packed), mask);
  }
}

// The activations of every row in the plan's decode order, rows shared out over `pool` (a prompt's thousands of
// values per row would otherwise be a serial step before every product).
TwoBitPlan PlanTwoBit(const Layout& layout, const Int8Activations& acts, ThreadPool& pool) {
  TwoBitPlan plan;
  plan.tq2_0 = layout.type == QuantType::kTQ2_0;
  plan.chunk_bytes = static_cast<int64_t>(hn::Lanes(D2Bit()));
  const int64_t chunk_weights = 4 * plan.chunk_bytes;
  plan.full_chunks = layout.cols / chunk_weights;
  if (!plan.tq2_0) plan.tail_cols = layout.cols - plan.full_chunks * chunk_weights;
  const int64_t tail_step = static_cast<int64_t>(hn::Lanes(D2Tail()));
  plan.tail_padded = (plan.tail_cols + tail_step - 1) / tail_step * tail_step;
  plan.permuted_stride = plan.full_chunks * chunk_weights + plan.tail_padded;
  // TQ2_0 (whose rows are whole 256-weight blocks): where each permuted position reads from, as runs of
  // consecutive columns (a field of 32 code bytes decodes 32 consecutive weights), copied whole.
  struct Run {
    int64_t to, from, length;
  };
  std::vector<Run> runs;
  if (plan.tq2_0) runs.reserve(static_cast<size_t>(plan.full_chunks * 4 * (plan.chunk_bytes / 32 + 1)));
  for (int64_t c = 0; plan.tq2_0 && c < plan.full_chunks; ++c) {
    for (int k = 0; k < 4; ++k) {
      // Within one 32-byte half of a block's codes, consecutive bytes decode consecutive weights.
      for (int64_t lane = 0, length = 0; lane < plan.chunk_bytes; lane += length) {
        const int64_t byte_in_block = (c * plan.chunk_bytes) % 64 + lane;
        length = std::min(plan.chunk_bytes - lane, 32 - byte_in_block % 32);
        runs.push_back({c * chunk_weights + k * plan.chunk_bytes + lane,
                        (c * chunk_weights) / 256 * 256 + TQ2_0Weight(byte_in_block, k), length});
      }
    }
  }
  plan.permuted.resize(static_cast<size_t>(acts.rows * plan.permuted_stride));
  const hn::Repartition<int8_t, D2Bit> di8;
  pool.ParallelFor(acts.rows, ThreadPool::GrainFor(plan.permuted_stride, kMinRowTaskValues),
                   [&](int64_t begin, int64_t end, int) {
    for (int64_t i = begin; i < end; ++i) {
      const int8_t* q = acts.values.data() + i * acts.stride;
      int8_t* out = plan.permuted.data() + i * plan.permuted_stride;
      if (plan.tq2_0) {
        for (const Run& run : runs) std::memcpy(out + run.to, q + run.from, static_cast<size_t>(run.length));
        continue;
      }
      // ternary2: byte b of a chunk holds weights 4b .. 4b + 3, so a chunk's activations de-interleave by 4.
      for (int64_t c = 0; c < plan.full_chunks; ++c) {
        DeinterleaveChunk(di8, q + c * chunk_weights, out + c * chunk_weights);
      }
      // The last columns in column order, zero-padded.
      const int64_t done = plan.full_chunks * chunk_weights;
      std::copy(q + done, q + layout.cols, out + done);
      std::fill(out + layout.cols, out + plan.permuted_stride, 0);
    }
  });
  return plan;
}

// Prefetch for the weight bytes at `at`. Matrix-vector (M = 1) reads each weight once: it asks, into L2, for the
// same bytes of the rows the next pass reads (`pass_bytes` further), which keeps enough reads in flight for one
// core to stream at the memory's bandwidth. Matrix-matrix revisits an L1-sized block of rows: a few chunks ahead
// in the same row.
template <int M>
HWY_INLINE void PrefetchWeights(const uint8_t* at, int64_t pass_bytes) {
  if constexpr (M == 1) {
    __builtin_prefetch(at + pass_bytes, 0, 2);
  } else {
    hwy::Prefetch(at + kPrefetchBytes);
  }
}

// v (a tail vector's lanes) as the first lanes of a vector of D, the rest zero: free on x86, where writing a
// narrower register clears the rest.
template <class D, class VPiece>
HWY_INLINE hn::Vec<D> ZeroExtendPiece(D d, VPiece v) {
  if constexpr (hn::MaxLanes(d) == hn::MaxLanes(hn::DFromV<VPiece>())) {
    return v;
  } else {
    return hn::ZeroExtendVector(d, ZeroExtendPiece(hn::Half<D>(), v));
  }
}

// acc[m][i] += the integer dot of row i's tail codes (tails + i * kMaxTailCodes, column order, zero-padded) with
// activation row m's tail (permuted[m] + offset), in the low lanes: each code vector loaded once for the M rows.
template <int M, int R, class V32>
HWY_INLINE void TwoBitTail(const uint8_t* tails, const TwoBitPlan& plan, const int8_t* const* permuted,
                           int64_t offset, V32 (*acc)[R]) {
  const D2Tail t8;
  const hn::Repartition<int8_t, D2Tail> ti8;
  const hn::Repartition<int32_t, D2Tail> t32;
  const hn::DFromV<V32> d32;
  const int64_t step = static_cast<int64_t>(hn::Lanes(t8));
  hn::Vec<decltype(t32)> sum[M][R];
  for (int m = 0; m < M; ++m) {
    for (int i = 0; i < R; ++i) sum[m][i] = hn::Zero(t32);
  }
  for (int64_t j = 0; j < plan.tail_padded; j += step) {
    hn::Vec<decltype(t8)> codes[R];
    for (int i = 0; i < R; ++i) codes[i] = hn::Load(t8, tails + i * kMaxTailCodes + j);
    for (int m = 0; m < M; ++m) {
      const auto q = hn::LoadU(ti8, permuted[m] + offset + j);
      for (int i = 0; i < R; ++i) sum[m][i] = DotUnsigned(t8, sum[m][i], codes[i], q);
    }
  }
  for (int m = 0; m < M; ++m) {
    for (int i = 0; i < R; ++i) acc[m][i] = hn::Add(acc[m][i], ZeroExtendPiece(d32, sum[m][i]));
  }
}

// Output rows r .. r + R - 1 for activation rows first .. first + M - 1. Each chunk of activations is loaded once
// for the R rows and each chunk of weights decoded once for the M activation rows: with M = 1 (decode) four rows
// share the activation loads, which otherwise outnumber the weight loads four to one.
template <int M, int R>
HWY_INLINE void TwoBitBlock(const uint8_t* const* row, const uint8_t* tails /* [R][kMaxTailCodes] */,
                            const float* const* scales, const int32_t* const* offsets,
                            const Int8Activations& acts, const TwoBitPlan& plan, const int8_t* const* permuted,
                            int64_t first, int64_t pass_bytes, float* out /* [M][R] */) {
  const D2Bit d8;
  const hn::Repartition<int8_t, D2Bit> di8;
  const hn::Repartition<int32_t, D2Bit> d32;
  const hn::Repartition<float, D2Bit> df;
  const int64_t nb = plan.chunk_bytes, chunk_weights = 4 * nb;
  const int64_t chunks_per_segment = acts.segment / chunk_weights;
  const auto mask = hn::Set(d8, 3);
  // Matrix-vector on VNNI: the 4 * R plane accumulators fit in 32 registers (AVX2 has 16 and would spill).
  constexpr bool kPlanes = M == 1 && HWY_TARGET == HWY_AVX3_DL;
  // The float sums over segments in memory, not registers: the M x R integer accumulators of the loop below
  // take most of the registers, and totals held beside them made the compiler spill those instead.
  constexpr size_t kLanes = hn::MaxLanes(df);
  alignas(64) float total[M][R][kLanes];
  float correction[M][R];  // sum over segments of -scale * offset * sum q
  for (int m = 0; m < M; ++m) {
    for (int i = 0; i < R; ++i) {
      hn::Store(hn::Zero(df), df, total[m][i]);
      correction[m][i] = 0.0f;
    }
  }
  for (int64_t s = 0; s < acts.segments; ++s) {
    hn::Vec<decltype(d32)> acc[M][R];
    for (int m = 0; m < M; ++m) {
      for (int i = 0; i < R; ++i) acc[m][i] = hn::Zero(d32);
    }
    const bool last = s == acts.segments - 1;
    const int64_t chunk_end = last ? plan.full_chunks : std::min(plan.full_chunks, (s + 1) * chunks_per_segment);
    // TQ2_0 blocks carry a 2-byte scale after their 64 code bytes.
    const auto byte_of = [&](int64_t c) {
      return plan.tq2_0 ? (c * nb) / 64 * static_cast<int64_t>(sizeof(BlockTQ2_0)) + (c * nb) % 64 : c * nb;
    };
    if constexpr (kPlanes) {
      // Each 2-bit field masked in place, 4^k * code, into its own accumulator: no shifts in the loop; the
      // accumulators are exact multiples of 4^k, so shifting them back at the end loses nothing.
      hn::Vec<decltype(d32)> plane[R][4];
      for (int i = 0; i < R; ++i) {
        for (int k = 0; k < 4; ++k) plane[i][k] = hn::Zero(d32);
      }
      for (int64_t c = s * chunks_per_segment; c < chunk_end; ++c) {
        const int64_t byte = byte_of(c);
        hn::Vec<decltype(di8)> q[4];
        for (int k = 0; k < 4; ++k) q[k] = hn::LoadU(di8, permuted[0] + c * chunk_weights + k * nb);
        for (int i = 0; i < R; ++i) {
          PrefetchWeights<M>(row[i] + byte, pass_bytes);
          const auto packed = hn::LoadU(d8, row[i] + byte);
          for (int k = 0; k < 4; ++k) {
            plane[i][k] = DotUnsigned(d8, plane[i][k], hn::And(packed, hn::Set(d8, 3 << (2 * k))), q[k]);
          }
        }
      }
      for (int i = 0; i < R; ++i) {
        acc[0][i] = hn::Add(hn::Add(plane[i][0], hn::ShiftRight<2>(plane[i][1])),
                            hn::Add(hn::ShiftRight<4>(plane[i][2]), hn::ShiftRight<6>(plane[i][3])));
      }
    } else {
      // Per chunk: the R rows' bytes loaded once; per 2-bit field, the M activation vectors loaded once and each
      // row's field decoded once, so M x R products share M + R loads.
      for (int64_t c = s * chunks_per_segment; c < chunk_end; ++c) {
        const int64_t byte = byte_of(c);
        hn::Vec<decltype(d8)> packed[R];
        for (int i = 0; i < R; ++i) {
          PrefetchWeights<M>(row[i] + byte, pass_bytes);
          packed[i] = hn::LoadU(d8, row[i] + byte);
        }
        const auto field = [&](auto shift) {
          constexpr int k = decltype(shift)::value;
          hn::Vec<decltype(di8)> q[M];
          for (int m = 0; m < M; ++m) q[m] = hn::LoadU(di8, permuted[m] + c * chunk_weights + k * nb);
          for (int i = 0; i < R; ++i) {
            const auto code = TwoBitField<k>(d8, packed[i], mask);
            for (int m = 0; m < M; ++m) acc[m][i] = DotUnsigned(d8, acc[m][i], code, q[m]);
          }
        };
        field(std::integral_constant<int, 0>());
        field(std::integral_constant<int, 1>());
        field(std::integral_constant<int, 2>());
        field(std::integral_constant<int, 3>());
      }
    }
    // The row's last columns, as codes in column order.
    if (last && plan.tail_cols > 0) TwoBitTail<M, R>(tails, plan, permuted, plan.full_chunks * chunk_weights, acc);
    for (int m = 0; m < M; ++m) {
      const int64_t at = (first + m) * acts.segments + s;
      for (int i = 0; i < R; ++i) {
        const float scale = scales[i][s] * acts.scales[at];
        hn::Store(hn::MulAdd(hn::ConvertTo(df, acc[m][i]), hn::Set(df, scale), hn::Load(df, total[m][i])), df,
                  total[m][i]);
        correction[m][i] -= scale * static_cast<float>(offsets[i][s] * acts.sums[at]);
      }
    }
  }
  for (int m = 0; m < M; ++m) {
    if constexpr (R == 4) {
      const hn::Vec<decltype(df)> four[4] = {hn::Load(df, total[m][0]), hn::Load(df, total[m][1]),
                                             hn::Load(df, total[m][2]), hn::Load(df, total[m][3])};
      SumsOfFour(df, four, out + m * R);
      for (int i = 0; i < R; ++i) out[m * R + i] += correction[m][i];
    } else {
      for (int i = 0; i < R; ++i) {
        out[m * R + i] = hn::GetLane(hn::SumOfLanes(df, hn::Load(df, total[m][i]))) + correction[m][i];
      }
    }
  }
}

// Output rows [begin, end) for activation rows first .. first + M - 1.
// The weight rows of one block of output rows, read once for every pass over the activation rows: each row's
// start, its zero-padded tail and its scales (decoding the scales once per pass cost a few percent at batch 256).
constexpr int64_t kTwoBitRowBlock = 16;
struct TwoBitRowBlock {
  const uint8_t* row[kTwoBitRowBlock];
  alignas(64) uint8_t tails[kTwoBitRowBlock][kMaxTailCodes];  // codes of the last columns, zero-padded
  const float* scales[kTwoBitRowBlock];
  const int32_t* offsets[kTwoBitRowBlock];
};

// Output rows [begin, begin + count) of `block` for activation rows first .. first + M - 1.
template <int M>
void TwoBitRows(const TwoBitRowBlock& block, int64_t begin, int64_t count, const Int8Activations& acts,
                const TwoBitPlan& plan, int64_t row_bytes, int64_t rows, int64_t first, float* y) {
  // Weight rows per pass: 4 at decode; for several activation rows 4 where the M x 4 accumulators fit in the
  // registers (AVX-512's 32), else 1.
  constexpr int R = M == 1 || HWY_MAX_BYTES >= 64 ? 4 : 1;
  const int8_t* permuted[M];
  for (int m = 0; m < M; ++m) permuted[m] = plan.permuted.data() + (first + m) * plan.permuted_stride;
  float out[M * R];
  int64_t i = 0;
  for (; i + R <= count; i += R) {
    TwoBitBlock<M, R>(block.row + i, block.tails[i], block.scales + i, block.offsets + i, acts, plan, permuted,
                      first, R * row_bytes, out);
    for (int m = 0; m < M; ++m) {
      for (int k = 0; k < R; ++k) y[(first + m) * rows + begin + i + k] = out[m * R + k];
    }
  }
  for (; i < count; ++i) {
    TwoBitBlock<M, 1>(block.row + i, block.tails[i], block.scales + i, block.offsets + i, acts, plan, permuted,
                      first, row_bytes, out);
    for (int m = 0; m < M; ++m) y[(first + m) * rows + begin + i] = out[m];
  }
}

// Output rows [begin, end) for every activation row: blocks of kTwoBitRowBlock rows (in L1 while every pass of up
// to 4 activation rows goes over them), each block's rows read once.
void TwoBitRowsAllPasses(const PackedMatrix& weights, const Int8Activations& acts, const TwoBitPlan& plan,
                         int64_t begin, int64_t end, float* y) {
  const Layout& layout = weights.layout;
  const int64_t row_bytes =
      plan.tq2_0 ? layout.cols / 256 * static_cast<int64_t>(sizeof(BlockTQ2_0)) : RowBytes(layout);
  const RowDecoder decoder(weights);
  std::vector<float> scale_storage(static_cast<size_t>(kTwoBitRowBlock * acts.segments));
  std::vector<int32_t> offset_storage(static_cast<size_t>(kTwoBitRowBlock * acts.segments));
  TwoBitRowBlock block;
  std::memset(block.tails, 0, sizeof(block.tails));
  // One pass (decode): 4 rows at a time, their scales read just before their codes (TQ2_0 keeps them inside the
  // blocks, so reading 16 rows' first was a pass over memory ahead of the product: 7-14% slower at batch 1).
  const int64_t block_rows = acts.rows <= kMaxRowsPerPass ? 4 : kTwoBitRowBlock;
  for (int64_t b = begin; b < end; b += block_rows) {
    const int64_t count = std::min(block_rows, end - b);
    for (int64_t i = 0; i < count; ++i) {
      block.row[i] = weights.data + (b + i) * row_bytes;
      const uint8_t* tail = block.row[i] + plan.full_chunks * plan.chunk_bytes;
      for (int64_t j = 0; j < plan.tail_cols; ++j) block.tails[i][j] = (tail[j / 4] >> (2 * (j % 4))) & 3;
      decoder.Scales(b + i, scale_storage.data() + i * acts.segments, offset_storage.data() + i * acts.segments);
      block.scales[i] = scale_storage.data() + i * acts.segments;
      block.offsets[i] = offset_storage.data() + i * acts.segments;
    }
    int64_t first = 0;
    for (; first + 4 <= acts.rows; first += 4) TwoBitRows<4>(block, b, count, acts, plan, row_bytes, layout.rows, first, y);
    switch (acts.rows - first) {
      case 3: TwoBitRows<3>(block, b, count, acts, plan, row_bytes, layout.rows, first, y); break;
      case 2: TwoBitRows<2>(block, b, count, acts, plan, row_bytes, layout.rows, first, y); break;
      case 1: TwoBitRows<1>(block, b, count, acts, plan, row_bytes, layout.rows, first, y); break;
      default: break;
    }
  }
}

// ---- Q8_0 and Q4_0: 32-weight blocks as signed int8 ----

template <int M>
void Block32Rows(const PackedMatrix& weights, const Int8Activations& acts, int64_t first, int64_t begin, int64_t end,
                 float* y) {
  const hn::CappedTag<int8_t, 32> di8;  // 32 lanes on AVX2 and AVX-512, 16 on 128-bit targets
  const hn::Repartition<int32_t, decltype(di8)> d32;
  const hn::Repartition<float, decltype(di8)> df;
  const int64_t lanes = static_cast<int64_t>(hn::Lanes(di8));
  const bool q8 = weights.layout.type == QuantType::kQ8_0;
  const int64_t rows = weights.layout.rows, blocks = weights.layout.cols / 32;
  const int64_t block_bytes = q8 ? static_cast<int64_t>(sizeof(BlockQ8_0)) : static_cast<int64_t>(sizeof(BlockQ4_0));
  alignas(64) int8_t w[32];
  for (int64_t r = begin; r < end; ++r) {
    const uint8_t* row = weights.data + r * blocks * block_bytes;
    hn::Vec<decltype(df)> total[M];
    for (int m = 0; m < M; ++m) total[m] = hn::Zero(df);
    for (int64_t b = 0; b < blocks; ++b) {
      const uint8_t* block = row + b * block_bytes;
      uint16_t scale_bits;
      std::memcpy(&scale_bits, block, 2);
      const float d = F16ToF32(scale_bits);
      if (q8) {
        std::memcpy(w, block + 2, 32);
      } else {
        const hn::CappedTag<uint8_t, 16> du16;
        const hn::Repartition<int8_t, decltype(du16)> di16;
        const auto packed = hn::LoadU(du16, block + 2);
        const auto eight = hn::Set(di16, 8);
        const auto low = hn::Sub(hn::BitCast(di16, hn::And(packed, hn::Set(du16, 0x0F))), eight);
        const auto high = hn::Sub(hn::BitCast(di16, hn::ShiftRight<4>(packed)), eight);
#if HWY_ARCH_X86 && HWY_TARGET <= HWY_AVX2  // 32 int8 lanes
        {
          // Kept in a register: two 16-byte stores read back as one 32-byte load would stall store forwarding.
          const auto weights32 = hn::Combine(di8, high, low);
          for (int m = 0; m < M; ++m) {
            const int64_t at = (first + m) * acts.segments + b;
            const int8_t* q = acts.values.data() + (first + m) * acts.stride + b * 32;
            const auto acc = DotSigned(di8, hn::Zero(d32), weights32, hn::LoadU(di8, q));
            total[m] = hn::MulAdd(hn::ConvertTo(df, acc), hn::Set(df, d * acts.scales[at]), total[m]);
          }
          continue;
        }
#else
        hn::Store(low, di16, w);
        hn::Store(high, di16, w + 16);
#endif
      }
      for (int m = 0; m < M; ++m) {
        const int64_t at = (first + m) * acts.segments + b;
        const int8_t* q = acts.values.data() + (first + m) * acts.stride + b * 32;
        auto acc = hn::Zero(d32);
        for (int64_t j = 0; j < 32; j += lanes) acc = DotSigned(di8, acc, hn::Load(di8, w + j), hn::LoadU(di8, q + j));
        total[m] = hn::MulAdd(hn::ConvertTo(df, acc), hn::Set(df, d * acts.scales[at]), total[m]);
      }
    }
    for (int m = 0; m < M; ++m) y[(first + m) * rows + r] = hn::GetLane(hn::SumOfLanes(df, total[m]));
  }
}

// ---- Q8_0 and Q4_0 rows interleaved 8 at a time (kernels/interleaved.h) ----

#if HWY_ARCH_X86 && HWY_TARGET <= HWY_AVX2  // 256-bit vectors: 8 int32 lanes, one per row of a group
constexpr bool kInterleavedKernel = true;
using DInterleaved = hn::CappedTag<uint8_t, 32>;

// acc += for each 32-bit lane, the sum of its 4 products codes * q: the lanes stay the rows they are (the widening
// multiply-adds of DotUnsigned may reorder them). Exact for codes below 129 (a 16-bit pair sum of maddubs is at
// most 2 * 128 * 127 then); VNNI's vpdpbusd is exact for any code.
template <class V32>
HWY_INLINE V32 DotLanes(V32 acc, hn::Vec<DInterleaved> codes, hn::Vec<hn::Repartition<int8_t, DInterleaved>> q) {
#if HWY_TARGET == HWY_AVX3_DL
  return DotUnsigned(DInterleaved(), acc, codes, q);
#else
  const __m256i pairs = _mm256_maddubs_epi16(codes.raw, q.raw);
  return V32{_mm256_add_epi32(acc.raw, _mm256_madd_epi16(pairs, _mm256_set1_epi16(1)))};
#endif
}

// The 4 activations at q in every 32-bit lane of a vector of tag D.
template <class D>
HWY_INLINE hn::Vec<hn::Repartition<int8_t, D>> FourInEveryLane(D, const int8_t* q) {
  const hn::Repartition<int32_t, D> d32;
  int32_t four;
  std::memcpy(&four, q, 4);
  return hn::BitCast(hn::Repartition<int8_t, D>(), hn::Set(d32, four));
}

// Where the kernel below reads its weights: one group of 8 interleaved rows in 256-bit vectors (a lane per row).
struct OneGroup {
  using D = DInterleaved;
  static constexpr int64_t kGroups = 1;
  const uint8_t* lo;  // this block of the group
  hn::Vec<D> Bytes(int64_t offset) const { return hn::LoadU(D(), lo + offset); }
  hn::Vec<hn::Repartition<float, D>> Scales() const {
    const hn::Repartition<float, D> df;
    const hn::Rebind<hwy::float16_t, decltype(df)> dh;
    return hn::PromoteTo(df, hn::LoadU(dh, reinterpret_cast<const hwy::float16_t*>(lo)));
  }
  template <class V32>
  static V32 Dot(V32 acc, hn::Vec<D> codes, hn::Vec<hn::Repartition<int8_t, D>> q) { return DotLanes(acc, codes, q); }
};

// Output rows for units (groups, or pairs of groups) [unit_begin, unit_end), activation rows first .. first + M - 1.
// Per block the integer sums start from -offset * (the block's activation sum), offset 8 for Q4_0's codes and,
// with VNNI, 128 for Q8_0's weights made unsigned by flipping their top bit (without VNNI, maddubs would saturate
// on those: each weight's sign goes onto its activation instead).
template <int M, class Source>
void InterleavedUnits(const PackedMatrix& weights, const Int8Activations& acts, int64_t first, int64_t unit_begin,
                      int64_t unit_end, float* y) {
  using D = typename Source::D;
  const D du8;
  const hn::Repartition<int8_t, D> di8;
  const hn::Repartition<int32_t, D> d32;
  const hn::Repartition<float, D> df;
  static_assert(hn::MaxLanes(df) == Source::kGroups * kInterleavedRows, "a lane per interleaved row");
  constexpr bool kVnni = HWY_TARGET == HWY_AVX3_DL;
  const bool q8 = weights.layout.type == QuantType::kQ8_0;
  const int32_t offset = q8 ? (kVnni ? 128 : 0) : 8;
  const int64_t rows = weights.layout.rows, blocks = weights.layout.cols / 32;
  const int64_t block_bytes = InterleavedBlockBytes(weights.layout.type), group_bytes = blocks * block_bytes;
  constexpr int64_t codes = 2 * kInterleavedRows;  // past the 8 f16 scales
  for (int64_t u = unit_begin; u < unit_end; ++u) {
    const uint8_t* unit = weights.interleaved + u * Source::kGroups * group_bytes;
    hn::Vec<decltype(df)> total[M];
    for (int m = 0; m < M; ++m) total[m] = hn::Zero(df);
    for (int64_t b = 0; b < blocks; ++b) {
      Source source{unit + b * block_bytes};
      if constexpr (Source::kGroups == 2) source.hi = source.lo + group_bytes;
      const int8_t* q[M];
      hn::Vec<decltype(d32)> acc[M];
      for (int m = 0; m < M; ++m) {
        q[m] = acts.values.data() + (first + m) * acts.stride + b * 32;
        acc[m] = hn::Set(d32, -offset * acts.sums[(first + m) * acts.segments + b]);
      }
      if (q8) {
        for (int c = 0; c < 8; ++c) {
          const auto w = hn::BitCast(di8, source.Bytes(codes + 32 * c));
          if constexpr (kVnni) {
            const auto shifted = hn::BitCast(du8, hn::Xor(w, hn::Set(di8, static_cast<int8_t>(-128))));
            for (int m = 0; m < M; ++m) acc[m] = Source::Dot(acc[m], shifted, FourInEveryLane(D(), q[m] + 4 * c));
          } else {
            const auto magnitude = hn::BitCast(du8, hn::Abs(w));
            for (int m = 0; m < M; ++m) {
              const auto signed_q = decltype(w){_mm256_sign_epi8(FourInEveryLane(D(), q[m] + 4 * c).raw, w.raw)};
              acc[m] = Source::Dot(acc[m], magnitude, signed_q);
            }
          }
        }
      } else {
        for (int c = 0; c < 4; ++c) {
          const auto packed = source.Bytes(codes + 32 * c);
          const auto low = hn::And(packed, hn::Set(du8, 0x0F));
          const auto high = hn::ShiftRight<4>(packed);
          for (int m = 0; m < M; ++m) {
            acc[m] = Source::Dot(acc[m], low, FourInEveryLane(D(), q[m] + 8 * c));
            acc[m] = Source::Dot(acc[m], high, FourInEveryLane(D(), q[m] + 8 * c + 4));
          }
        }
      }
      const auto scales = source.Scales();
      for (int m = 0; m < M; ++m) {
        const float act_scale = acts.scales[(first + m) * acts.segments + b];
        total[m] = hn::MulAdd(hn::ConvertTo(df, acc[m]), hn::Mul(scales, hn::Set(df, act_scale)), total[m]);
      }
    }
    for (int m = 0; m < M; ++m) {
      hn::StoreU(total[m], df, y + (first + m) * rows + u * Source::kGroups * kInterleavedRows);
    }
  }
}

template <int M>
void InterleavedRows(const PackedMatrix& weights, const Int8Activations& acts, int64_t first, int64_t group_begin,
                     int64_t group_end, float* y) {
  InterleavedUnits<M, OneGroup>(weights, acts, first, group_begin, group_end, y);
}

#if HWY_TARGET == HWY_AVX3_DL
// With 512-bit vectors, two groups (16 rows) at a time: lanes 0-7 the rows of group 2p, lanes 8-15 those of group
// 2p + 1, each weight vector's halves loaded from the two groups' blocks, so that one broadcast of 4 activations
// and one vpdpbusd serve 16 rows instead of 8 (activation rows past one pass re-read the weights from cache, and
// there the kernel is bound by its instructions, not by memory).
constexpr bool kInterleavedPairs = true;

struct TwoGroups {
  using D = hn::ScalableTag<uint8_t>;
  static constexpr int64_t kGroups = 2;
  const uint8_t* lo;  // this block of the pair's first group
  const uint8_t* hi;  // and of its second
  hn::Vec<D> Bytes(int64_t offset) const {
    const hn::Half<D> h8;
    return hn::Combine(D(), hn::LoadU(h8, hi + offset), hn::LoadU(h8, lo + offset));
  }
  hn::Vec<hn::Repartition<float, D>> Scales() const {
    const hn::Repartition<float, D> df;
    const hn::Half<decltype(df)> hf;
    const hn::Rebind<hwy::float16_t, decltype(hf)> dh;
    return hn::Combine(df, hn::PromoteTo(hf, hn::LoadU(dh, reinterpret_cast<const hwy::float16_t*>(hi))),
                       hn::PromoteTo(hf, hn::LoadU(dh, reinterpret_cast<const hwy::float16_t*>(lo))));
  }
  template <class V32>
  static V32 Dot(V32 acc, hn::Vec<D> codes, hn::Vec<hn::Repartition<int8_t, D>> q) {
    return DotUnsigned(D(), acc, codes, q);
  }
};

// Output rows 16p .. 16p + 15 for pairs p in [pair_begin, pair_end).
template <int M>
void InterleavedPairRows(const PackedMatrix& weights, const Int8Activations& acts, int64_t first, int64_t pair_begin,
                         int64_t pair_end, float* y) {
  InterleavedUnits<M, TwoGroups>(weights, acts, first, pair_begin, pair_end, y);
}
#else
constexpr bool kInterleavedPairs = false;
template <int M>
void InterleavedPairRows(const PackedMatrix&, const Int8Activations&, int64_t, int64_t, int64_t, float*) {}
#endif
#else
constexpr bool kInterleavedKernel = false;
constexpr bool kInterleavedPairs = false;
template <int M>
void InterleavedRows(const PackedMatrix&, const Int8Activations&, int64_t, int64_t, int64_t, float*) {}
template <int M>
void InterleavedPairRows(const PackedMatrix&, const Int8Activations&, int64_t, int64_t, int64_t, float*) {}
#endif

// ---- float weights ----

// One vector of weights of row r from column j, in float32 whatever the stored float type.
template <class D>
hn::Vec<D> FloatWeights(D df, QuantType type, const void* data, int64_t offset) {
  if (type == QuantType::kF32) return hn::LoadU(df, static_cast<const float*>(data) + offset);
  if (type == QuantType::kF16) {
    const hn::Rebind<hwy::float16_t, D> dh;
    return hn::PromoteTo(df, hn::LoadU(dh, static_cast<const hwy::float16_t*>(data) + offset));
  }
  const hn::Rebind<hwy::bfloat16_t, D> db;
  return hn::PromoteTo(df, hn::LoadU(db, static_cast<const hwy::bfloat16_t*>(data) + offset));
}

// R weight rows times M activation rows as R x M accumulators: each loaded (and widened) weight vector serves M
// products and each activation vector R, 8 loads for 16 products at R = M = 4 where one row at a time took 5 for 4.
// Columns past the last whole vector go through the dequantized row.
template <int M, int R>
void FloatRowTile(const PackedMatrix& weights, const float* x, int64_t first, int64_t r0, float* y) {
  const hn::ScalableTag<float> df;
  const int64_t lanes = static_cast<int64_t>(hn::Lanes(df));
  const int64_t rows = weights.layout.rows, cols = weights.layout.cols;
  const QuantType type = weights.layout.type;
  const int64_t base = r0 * cols;  // row r0's first weight
  hn::Vec<decltype(df)> total[R][M];
  for (int i = 0; i < R; ++i) {
    for (int m = 0; m < M; ++m) total[i][m] = hn::Zero(df);
  }
  int64_t j = 0;
  if constexpr (M == 1) {
    // Matrix-vector streams the weights once: two accumulators per row (R chains of multiply-adds would wait on
    // their latency), and a prefetch into L2 of the bytes the next R rows read at this column, which keeps one core
    // reading at the memory's bandwidth (as the 2-bit kernel does).
    const int64_t element = type == QuantType::kF32 ? 4 : 2;
    // The rows after this tile, or (at the matrix's end) this tile again: never an address outside the matrix.
    const auto* ahead = static_cast<const uint8_t*>(weights.data) + (r0 + 2 * R <= rows ? R : 0) * cols * element;
    hn::Vec<decltype(df)> second[R];
    for (int i = 0; i < R; ++i) second[i] = hn::Zero(df);
    for (; j + 2 * lanes <= cols; j += 2 * lanes) {
      const auto x0 = hn::LoadU(df, x + first * cols + j), x1 = hn::LoadU(df, x + first * cols + j + lanes);
      for (int i = 0; i < R; ++i) {
        __builtin_prefetch(ahead + (base + i * cols + j) * element, 0, 2);
        total[i][0] = hn::MulAdd(FloatWeights(df, type, weights.data, base + i * cols + j), x0, total[i][0]);
        second[i] = hn::MulAdd(FloatWeights(df, type, weights.data, base + i * cols + j + lanes), x1, second[i]);
      }
    }
    for (int i = 0; i < R; ++i) total[i][0] = hn::Add(total[i][0], second[i]);
  }
  for (; j + lanes <= cols; j += lanes) {
    hn::Vec<decltype(df)> xs[M];
    for (int m = 0; m < M; ++m) xs[m] = hn::LoadU(df, x + (first + m) * cols + j);
    for (int i = 0; i < R; ++i) {
      const auto w = FloatWeights(df, type, weights.data, base + i * cols + j);
      for (int m = 0; m < M; ++m) total[i][m] = hn::MulAdd(w, xs[m], total[i][m]);
    }
  }
  for (int i = 0; i < R; ++i) {
    float tail[M] = {};
    if (j < cols) {
      std::vector<float> row(static_cast<size_t>(cols));
      DequantizeRow(weights, r0 + i, row.data());
      for (int m = 0; m < M; ++m) {
        for (int64_t k = j; k < cols; ++k) tail[m] += row[k] * x[(first + m) * cols + k];
      }
    }
    float sums[M];
    if constexpr (M == 4) {
      SumsOfFour(df, total[i], sums);  // one interleaved reduction for the four instead of four
    } else {
      for (int m = 0; m < M; ++m) sums[m] = hn::GetLane(hn::SumOfLanes(df, total[i][m]));
    }
    for (int m = 0; m < M; ++m) y[(first + m) * rows + r0 + i] = sums[m] + tail[m];
  }
}

template <int M>
void FloatRows(const PackedMatrix& weights, const float* x, int64_t first, int64_t begin, int64_t end, float* y) {
  int64_t r = begin;
  for (; r + 4 <= end; r += 4) FloatRowTile<M, 4>(weights, x, first, r, y);
  for (; r < end; ++r) FloatRowTile<M, 1>(weights, x, first, r, y);
}

// Runs pass(M, first, begin, end) (M a std::integral_constant: activation rows first .. first + M - 1) over output
// rows [row_begin, row_end) in blocks small enough to stay in L1 while every pass of up to kMaxRowsPerPass
// activation rows goes over them.
template <class PassFn>
void ForRowPasses(int64_t n, int64_t row_begin, int64_t row_end, const PassFn& pass) {
  constexpr int64_t kRowBlock = 16;
  for (int64_t begin = row_begin; begin < row_end; begin += kRowBlock) {
    const int64_t end = std::min(row_end, begin + kRowBlock);
    int64_t first = 0;
    for (; first + 4 <= n; first += 4) pass(std::integral_constant<int, 4>(), first, begin, end);
    switch (n - first) {
      case 3: pass(std::integral_constant<int, 3>(), first, begin, end); break;
      case 2: pass(std::integral_constant<int, 2>(), first, begin, end); break;
      case 1: pass(std::integral_constant<int, 1>(), first, begin, end); break;
      default: break;
    }
  }
}

// ---- activations ----

// QuantizeActivations (int8_activations.h) in SIMD: the same scales, levels (rounded to nearest even) and sums.
// Row r's segments; false where a value is not finite (the caller then starts over with the reference).
bool QuantizeActivationRowSimd(const float* x, int64_t r, int64_t cols, int64_t segment, Int8Activations& out) {
  const hn::ScalableTag<float> df;
  const hn::Rebind<int32_t, decltype(df)> di32;
  const hn::Rebind<int8_t, decltype(df)> di8;
  const int64_t lanes = static_cast<int64_t>(hn::Lanes(df));
  for (int64_t s = 0; s < out.segments; ++s) {
    const float* in = x + r * cols + s * segment;
    const int64_t length = std::min(segment, cols - s * segment);
    bool finite = false;
    const float largest = MaxAbsIfFinite(df, in, length, &finite);
    if (!finite) return false;
    const float scale = largest / 127.0f;
    const float inverse = scale > 0.0f ? 1.0f / scale : 0.0f;
    int8_t* q = out.values.data() + r * out.stride + s * segment;
    auto sums = hn::Zero(di32);
    int64_t j = 0;
    for (; j + lanes <= length; j += lanes) {
      const auto level = hn::Min(hn::Set(df, 127.0f),
                                 hn::Max(hn::Set(df, -127.0f), hn::Round(hn::Mul(hn::LoadU(df, in + j),
                                                                                  hn::Set(df, inverse)))));
      const auto levels = hn::ConvertTo(di32, level);
      sums = hn::Add(sums, levels);
      hn::StoreU(hn::DemoteTo(di8, levels), di8, q + j);
    }
    int32_t sum = hn::GetLane(hn::SumOfLanes(di32, sums));
    for (; j < length; ++j) {
      q[j] = ActivationLevel(in[j], inverse);
      sum += q[j];
    }
    out.scales[r * out.segments + s] = scale;
    out.sums[r * out.segments + s] = sum;
  }
  return true;
}

// Every row, shared out over `pool` when there are enough values to pay for it (a prompt's rows: on one thread
// this serial step capped what a second thread could add to a prefill). A row with a value that is not finite
// sends the whole call back to the reference, which names it in its error on the caller's thread.
void QuantizeActivationsSimd(const float* x, int64_t rows, int64_t cols, int64_t segment, Int8Activations& out,
                             ThreadPool& pool) {
  ShapeActivations(rows, cols, segment, out);
  std::atomic<bool> finite{true};
  pool.ParallelFor(rows, ThreadPool::GrainFor(cols, kMinRowTaskValues),
                   [&](int64_t begin, int64_t end, int) {
                     for (int64_t r = begin; r < end && finite.load(std::memory_order_relaxed); ++r) {
                       if (!QuantizeActivationRowSimd(x, r, cols, segment, out)) finite = false;
                     }
                   });
  if (!finite) QuantizeActivations(x, rows, cols, segment, out);  // throws, naming the value
}

// ---- the CPU backend's kernel table ----

// What a product multiplies: float rows (quantized here for the integer kernels), or int8 rows the caller
// quantized (MatMulQuantized; integer types only).
struct KernelInput {
  const float* x = nullptr;
  const Int8Activations* quantized = nullptr;
  int64_t n = 0;
};

// The int8 rows of `in`: the caller's, or `storage` filled from its float rows.
const Int8Activations& QuantizedRows(const PackedMatrix& weights, const KernelInput& in, Int8Activations& storage,
                                     ThreadPool& pool) {
  if (in.quantized != nullptr) return *in.quantized;
  QuantizeActivationsSimd(in.x, in.n, weights.layout.cols, KernelSegment(weights.layout), storage, pool);
  return storage;
}

// One row per kernel, tried in order; the first whose `applies` holds for the layout runs. A new fast path is one
// row (and its rows function above); the generic row last takes every format the decoder reads.
struct CpuKernel {
  const char* name;
  bool (*applies)(const PackedMatrix& weights);
  // Y [n, rows] for output rows in tasks of `row_grain` on `pool`.
  void (*run)(const PackedMatrix& weights, const KernelInput& in, float* y, ThreadPool& pool, int64_t row_grain);
};

void RunFloat(const PackedMatrix& weights, const KernelInput& in, float* y, ThreadPool& pool, int64_t grain) {
  pool.ParallelFor(weights.layout.rows, grain, [&](int64_t begin, int64_t end, int) {
    ForRowPasses(in.n, begin, end, [&](auto m, int64_t first, int64_t b, int64_t e) {
      FloatRows<decltype(m)::value>(weights, in.x, first, b, e, y);
    });
  });
}

void RunTwoBit(const PackedMatrix& weights, const KernelInput& in, float* y, ThreadPool& pool, int64_t grain) {
  Int8Activations storage;
  const Int8Activations& acts = QuantizedRows(weights, in, storage, pool);
  const TwoBitPlan plan = PlanTwoBit(weights.layout, acts, pool);
  pool.ParallelFor(weights.layout.rows, grain, [&](int64_t begin, int64_t end, int) {
    TwoBitRowsAllPasses(weights, acts, plan, begin, end, y);
  });
}

// The passes of the file-order Q8_0/Q4_0 kernel (RunBlock32, and the rows past RunInterleaved's whole groups).
auto Block32Pass(const PackedMatrix& weights, const Int8Activations& acts, float* y) {
  return [&weights, &acts, y](auto m, int64_t first, int64_t b, int64_t e) {
    Block32Rows<decltype(m)::value>(weights, acts, first, b, e, y);
  };
}

bool Block32Applies(const PackedMatrix& weights) {
  return weights.layout.type == QuantType::kQ8_0 || weights.layout.type == QuantType::kQ4_0;
}

bool InterleavedApplies(const PackedMatrix& weights) {
  return kInterleavedKernel && weights.interleaved != nullptr && HasInterleavedLayout(weights.layout.type);
}

// Whole groups of 8 rows from the interleaved bytes, threaded over groups; the rows past them from the file's.
void RunInterleaved(const PackedMatrix& weights, const KernelInput& in, float* y, ThreadPool& pool, int64_t grain) {
  Int8Activations storage;
  const Int8Activations& acts = QuantizedRows(weights, in, storage, pool);
  const int64_t groups = weights.layout.rows / kInterleavedRows, grouped = groups * kInterleavedRows;
  const auto interleaved = [&](auto m, int64_t first, int64_t b, int64_t e) {
    InterleavedRows<decltype(m)::value>(weights, acts, first, b, e, y);
  };
  // Past one pass of activation rows, pairs of groups in 512-bit vectors where the target has them (a single
  // activation row streams the weights from memory, where the 256-bit kernel already keeps up).
  if (kInterleavedPairs && acts.rows > 1 && groups >= 2) {
    const int64_t pairs = groups / 2;
    pool.ParallelFor(pairs, std::max<int64_t>(1, grain / (2 * kInterleavedRows)), [&](int64_t begin, int64_t end, int) {
      ForRowPasses(acts.rows, begin, end, [&](auto m, int64_t first, int64_t b, int64_t e) {
        InterleavedPairRows<decltype(m)::value>(weights, acts, first, b, e, y);
      });
    });
    if (groups % 2 == 1) ForRowPasses(acts.rows, groups - 1, groups, interleaved);
  } else {
    pool.ParallelFor(groups, std::max<int64_t>(1, grain / kInterleavedRows), [&](int64_t begin, int64_t end, int) {
      ForRowPasses(acts.rows, begin, end, interleaved);
    });
  }
  if (grouped < weights.layout.rows) ForRowPasses(acts.rows, grouped, weights.layout.rows, Block32Pass(weights, acts, y));
}

void RunBlock32(const PackedMatrix& weights, const KernelInput& in, float* y, ThreadPool& pool, int64_t grain) {
  Int8Activations storage;
  const Int8Activations& acts = QuantizedRows(weights, in, storage, pool);
  pool.ParallelFor(weights.layout.rows, grain, [&](int64_t begin, int64_t end, int) {
    ForRowPasses(acts.rows, begin, end, Block32Pass(weights, acts, y));
  });
}

void RunTQ1_0Fused(const PackedMatrix& weights, const KernelInput& in, float* y, ThreadPool& pool, int64_t grain) {
  Int8Activations storage;
  const Int8Activations& acts = QuantizedRows(weights, in, storage, pool);
  pool.ParallelFor(weights.layout.rows, grain, [&](int64_t begin, int64_t end, int) {
    if (acts.rows <= kMaxRowsPerPass) {
      ForRowPasses(acts.rows, begin, end, [&](auto m, int64_t first, int64_t b, int64_t e) {
        TQ1_0FusedRows<decltype(m)::value>(weights, acts, first, b, e, y);
      });
    } else {
      TQ1_0DecodedRows(weights, acts, begin, end, y);
    }
  });
}

void RunTernary16Fused(const PackedMatrix& weights, const KernelInput& in, float* y, ThreadPool& pool,
                       int64_t grain) {
  Int8Activations storage;
  const Int8Activations& acts = QuantizedRows(weights, in, storage, pool);
  // Past one pass, each row's codes by table in column order (Ternary16Rows): no permuted copy of the
  // activations, which for a convolution's thousands of short patch rows cost as much as the products.
  if (acts.rows > kMaxRowsPerPass) {
    pool.ParallelFor(weights.layout.rows, grain,
                     [&](int64_t begin, int64_t end, int) { Ternary16Rows(weights, acts, begin, end, y); });
    return;
  }
  const Base3Plan plan = PlanBase3(weights.layout, acts);
  pool.ParallelFor(weights.layout.rows, grain, [&](int64_t begin, int64_t end, int) {
    ForRowPasses(acts.rows, begin, end, [&](auto m, int64_t first, int64_t b, int64_t e) {
      Ternary16FusedRows<decltype(m)::value>(weights, acts, plan, first, b, e, y);
    });
  });
}

// Kernels that take every activation row against a slice of output rows: rows(weights, acts, begin, end, y).
template <void (*Rows)(const PackedMatrix&, const Int8Activations&, int64_t, int64_t, float*)>
void RunRows(const PackedMatrix& weights, const KernelInput& in, float* y, ThreadPool& pool, int64_t grain) {
  Int8Activations storage;
  const Int8Activations& acts = QuantizedRows(weights, in, storage, pool);
  pool.ParallelFor(weights.layout.rows, grain,
                   [&](int64_t begin, int64_t end, int) { Rows(weights, acts, begin, end, y); });
}

bool Always(const PackedMatrix&) { return true; }

constexpr CpuKernel kCpuKernels[] = {
    {"float", [](const PackedMatrix& weights) { return IsFloatWeight(weights.layout.type); }, RunFloat},
    {"two_bit", TwoBitApplies, RunTwoBit},
    {"interleaved", InterleavedApplies, RunInterleaved},
    {"block32", Block32Applies, RunBlock32},
    {"tq1_0", TQ1_0FusedApplies, RunTQ1_0Fused},
    {"tq1_0_narrow", TQ1_0Applies, RunRows<TQ1_0Rows>},
    {"t1.6", Ternary16FusedApplies, RunTernary16Fused},
    {"t1.6_table", Ternary16Applies, RunRows<Ternary16Rows>},
    {"generic", Always, RunRows<GenericRows>},
};

void RunKernel(const PackedMatrix& weights, const KernelInput& in, float* y, ThreadPool& pool) {
  static_assert(kMaxRowsPerPass == 4, "ForRowPasses unrolls passes of 4");
  const Layout& layout = weights.layout;
  // Rows per task: a multiple of 16, and enough products that a task outweighs handing it to another thread
  // (small layers run on the caller alone).
  constexpr int64_t kRowBlock = 16, kMinTaskProducts = int64_t{1} << 18;
  const int64_t wanted = kMinTaskProducts / std::max<int64_t>(1, layout.cols * in.n);
  const int64_t row_grain = std::max<int64_t>(kRowBlock, (wanted + kRowBlock - 1) / kRowBlock * kRowBlock);
  for (const CpuKernel& kernel : kCpuKernels) {
    if (kernel.applies(weights)) {
      kernel.run(weights, in, y, pool, row_grain);
      return;
    }
  }
}

void MatMulTarget(const PackedMatrix& weights, const float* x, int64_t n, float* y, ThreadPool& pool) {
  RunKernel(weights, KernelInput{x, nullptr, n}, y, pool);
}

void MatMulQuantizedTarget(const PackedMatrix& weights, const Int8Activations& x, float* y, ThreadPool& pool) {
  RunKernel(weights, KernelInput{nullptr, &x, x.rows}, y, pool);
}

#endif  // HWY_TARGET == HWY_SCALAR || HWY_HAVE_SCALABLE

const char* TargetName() { return hwy::TargetName(HWY_TARGET); }

}  // namespace HWY_NAMESPACE
}  // namespace atq
HWY_AFTER_NAMESPACE();

#if HWY_ONCE
namespace atq {

HWY_EXPORT(MatMulTarget);
HWY_EXPORT(MatMulQuantizedTarget);
HWY_EXPORT(TargetName);

void MatMul(const PackedMatrix& weights, const float* x, int64_t n, float* y, ThreadPool& pool) {
  KernelSegment(weights.layout);  // throws for types without a kernel
  if (n <= 0 || weights.layout.rows == 0) return;
  // Float weights against many rows (a prompt, perplexity windows) are a GEMM: the BLAS's, where the build has one.
  if (n >= kBlasMinRows && BlasFloatMatMul(weights, x, n, y, pool)) return;  // false for other types
  HWY_DYNAMIC_DISPATCH(MatMulTarget)(weights, x, n, y, pool);
}

void MatMulQuantized(const PackedMatrix& weights, const Int8Activations& x, float* y, ThreadPool& pool) {
  CheckQuantizedInput(weights, x);
  if (x.rows <= 0 || weights.layout.rows == 0) return;
  HWY_DYNAMIC_DISPATCH(MatMulQuantizedTarget)(weights, x, y, pool);
}

std::string KernelTargetName() { return HWY_DYNAMIC_DISPATCH(TargetName)(); }

}  // namespace atq
#endif  // HWY_ONCE
