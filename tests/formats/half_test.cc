// Known answers for the f16 and bf16 conversions in formats/half.h (IEEE round to nearest even, NaN kept).
#include "formats/half.h"

#include <cmath>
#include <cstdint>
#include <limits>

#include <gtest/gtest.h>

namespace atq {
namespace {

float Pow2(int exponent) { return std::ldexp(1.0f, exponent); }

TEST(HalfTest, F16KnownAnswers) {
  EXPECT_EQ(F32ToF16(1.0f), 0x3C00);
  EXPECT_EQ(F32ToF16(-2.0f), 0xC000);
  EXPECT_EQ(F32ToF16(0.5f), 0x3800);
  EXPECT_EQ(F32ToF16(0.0f), 0x0000);
  EXPECT_EQ(F32ToF16(-0.0f), 0x8000);
  EXPECT_EQ(F32ToF16(65504.0f), 0x7BFF);  // largest finite f16
  // 0.1f = 0x3DCCCCCD; mantissa 1.6 * 2^-4, 1.6 * 1024 = 1638.4 -> 614 = 0x266 above the implicit 1024,
  // exponent -4 + 15 = 11 -> (11 << 10) | 0x266 = 0x2E66.
  EXPECT_EQ(F32ToF16(0.1f), 0x2E66);
  EXPECT_EQ(F32ToF16(Pow2(-14)), 0x0400);            // smallest normal
  EXPECT_EQ(F32ToF16(1023.0f * Pow2(-24)), 0x03FF);  // largest subnormal
  EXPECT_EQ(F32ToF16(Pow2(-24)), 0x0001);            // smallest subnormal
  EXPECT_EQ(F32ToF16(std::numeric_limits<float>::infinity()), 0x7C00);
  EXPECT_EQ(F32ToF16(-std::numeric_limits<float>::infinity()), 0xFC00);
  const uint16_t nan = F32ToF16(std::numeric_limits<float>::quiet_NaN());
  EXPECT_EQ(nan & 0x7C00, 0x7C00);
  EXPECT_NE(nan & 0x03FF, 0);
}

TEST(HalfTest, F16RoundsToNearestEven) {
  // Normal range: f16 spacing at 1.0 is 2^-10; halfway points round to the even mantissa.
  EXPECT_EQ(F32ToF16(1.0f + Pow2(-11)), 0x3C00);              // tie between 0x3C00 and 0x3C01 -> even
  EXPECT_EQ(F32ToF16(1.0f + 3 * Pow2(-11)), 0x3C02);          // tie between 0x3C01 and 0x3C02 -> even
  EXPECT_EQ(F32ToF16(1.0f + Pow2(-11) + Pow2(-20)), 0x3C01);  // just above the tie
  EXPECT_EQ(F32ToF16(1.0f + Pow2(-11) - Pow2(-22)), 0x3C00);  // just below the tie
  // Overflow: 65520 is halfway between 65504 (0x7BFF, odd) and 65536 (Inf) -> Inf; just below stays finite.
  EXPECT_EQ(F32ToF16(65520.0f), 0x7C00);
  EXPECT_EQ(F32ToF16(std::nextafter(65520.0f, 0.0f)), 0x7BFF);
  // Subnormal range: spacing 2^-24.
  EXPECT_EQ(F32ToF16(Pow2(-25)), 0x0000);      // tie between 0 and 1 -> 0
  EXPECT_EQ(F32ToF16(3 * Pow2(-25)), 0x0002);  // tie between 1 and 2 -> 2
  EXPECT_EQ(F32ToF16(5 * Pow2(-25)), 0x0002);  // tie between 2 and 3 -> 2
  EXPECT_EQ(F32ToF16(Pow2(-25) + Pow2(-35)), 0x0001);
  EXPECT_EQ(F32ToF16(-3 * Pow2(-25)), 0x8002);
  // Rounding up out of the subnormals into the smallest normal.
  EXPECT_EQ(F32ToF16(1023.5f * Pow2(-24)), 0x0400);
}

TEST(HalfTest, F16ToF32KnownAnswers) {
  EXPECT_EQ(F16ToF32(0x3C00), 1.0f);
  EXPECT_EQ(F16ToF32(0x7BFF), 65504.0f);
  EXPECT_EQ(F16ToF32(0x0001), Pow2(-24));
  EXPECT_EQ(F16ToF32(0x03FF), 1023.0f * Pow2(-24));
  EXPECT_EQ(F16ToF32(0x3555), 0.333251953125f);  // (1024 + 341) / 1024 * 2^-2
  EXPECT_TRUE(std::signbit(F16ToF32(0x8000)));
  EXPECT_EQ(F16ToF32(0xFC00), -std::numeric_limits<float>::infinity());
  EXPECT_TRUE(std::isnan(F16ToF32(0x7E00)));
}

TEST(HalfTest, F16RoundTripsEveryValue) {
  for (uint32_t h = 0; h < 0x10000; ++h) {
    const uint16_t bits = static_cast<uint16_t>(h);
    const bool is_nan = (bits & 0x7C00) == 0x7C00 && (bits & 0x03FF) != 0;
    if (is_nan) {
      EXPECT_TRUE(std::isnan(F16ToF32(bits))) << std::hex << h;
    } else {
      EXPECT_EQ(F32ToF16(F16ToF32(bits)), bits) << std::hex << h;
    }
  }
}

// ggml's own fp32 -> fp16 (ggml_compute_fp32_to_fp16 in ggml-impl.h, from Marat Dukhan's FP16 library), restated
// here as an independent oracle: the float adder does the rounding, by adding a power of two whose ulp is the
// f16 ulp at the value's exponent (2^-24 at least, for subnormals); scaling by 2^112 then 2^-110 first sends
// everything that rounds past 65504 to Inf. llama.cpp stores every block scale through this function (or F16C's
// vcvtps2ph, which rounds the same way), so atq's scales are byte-identical only if F32ToF16 agrees with it.
uint16_t GgmlFp32ToFp16(float f) {
  float base = (std::fabs(f) * 0x1.0p+112f) * 0x1.0p-110f;
  const uint32_t w = FloatBits(f);
  const uint32_t shl1_w = w + w;
  const uint32_t sign = w & 0x80000000u;
  uint32_t bias = shl1_w & 0xFF000000u;
  if (bias < 0x71000000u) bias = 0x71000000u;
  base = BitsFloat((bias >> 1) + 0x07800000u) + base;
  const uint32_t bits = FloatBits(base);
  const uint32_t nonsign = ((bits >> 13) & 0x00007C00u) + (bits & 0x00000FFFu);
  return static_cast<uint16_t>((sign >> 16) | (shl1_w > 0xFF000000u ? 0x7E00u : nonsign));
}

TEST(HalfTest, F16MatchesGgmlConversion) {
  // Every float whose bits are a multiple of 251 (17 million values over all exponents, both signs, NaNs
  // included), and every float within 2 ulps of each f16 value and of each midpoint between neighbours.
  int mismatches = 0;
  auto check = [&](uint32_t bits) {
    const float f = BitsFloat(bits);
    if (F32ToF16(f) != GgmlFp32ToFp16(f) && ++mismatches <= 10) {
      ADD_FAILURE() << std::hex << "float 0x" << bits << ": atq 0x" << F32ToF16(f) << ", ggml 0x" << GgmlFp32ToFp16(f);
    }
  };
  for (uint64_t bits = 0; bits <= 0xFFFFFFFFu; bits += 251) check(static_cast<uint32_t>(bits));
  for (uint32_t h = 0; h < 0x7C00; ++h) {
    const uint32_t exact = FloatBits(F16ToF32(static_cast<uint16_t>(h)));
    const uint32_t midpoint =
        FloatBits((F16ToF32(static_cast<uint16_t>(h)) + F16ToF32(static_cast<uint16_t>(h + 1))) / 2);
    for (uint32_t center : {exact, midpoint}) {
      for (uint32_t delta = 0; delta <= 4; ++delta) {
        check(center + delta - 2);
        check((center + delta - 2) | 0x80000000u);
      }
    }
  }
  EXPECT_EQ(mismatches, 0);
}

TEST(HalfTest, Bf16KnownAnswers) {
  EXPECT_EQ(F32ToBF16(1.0f), 0x3F80);
  EXPECT_EQ(F32ToBF16(-2.0f), 0xC000);
  EXPECT_EQ(F32ToBF16(std::numeric_limits<float>::infinity()), 0x7F80);
  EXPECT_EQ(BF16ToF32(0x3F80), 1.0f);
  EXPECT_EQ(BF16ToF32(0x4049), 3.140625f);  // 1.5703125 * 2
  // Ties: bf16 keeps the top 16 bits of the float; the low 16 bits 0x8000 are exactly half an ulp.
  EXPECT_EQ(F32ToBF16(BitsFloat(0x3F808000u)), 0x3F80);  // tie, 0x3F80 even -> down
  EXPECT_EQ(F32ToBF16(BitsFloat(0x3F818000u)), 0x3F82);  // tie, 0x3F81 odd -> up
  EXPECT_EQ(F32ToBF16(BitsFloat(0x3F808001u)), 0x3F81);  // above the tie
  EXPECT_EQ(F32ToBF16(BitsFloat(0x3F807FFFu)), 0x3F80);  // below the tie
  EXPECT_EQ(F32ToBF16(BitsFloat(0x7F7FFFFFu)), 0x7F80);  // float max rounds up to Inf, as torch does
  // NaN stays NaN (quiet), including a signalling NaN whose payload sits only in the low 16 bits.
  const uint16_t nan = F32ToBF16(BitsFloat(0x7F800001u));
  EXPECT_TRUE(std::isnan(BF16ToF32(nan)));
  EXPECT_EQ(nan & 0x0040, 0x0040);
}

}  // namespace
}  // namespace atq
