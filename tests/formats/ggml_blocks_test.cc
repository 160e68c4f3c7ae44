// Known-answer bytes for llama.cpp's Q8_0, Q4_0, TQ2_0 and TQ1_0 blocks, worked out by hand from the
// arithmetic of ggml-quants.c's reference quantizers (quantize_row_*_ref) and ggml-common.h's block layouts.
#include "formats/ggml_blocks.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <random>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "formats/half.h"
#include "formats/quant_type.h"
#include "util/error.h"

namespace atq {
namespace {

std::vector<uint8_t> QuantizeRow(QuantType type, const std::vector<float>& x) {
  return Quantize(Layout{type, 1, static_cast<int64_t>(x.size()), Granularity::kTensor, 0}, x.data());
}

std::vector<float> DequantizeRow(QuantType type, const std::vector<uint8_t>& bytes, int64_t cols) {
  return Dequantize(Layout{type, 1, cols, Granularity::kTensor, 0}, bytes.data(), static_cast<int64_t>(bytes.size()));
}

// ---- Q8_0: {f16 d, int8 qs[32]}; d = amax / 127, q = roundf(x * (1/d)) ----

TEST(GgmlBlocksTest, Q8_0KnownBlockExactScale) {
  // amax = 63.5 -> d = 63.5 / 127 = 0.5 (f16 0x3800), 1/d = 2, q = roundf(2x), roundf rounding halves away
  // from zero (numpy's round, used by gguf-py, would give 0 for 0.5):
  //   63.5 -> 127 (0x7F)   -63.5 -> -127 (0x81)   0.25 -> roundf(0.5) = 1    -0.25 -> -1 (0xFF)
  //   0.75 -> roundf(1.5) = 2   1.0 -> 2   -1.25 -> roundf(-2.5) = -3 (0xFD)   10.3 -> roundf(20.6) = 21 (0x15)
  //   the other 24 weights are 0 -> 0.
  std::vector<float> x(32, 0.0f);
  const float head[] = {63.5f, -63.5f, 0.25f, -0.25f, 0.75f, 1.0f, -1.25f, 10.3f};
  std::copy(std::begin(head), std::end(head), x.begin());
  std::vector<uint8_t> expected = {0x00, 0x38, 0x7F, 0x81, 0x01, 0xFF, 0x02, 0x02, 0xFD, 0x15};
  expected.resize(34, 0x00);
  EXPECT_EQ(QuantizeRow(QuantType::kQ8_0, x), expected);

  // Dequantized: q * 0.5.
  const std::vector<float> back = DequantizeRow(QuantType::kQ8_0, expected, 32);
  const float want[] = {63.5f, -63.5f, 0.5f, -0.5f, 1.0f, 1.0f, -1.5f, 10.5f};
  for (int j = 0; j < 8; ++j) EXPECT_EQ(back[j], want[j]) << j;
  for (int j = 8; j < 32; ++j) EXPECT_EQ(back[j], 0.0f) << j;
}

TEST(GgmlBlocksTest, Q8_0KnownBlockRoundedScale) {
  // amax = 1 -> d = 1/127 = 0.0078740157. In f16, d = 2^-7 * 1.0078740: exponent -7 + 15 = 8, mantissa
  // 0.0078740 * 1024 = 8.06 -> 8, so 0x2000 | 8 = 0x2008 (= 0.00787353515625). The codes use the unrounded d,
  // 1/d = 127: q = roundf(127 x):
  //   1.0 -> 127 (0x7F)   -0.3 -> roundf(-38.1) = -38 (0xDA)   0.1 -> roundf(12.7) = 13 (0x0D)
  std::vector<float> x(32, 0.0f);
  x[0] = 1.0f;
  x[1] = -0.3f;
  x[31] = 0.1f;
  std::vector<uint8_t> expected(34, 0x00);
  expected[0] = 0x08;
  expected[1] = 0x20;
  expected[2] = 0x7F;
  expected[3] = 0xDA;
  expected[33] = 0x0D;
  EXPECT_EQ(QuantizeRow(QuantType::kQ8_0, x), expected);
  // Dequantizing uses the f16 scale: 127 * 0.00787353515625 = 0.99993896484375.
  EXPECT_EQ(DequantizeRow(QuantType::kQ8_0, expected, 32)[0], 0.99993896484375f);
}

// ---- Q4_0: {f16 d, uint8 qs[16]}; byte j = code(x[j]) | code(x[j + 16]) << 4 ----

TEST(GgmlBlocksTest, Q4_0KnownBlock) {
  // The weight of largest |x| keeps its sign: max = +4 -> d = 4 / -8 = -0.5 (f16 0xB800), 1/d = -2,
  // code = min(15, (int8_t)(-2x + 8.5)), truncating toward zero:
  //   x[0]  = 4     -> (int)0.5 = 0             x[16] = -4    -> (int)16.5 = 16 -> min 15 (the +8 end is clamped)
  //   x[1]  = 1     -> (int)6.5 = 6             x[17] = 0.3   -> (int)7.9 = 7
  //   x[2]  = 0.2   -> (int)8.1 = 8             x[18] = -0.25 -> (int)9.0 = 9 (a tie goes to the larger code)
  //   x[3]  = -1.5  -> (int)11.5 = 11           x[19] = 3.9   -> (int)0.6999998 = 0
  //   zeros -> (int)8.5 = 8
  // Bytes: 0 | 15<<4 = 0xF0, 6 | 7<<4 = 0x76, 8 | 9<<4 = 0x98, 11 | 0<<4 = 0x0B, then 8 | 8<<4 = 0x88.
  std::vector<float> x(32, 0.0f);
  x[0] = 4.0f;
  x[16] = -4.0f;
  x[1] = 1.0f;
  x[17] = 0.3f;
  x[2] = 0.2f;
  x[18] = -0.25f;
  x[3] = -1.5f;
  x[19] = 3.9f;
  std::vector<uint8_t> expected = {0x00, 0xB8, 0xF0, 0x76, 0x98, 0x0B};
  expected.resize(18, 0x88);
  EXPECT_EQ(QuantizeRow(QuantType::kQ4_0, x), expected);

  // Dequantized: (code - 8) * -0.5.
  const std::vector<float> back = DequantizeRow(QuantType::kQ4_0, expected, 32);
  EXPECT_EQ(back[0], 4.0f);
  EXPECT_EQ(back[16], -3.5f);
  EXPECT_EQ(back[1], 1.0f);
  EXPECT_EQ(back[17], 0.5f);
  EXPECT_EQ(back[2], 0.0f);
  EXPECT_EQ(back[18], -0.5f);
  EXPECT_EQ(back[3], -1.5f);
  EXPECT_EQ(back[19], 4.0f);
  EXPECT_EQ(back[31], 0.0f);
}

TEST(GgmlBlocksTest, Q4_0TiesOnMagnitudeKeepTheFirstWeight) {
  // ggml replaces max only when |x| is strictly larger, so of -2 and +2 the first wins:
  //   {-2, 2, ...} -> max = -2, d = 0.25 (0x3400);  {2, -2, ...} -> max = 2, d = -0.25 (0xB400).
  // With d = 0.25: -2 -> (int)(-8 + 8.5) = 0, 2 -> (int)16.5 -> 15; byte 0 = 0 | 8<<4 (x[16] = 0) = 0x80,
  // byte 1 = 15 | 8<<4 = 0x8F.
  std::vector<float> x(32, 0.0f);
  x[0] = -2.0f;
  x[1] = 2.0f;
  std::vector<uint8_t> bytes = QuantizeRow(QuantType::kQ4_0, x);
  EXPECT_EQ(bytes[0], 0x00);
  EXPECT_EQ(bytes[1], 0x34);
  EXPECT_EQ(bytes[2], 0x80);
  EXPECT_EQ(bytes[3], 0x8F);
  std::swap(x[0], x[1]);
  bytes = QuantizeRow(QuantType::kQ4_0, x);
  EXPECT_EQ(bytes[1], 0xB4);
  EXPECT_EQ(bytes[2], 0x80);
  EXPECT_EQ(bytes[3], 0x8F);
}

TEST(GgmlBlocksTest, AllZeroBlocks) {
  // d = 0 and 1/d is taken as 0: Q8_0 codes 0; Q4_0 codes (int)8.5 = 8 (0x88 per byte) and, since its
  // d = max / -8 = 0.0f / -8 is negative zero, the f16 scale 0x8000 (llama.cpp writes the same); TQ digits
  // lroundf(0) + 1 = 1: TQ2_0 0b01010101 = 0x55; TQ1_0 qs 1+3+9+27+81 = 121 -> (121*256 + 242) / 243 = 128,
  // qh (1+3+9+27)*3 = 120 -> (120*256 + 242) / 243 = 127.
  EXPECT_EQ(QuantizeRow(QuantType::kQ8_0, std::vector<float>(32, 0.0f)), std::vector<uint8_t>(34, 0x00));
  std::vector<uint8_t> q4(18, 0x88);
  q4[0] = 0x00;
  q4[1] = 0x80;
  EXPECT_EQ(QuantizeRow(QuantType::kQ4_0, std::vector<float>(32, 0.0f)), q4);
  std::vector<uint8_t> tq2(66, 0x55);
  tq2[64] = tq2[65] = 0x00;
  EXPECT_EQ(QuantizeRow(QuantType::kTQ2_0, std::vector<float>(256, 0.0f)), tq2);
  std::vector<uint8_t> tq1(54, 0x80);
  for (int j = 48; j < 52; ++j) tq1[j] = 0x7F;
  tq1[52] = tq1[53] = 0x00;
  EXPECT_EQ(QuantizeRow(QuantType::kTQ1_0, std::vector<float>(256, 0.0f)), tq1);
}

// ---- TQ2_0: {uint8 qs[64], f16 d}; byte 32s + m holds weights 128s + m + 32n at bits 2n (n = 0..3) ----

TEST(GgmlBlocksTest, TQ2_0KnownBlock) {
  // amax = 2 -> d = 2 (f16 0x4000), 1/d = 0.5, digit = lroundf(x/2) + 1 (halves away from zero):
  //   byte 0  (weights 0, 32, 64, 96):     2 -> 2, -2 -> 0, 1 -> lroundf(0.5) = 1 -> 2, 0.9 -> 1
  //            = 2 | 0<<2 | 2<<4 | 1<<6 = 0x62
  //   byte 33 (weights 129, 161, 193, 225): -1 -> lroundf(-0.5) = -1 -> 0, zeros -> 1: 0 | 1<<2 | 1<<4 | 1<<6 = 0x54
  //   byte 63 (weights 159, 191, 223, 255): weight 255 = -1.5 -> -1 -> 0 in bits 6..7: 0x55 & 0x3F = 0x15
  //   every other byte: four zeros -> 0x55.
  std::vector<float> x(256, 0.0f);
  x[0] = 2.0f;
  x[32] = -2.0f;
  x[64] = 1.0f;
  x[96] = 0.9f;
  x[129] = -1.0f;
  x[255] = -1.5f;
  std::vector<uint8_t> expected(66, 0x55);
  expected[0] = 0x62;
  expected[33] = 0x54;
  expected[63] = 0x15;
  expected[64] = 0x00;
  expected[65] = 0x40;
  EXPECT_EQ(QuantizeRow(QuantType::kTQ2_0, x), expected);

  const std::vector<float> back = DequantizeRow(QuantType::kTQ2_0, expected, 256);
  for (int i = 0; i < 256; ++i) {
    const float trit = (i == 0 || i == 64) ? 1.0f : (i == 32 || i == 129 || i == 255) ? -1.0f : 0.0f;
    EXPECT_EQ(back[i], 2.0f * trit) << i;
  }
}

// ---- TQ1_0: {uint8 qs[48], uint8 qh[4], f16 d} ----
// qs[m], m < 32:       weights m, m+32, m+64, m+96, m+128 as base-3 digits, the first most significant
// qs[32 + m], m < 16:  weights 160+m, 176+m, 192+m, 208+m, 224+m
// qh[m], m < 4:        weights 240+m, 244+m, 248+m, 252+m, then a zero fifth digit
// A byte holding digit value v (0..242) stores ceil(v * 256 / 243) = (v*256 + 242) / 243.

TEST(GgmlBlocksTest, TQ1_0KnownBlock) {
  // amax = 1 -> d = 1 (f16 0x3C00), digit = lroundf(x) + 1.
  //   qs[0]:  x[0] = 1 -> 2, x[32] = -1 -> 0, x[64] = 0.6 -> 2, x[96] = -0.4 -> 1, x[128] = 0.5 -> lroundf = 1 -> 2
  //           v = 2*81 + 0*27 + 2*9 + 1*3 + 2 = 185 -> (185*256 + 242) / 243 = 47602 / 243 = 195 (0xC3)
  //   qs[32]: x[160], x[176], x[192], x[208], x[224] = 1 -> v = 242 -> 62194 / 243 = 255 (0xFF)
  //   qs[47]: x[175], x[191], x[207], x[223], x[239] = -1 -> v = 0 -> 242 / 243 = 0 (0x00)
  //   qh[3]:  x[243] = 1 -> 2, x[247] = 0 -> 1, x[251] = -1 -> 0, x[255] = 1 -> 2
  //           v = (2*27 + 1*9 + 0*3 + 2) * 3 = 195 -> (195*256 + 242) / 243 = 50162 / 243 = 206 (0xCE)
  //   other qs bytes 0x80, other qh bytes 0x7F (all-zero digits, see AllZeroBlocks).
  std::vector<float> x(256, 0.0f);
  x[0] = 1.0f;
  x[32] = -1.0f;
  x[64] = 0.6f;
  x[96] = -0.4f;
  x[128] = 0.5f;
  for (int i : {160, 176, 192, 208, 224}) x[i] = 1.0f;
  for (int i : {175, 191, 207, 223, 239}) x[i] = -1.0f;
  x[243] = 1.0f;
  x[251] = -1.0f;
  x[255] = 1.0f;
  std::vector<uint8_t> expected(54, 0x80);
  for (int j = 48; j < 52; ++j) expected[j] = 0x7F;
  expected[0] = 0xC3;
  expected[32] = 0xFF;
  expected[47] = 0x00;
  expected[51] = 0xCE;
  expected[52] = 0x00;
  expected[53] = 0x3C;
  EXPECT_EQ(QuantizeRow(QuantType::kTQ1_0, x), expected);

  // Decoding digit n of a byte q: ((uint8_t)(q * 3^n) * 3) >> 8. For 195: n=0: 585>>8 = 2; n=1: 195*3 = 585 ->
  // 73 (mod 256), 219>>8 = 0; n=2: 1755 -> 219, 657>>8 = 2; n=3: 5265 -> 145, 435>>8 = 1; n=4: 15795 -> 179,
  // 537>>8 = 2. So weights 0, 32, 64, 96, 128 come back as 1, -1, 1, 0, 1.
  const std::vector<float> back = DequantizeRow(QuantType::kTQ1_0, expected, 256);
  for (int i = 0; i < 256; ++i) EXPECT_EQ(back[i], std::round(x[i])) << i;  // lroundf(x / amax), amax 1
}

TEST(GgmlBlocksTest, TQ1_0EveryByteValueDecodesToItsDigits) {
  // For every digit value v, the stored byte ceil(v*256/243) decodes to v's base-3 digits (most significant
  // first), which is why ggml stores the fixed-point form rather than v.
  for (int v = 0; v < 243; ++v) {
    std::vector<float> x(256, 0.0f);
    x[1] = 1.0f;  // fixes amax = 1 whatever byte 0 holds (weight 1 belongs to byte 1)
    int rest = v;
    for (int n = 4; n >= 0; --n) {  // weight 32n is digit n (n = 0 most significant)
      x[32 * n] = static_cast<float>(rest % 3 - 1);
      rest /= 3;
    }
    const std::vector<uint8_t> bytes = QuantizeRow(QuantType::kTQ1_0, x);
    EXPECT_EQ(bytes[0], (v * 256 + 242) / 243) << v;
    const std::vector<float> back = DequantizeRow(QuantType::kTQ1_0, bytes, 256);
    for (int n = 0; n < 5; ++n) EXPECT_EQ(back[32 * n], x[32 * n]) << "v " << v << " digit " << n;
  }
}

// ---- every position, random data: each format against its defining formula ----

std::vector<float> RandomBlocks(int64_t count, uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> normal(0.0f, 0.05f);
  std::vector<float> x(static_cast<size_t>(count));
  for (float& v : x) v = normal(rng);
  return x;
}

float F16Rounded(float x) { return F16ToF32(F32ToF16(x)); }

TEST(GgmlBlocksTest, EveryWeightFollowsTheReferenceFormula) {
  // Two rows of several blocks each: blocks are contiguous and rows hold whole blocks, as in ggml.
  for (QuantType type : {QuantType::kQ8_0, QuantType::kQ4_0, QuantType::kTQ1_0, QuantType::kTQ2_0}) {
    const int64_t block = Traits(type).block_size;
    const Layout layout{type, 2, 3 * block, Granularity::kTensor, 0};
    const std::vector<float> x = RandomBlocks(layout.rows * layout.cols, 42 + static_cast<uint32_t>(type));
    const std::vector<uint8_t> packed = Quantize(layout, x.data());
    const std::vector<float> back = Dequantize(layout, packed.data(), static_cast<int64_t>(packed.size()));
    for (int64_t b = 0; b < layout.rows * layout.cols / block; ++b) {
      const float* xb = x.data() + b * block;
      float amax = 0.0f, max = 0.0f;
      for (int64_t j = 0; j < block; ++j) {
        if (amax < std::fabs(xb[j])) {
          amax = std::fabs(xb[j]);
          max = xb[j];
        }
      }
      for (int64_t j = 0; j < block; ++j) {
        float want = 0.0f;
        if (type == QuantType::kQ8_0) {
          const float d = amax / 127;
          want = std::round(xb[j] * (1.0f / d)) * F16Rounded(d);
        } else if (type == QuantType::kQ4_0) {
          const float d = max / -8;
          const float scaled = xb[j] * (1.0f / d);
          want = static_cast<float>(std::min(15, static_cast<int>(scaled + 8.5f)) - 8) * F16Rounded(d);
        } else {
          want = static_cast<float>(std::lround(xb[j] * (1.0f / amax))) * F16Rounded(amax);
        }
        ASSERT_EQ(back[b * block + j], want) << TypeName(type) << " block " << b << " weight " << j;
      }
    }
  }
}

TEST(GgmlBlocksTest, BlocksBelowFloatRangeOfTheInverseScale) {
  // A block whose largest |x| is ~1e-39 has 1/d = Inf in float; ggml's conversion of x * Inf is undefined in C
  // (on x86 it yields codes 0 / digit 1). atq gives those bytes without undefined behaviour, and the f16 scale
  // is 0, so everything dequantizes to 0.
  for (QuantType type : {QuantType::kQ8_0, QuantType::kQ4_0, QuantType::kTQ1_0, QuantType::kTQ2_0}) {
    std::vector<float> x(static_cast<size_t>(Traits(type).block_size), 0.0f);
    x[0] = 1e-39f;
    x[1] = -2e-39f;
    const std::vector<uint8_t> bytes = QuantizeRow(type, x);
    for (float v : DequantizeRow(type, bytes, static_cast<int64_t>(x.size()))) EXPECT_EQ(v, 0.0f) << TypeName(type);
  }
  std::vector<float> x(32, 0.0f);
  x[0] = 1e-39f;
  EXPECT_EQ(QuantizeRow(QuantType::kQ8_0, x), std::vector<uint8_t>(34, 0x00));
}

TEST(GgmlBlocksTest, ScalesBeyondFloat16AreAnError) {
  // llama.cpp would store an Inf scale (every weight then dequantizes to Inf or NaN); atq refuses and names the
  // type, row and block. Q8_0 overflows when amax / 127 rounds past 65504, i.e. amax >= 65520 * 127 (65520 is
  // halfway between 65504 and 65536, and rounds to even: Inf).
  struct Case {
    QuantType type;
    float too_large;
    float fits;
  };
  for (const Case& c :
       {Case{QuantType::kQ8_0, 65520.0f * 127, 65504.0f * 127}, Case{QuantType::kQ4_0, 65520.0f * 8, 65504.0f * 8},
        Case{QuantType::kTQ1_0, 65520.0f, 65504.0f}, Case{QuantType::kTQ2_0, 65520.0f, 65504.0f}}) {
    const int64_t block = Traits(c.type).block_size;
    std::vector<float> x(static_cast<size_t>(2 * block), 1.0f);
    x[block + 5] = c.fits;
    EXPECT_NO_THROW(QuantizeRow(c.type, x)) << TypeName(c.type);
    x[block + 5] = c.too_large;
    try {
      QuantizeRow(c.type, x);
      ADD_FAILURE() << TypeName(c.type) << ": no error";
    } catch (const Error& e) {
      const std::string message = e.what();
      EXPECT_NE(message.find(std::string(TypeName(c.type)) + ": row 0, block 1 needs scale"), std::string::npos)
          << message;
    }
  }
}

}  // namespace
}  // namespace atq
