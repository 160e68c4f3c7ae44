// Known-answer bytes for atq's own packed formats (ternary2, ternary1.6, uniform b-bit) worked out by hand from
// the layout in atq_packed.h, and the errors PackAtq/UnpackAtq give for codes and sizes that do not fit.
#include "formats/atq_packed.h"

#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "formats/quant_type.h"
#include "util/error.h"

namespace atq {
namespace {

// Little-endian bytes of a float32, for writing expected scales.
std::vector<uint8_t> FloatBytes(float value) {
  uint8_t bytes[4];
  std::memcpy(bytes, &value, 4);
  return {bytes, bytes + 4};
}

std::vector<uint8_t> Concat(std::initializer_list<std::vector<uint8_t>> parts) {
  std::vector<uint8_t> out;
  for (const auto& part : parts) out.insert(out.end(), part.begin(), part.end());
  return out;
}

std::vector<uint8_t> Pack(const Layout& layout, const AtqCodes& codes) {
  std::vector<uint8_t> out(static_cast<size_t>(AtqPackedBytes(layout)), 0xEE);  // 0xEE: catches unwritten bytes
  PackAtq(layout, codes, out.data());
  return out;
}

// The message of the atq::Error that f throws, or "" (and a test failure) when it does not throw.
template <typename F>
std::string ErrorOf(F f) {
  try {
    f();
  } catch (const Error& e) {
    return e.what();
  }
  ADD_FAILURE() << "expected an atq::Error";
  return "";
}

bool Contains(const std::string& text, const std::string& part) { return text.find(part) != std::string::npos; }

// ---- layout arithmetic ----

TEST(AtqPackedTest, LayoutArithmetic) {
  const Layout t2{QuantType::kTernary2, 3, 5, Granularity::kChannel, 0};
  EXPECT_EQ(RowBytes(t2), 2);  // ceil(5 / 4)
  EXPECT_EQ(CodesBytes(t2), 6);
  EXPECT_EQ(ScalesOffset(t2), 8);  // 6 rounded up to 4
  EXPECT_EQ(NumScaleGroups(t2), 3);
  EXPECT_EQ(AtqPackedBytes(t2), 8 + 3 * 4);

  const Layout t16{QuantType::kTernary1_6, 2, 11, Granularity::kGroup, 4};
  EXPECT_EQ(RowBytes(t16), 3);      // ceil(11 / 5)
  EXPECT_EQ(GroupsPerRow(t16), 3);  // 4 + 4 + a tail of 3
  EXPECT_EQ(NumScaleGroups(t16), 6);
  EXPECT_EQ(ScaleGroupOf(t16, 0, 3), 0);
  EXPECT_EQ(ScaleGroupOf(t16, 0, 4), 1);
  EXPECT_EQ(ScaleGroupOf(t16, 0, 10), 2);
  EXPECT_EQ(ScaleGroupOf(t16, 1, 0), 3);
  EXPECT_EQ(ScaleGroupOf(t16, 1, 10), 5);
  EXPECT_EQ(AtqPackedBytes(t16), 8 + 6 * 4);

  const Layout u5{QuantType::kUniform5Asym, 1, 3, Granularity::kTensor, 0};
  EXPECT_EQ(RowBytes(u5), 2);  // 15 bits
  EXPECT_EQ(ScaleGroupOf(u5, 0, 2), 0);
  EXPECT_EQ(AtqPackedBytes(u5), 4 + 4 + 1);  // codes + pad, one scale, one zero point

  for (int bits = 2; bits <= 8; ++bits) {
    const auto sym = static_cast<QuantType>(static_cast<uint32_t>(QuantType::kUniform2Sym) + bits - 2);
    const auto asym = static_cast<QuantType>(static_cast<uint32_t>(QuantType::kUniform2Asym) + bits - 2);
    EXPECT_EQ(UniformBits(sym), bits);
    EXPECT_EQ(UniformBits(asym), bits);
    EXPECT_FALSE(IsAsymmetric(sym));
    EXPECT_TRUE(IsAsymmetric(asym));
  }
  EXPECT_FALSE(IsAsymmetric(QuantType::kTernary2));
  EXPECT_THROW(UniformBits(QuantType::kTernary2), Error);
  EXPECT_THROW(UniformBits(QuantType::kQ4_0), Error);
  EXPECT_THROW(RowBytes(Layout{QuantType::kQ8_0, 1, 32, Granularity::kTensor, 0}), Error);
}

// ---- ternary2: weight j in byte j/4, bits 2(j%4); code = trit + 1; padding code 1 ----

TEST(AtqPackedTest, Ternary2RowsWithTail) {
  // 3 rows of 5, one scale per row. Threshold 0.7 * mean|w|; scale = mean |w| above it.
  //   row 0: {1, -1, 0.1, 0.5, -2}: mean 4.6/5 = 0.92, threshold 0.644: keeps 1, -1, -2 -> scale 4/3,
  //          codes 2 0 1 1 0 -> byte 0 = 2 | 0<<2 | 1<<4 | 1<<6 = 0x52, byte 1 = 0 | pad 1<<2 | 1<<4 | 1<<6 = 0x54
  //   row 1: {0, 0, 0, 0, 3}: mean 0.6, threshold 0.42: keeps 3 -> scale 3, codes 1 1 1 1 2
  //          -> 1 | 1<<2 | 1<<4 | 1<<6 = 0x55, 2 | 0x54 = 0x56
  //   row 2: {-0.5, 0.5, 0.5, -0.5, 0.5}: all kept -> scale 0.5, codes 0 2 2 0 2 -> 0 | 2<<2 | 2<<4 = 0x28, 0x56
  // Codes take 6 bytes, padded with 2 zero bytes to 8, then the scales 4/3 (0x3FAAAAAB), 3, 0.5.
  const Layout layout{QuantType::kTernary2, 3, 5, Granularity::kChannel, 0};
  const std::vector<float> w = {1, -1, 0.1f, 0.5f, -2, 0, 0, 0, 0, 3, -0.5f, 0.5f, 0.5f, -0.5f, 0.5f};
  const std::vector<uint8_t> expected = Concat(
      {{0x52, 0x54, 0x55, 0x56, 0x28, 0x56, 0x00, 0x00}, {0xAB, 0xAA, 0xAA, 0x3F}, FloatBytes(3.0f), FloatBytes(0.5f)});
  EXPECT_EQ(Quantize(layout, w.data()), expected);

  const std::vector<float> back = Dequantize(layout, expected.data(), static_cast<int64_t>(expected.size()));
  const float third = 4.0f / 3.0f;
  const std::vector<float> want = {third, -third, 0, 0, -third, 0, 0, 0, 0, 3, -0.5f, 0.5f, 0.5f, -0.5f, 0.5f};
  EXPECT_EQ(back, want);
}

// ---- ternary1.6: weights 5i..5i+4 in byte i as sum code_k 3^k; padding code 1 ----

TEST(AtqPackedTest, Ternary1_6RowWithTail) {
  // 1 row of 7, one scale. {1, -1, 0, 1, 1, -1, 0.2}: mean 5.2/7 = 0.743, threshold 0.52: the six +-1 are kept
  // -> scale 1; codes 2 0 1 2 2 | 0 1 + padding 1 1 1:
  //   byte 0 = 2 + 0*3 + 1*9 + 2*27 + 2*81 = 227 (0xE3)
  //   byte 1 = 0 + 1*3 + 1*9 + 1*27 + 1*81 = 120 (0x78)
  // then 2 zero bytes of padding and the scale 1.0 (0x3F800000).
  const Layout layout{QuantType::kTernary1_6, 1, 7, Granularity::kTensor, 0};
  const std::vector<float> w = {1, -1, 0, 1, 1, -1, 0.2f};
  const std::vector<uint8_t> expected = Concat({{0xE3, 0x78, 0x00, 0x00}, FloatBytes(1.0f)});
  EXPECT_EQ(Quantize(layout, w.data()), expected);
  const std::vector<float> back = Dequantize(layout, expected.data(), static_cast<int64_t>(expected.size()));
  EXPECT_EQ(back, (std::vector<float>{1, -1, 0, 1, 1, -1, 0}));
}

TEST(AtqPackedTest, Ternary1_6DigitsArePowersOfThree) {
  // Each of the 5 positions of a byte weighs 3^k, the first weight least significant:
  //   codes 1 0 0 0 0 -> 1;  0 1 0 0 0 -> 3;  0 0 1 0 0 -> 9;  0 0 0 1 0 -> 27;  0 0 0 0 1 -> 81;
  //   2 2 2 2 2 -> 242 (the largest byte);  0 0 0 0 0 -> 0;  a tail 2 0 + padding 1 1 1 -> 2 + 9 + 27 + 81 = 119.
  const Layout layout{QuantType::kTernary1_6, 1, 37, Granularity::kTensor, 0};
  AtqCodes codes;
  codes.codes = {1, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 1,
                 0, 0, 0, 0, 0, 1, 2, 2, 2, 2, 2, 0, 0, 0, 0, 0, 2, 0};
  codes.scales = {0.25f};
  const std::vector<uint8_t> expected = Concat({{1, 3, 9, 27, 81, 242, 0, 119}, FloatBytes(0.25f)});
  EXPECT_EQ(Pack(layout, codes), expected);
  const AtqCodes back = UnpackAtq(layout, expected.data());
  EXPECT_EQ(back.codes, codes.codes);
  EXPECT_EQ(back.scales, codes.scales);
  EXPECT_TRUE(back.zero_points.empty());
}

// ---- uniform b-bit: weight j in bits jb .. jb+b-1 of the row's little-endian bit stream ----

TEST(AtqPackedTest, Uniform3BitSymmetricRowWithTail) {
  // 1 row of 5, one scale. b = 3: scale = max|w| / (2^2 - 1) = 3 / 3 = 1, code = round(w) + 4:
  //   {3, -3, 1, -1.4, 0.6} -> 7, 1, 5, 3, 5 (15 bits, 1 bit of padding)
  //   byte 0 = bits 0-7  = 7 | 1<<3 | (5 & 3)<<6           = 7 + 8 + 64      = 79 (0x4F)
  //   byte 1 = bits 8-15 = 5>>2 | 3<<1 | 5<<4               = 1 + 6 + 80      = 87 (0x57)
  // then 2 zero bytes of padding and the scale 1.0.
  const Layout layout{QuantType::kUniform3Sym, 1, 5, Granularity::kTensor, 0};
  const std::vector<float> w = {3, -3, 1, -1.4f, 0.6f};
  const std::vector<uint8_t> expected = Concat({{0x4F, 0x57, 0x00, 0x00}, FloatBytes(1.0f)});
  EXPECT_EQ(Quantize(layout, w.data()), expected);
  const std::vector<float> back = Dequantize(layout, expected.data(), static_cast<int64_t>(expected.size()));
  EXPECT_EQ(back, (std::vector<float>{3, -3, 1, -1, 1}));
}

TEST(AtqPackedTest, Uniform5BitAsymmetricGroupsWithTail) {
  // 2 rows of 4, groups of 3 along a row (3 + a tail of 1): scale groups 0, 1 (row 0) and 2, 3 (row 1).
  // b = 5: scale = (max(w,0) - min(w,0)) / 31, zero = round(-min / scale), code = round(w / scale) + zero.
  //   group 0 {-1, 2.875, 0.3}: scale 3.875/31 = 0.125, zero 8; codes 0, 23+8 = 31, round(2.4)+8 = 10
  //   group 1 {7.75}:           scale 0.25, zero 0; code 31
  //   group 2 {0.875, -3, 0}:   scale 0.125, zero 24; codes 7+24 = 31, 0, 24
  //   group 3 {-7.75}:          scale 0.25, zero 31; code 0
  // Row 0 codes 0, 31, 10, 31 (20 bits):
  //   byte 0 = 0 | (31<<5 & 0xFF) = 0xE0;  byte 1 = 31>>3 | 10<<2 | (31&1)<<7 = 3 + 40 + 128 = 0xAB;
  //   byte 2 = 31>>1 = 0x0F (bits 20-23 padding)
  // Row 1 codes 31, 0, 24, 0: byte 0 = 31 = 0x1F; byte 1 = 0 | 24<<2 | 0 = 0x60; byte 2 = 0x00.
  // 6 code bytes, 2 bytes of padding, scales 0.125, 0.25, 0.125, 0.25, zero points 8, 0, 24, 31.
  const Layout layout{QuantType::kUniform5Asym, 2, 4, Granularity::kGroup, 3};
  const std::vector<float> w = {-1, 2.875f, 0.3f, 7.75f, 0.875f, -3, 0, -7.75f};
  const std::vector<uint8_t> expected = Concat({{0xE0, 0xAB, 0x0F, 0x1F, 0x60, 0x00, 0x00, 0x00},
                                                FloatBytes(0.125f),
                                                FloatBytes(0.25f),
                                                FloatBytes(0.125f),
                                                FloatBytes(0.25f),
                                                {8, 0, 24, 31}});
  EXPECT_EQ(Quantize(layout, w.data()), expected);
  const std::vector<float> back = Dequantize(layout, expected.data(), static_cast<int64_t>(expected.size()));
  EXPECT_EQ(back, (std::vector<float>{-1, 2.875f, 0.25f, 7.75f, 0.875f, -3, 0, -7.75f}));
}

TEST(AtqPackedTest, UniformCodesCrossByteBoundaries) {
  // 7-bit codes 0x7F, 0x00, 0x55, 0x2A: bit stream 1111111 0000000 1010101 0101010 (LSB first):
  //   byte 0 = 0x7F | 0<<7 = 0x7F;  byte 1 = 0 | (0x55 << 6 & 0xFF) = 0x40;  byte 2 = 0x55 >> 2 | 0x2A << 5 & 0xFF
  //   = 0x15 | 0x40 = 0x55;  byte 3 = 0x2A >> 3 = 0x05 (bits 28-31 padding).
  const Layout layout{QuantType::kUniform7Sym, 1, 4, Granularity::kTensor, 0};
  AtqCodes codes;
  codes.codes = {0x7F, 0x00, 0x55, 0x2A};
  codes.scales = {2.0f};
  const std::vector<uint8_t> expected = Concat({{0x7F, 0x40, 0x55, 0x05}, FloatBytes(2.0f)});
  EXPECT_EQ(Pack(layout, codes), expected);
  EXPECT_EQ(UnpackAtq(layout, expected.data()).codes, codes.codes);
  // w = scale * (code - 64).
  const std::vector<float> back = Dequantize(layout, expected.data(), static_cast<int64_t>(expected.size()));
  EXPECT_EQ(back, (std::vector<float>{126, -128, 42, -44}));
}

TEST(AtqPackedTest, PackUnpackRoundTripsEveryCode) {
  // Every code value at every bit offset, for every atq type and a few tails.
  for (const TypeTraits& traits : AllTypes()) {
    if (traits.family != TypeFamily::kTernary && traits.family != TypeFamily::kUniform) continue;
    const int max_code = traits.family == TypeFamily::kTernary ? 2 : (1 << UniformBits(traits.type)) - 1;
    for (int64_t cols : {1, 7, 9, 255, 257}) {
      const Layout layout{traits.type, 3, cols, Granularity::kGroup, 4};
      AtqCodes codes;
      for (int64_t i = 0; i < layout.rows * cols; ++i)
        codes.codes.push_back(static_cast<uint8_t>((i * 7) % (max_code + 1)));
      for (int64_t g = 0; g < NumScaleGroups(layout); ++g) {
        codes.scales.push_back(0.5f + static_cast<float>(g));
        if (IsAsymmetric(traits.type)) codes.zero_points.push_back(static_cast<uint8_t>(g % (max_code + 1)));
      }
      const std::vector<uint8_t> packed = Pack(layout, codes);
      for (int64_t b = CodesBytes(layout); b < ScalesOffset(layout); ++b) EXPECT_EQ(packed[b], 0) << "padding";
      const AtqCodes back = UnpackAtq(layout, packed.data());
      EXPECT_EQ(back.codes, codes.codes) << traits.name << " cols " << cols;
      EXPECT_EQ(back.scales, codes.scales) << traits.name << " cols " << cols;
      EXPECT_EQ(back.zero_points, codes.zero_points) << traits.name << " cols " << cols;
    }
  }
}

// ---- errors ----

TEST(AtqPackedTest, PackRejectsCodesOutOfRange) {
  const Layout t2{QuantType::kTernary2, 2, 3, Granularity::kTensor, 0};
  AtqCodes codes{{1, 1, 1, 1, 3, 1}, {1.0f}, {}};
  std::string message = ErrorOf([&] { Pack(t2, codes); });
  EXPECT_TRUE(Contains(message, "t2")) << message;
  EXPECT_TRUE(Contains(message, "code 3")) << message;
  EXPECT_TRUE(Contains(message, "row 1, column 1")) << message;

  const Layout u3{QuantType::kUniform3Sym, 1, 4, Granularity::kTensor, 0};
  codes = {{0, 7, 8, 1}, {1.0f}, {}};
  message = ErrorOf([&] { Pack(u3, codes); });
  EXPECT_TRUE(Contains(message, "u3s")) << message;
  EXPECT_TRUE(Contains(message, "code 8")) << message;
  EXPECT_TRUE(Contains(message, "0..7")) << message;

  const Layout u4a{QuantType::kUniform4Asym, 1, 4, Granularity::kTensor, 0};
  codes = {{0, 1, 2, 3}, {1.0f}, {16}};
  message = ErrorOf([&] { Pack(u4a, codes); });
  EXPECT_TRUE(Contains(message, "zero point 16")) << message;

  codes = {{0, 1, 2, 3}, {std::numeric_limits<float>::infinity()}, {1}};
  message = ErrorOf([&] { Pack(u4a, codes); });
  EXPECT_TRUE(Contains(message, "scale")) << message;
}

TEST(AtqPackedTest, PackRejectsSizesThatDoNotMatchTheLayout) {
  const Layout layout{QuantType::kUniform4Asym, 2, 3, Granularity::kChannel, 0};
  const AtqCodes good{{0, 1, 2, 3, 4, 5}, {1.0f, 2.0f}, {0, 1}};
  EXPECT_NO_THROW(Pack(layout, good));

  AtqCodes bad = good;
  bad.codes.pop_back();
  EXPECT_TRUE(Contains(ErrorOf([&] { Pack(layout, bad); }), "needs 6 codes, got 5"));
  bad = good;
  bad.scales.push_back(3.0f);
  EXPECT_TRUE(Contains(ErrorOf([&] { Pack(layout, bad); }), "needs 2 scales, got 3"));
  bad = good;
  bad.zero_points.clear();
  EXPECT_TRUE(Contains(ErrorOf([&] { Pack(layout, bad); }), "needs 2 zero points, got 0"));

  const Layout symmetric{QuantType::kUniform4Sym, 2, 3, Granularity::kChannel, 0};
  EXPECT_TRUE(Contains(ErrorOf([&] { Pack(symmetric, good); }), "needs 0 zero points, got 2"));
}

TEST(AtqPackedTest, UnpackRejectsBytesThatAreNoCode) {
  // ternary2: the bit pair 11 is no trit code.
  const Layout t2{QuantType::kTernary2, 1, 4, Granularity::kTensor, 0};
  std::vector<uint8_t> bytes = Concat({{0x55 | 0xC0, 0, 0, 0}, FloatBytes(1.0f)});
  std::string message = ErrorOf([&] { UnpackAtq(t2, bytes.data()); });
  EXPECT_TRUE(Contains(message, "t2: row 0, column 3 holds code 3")) << message;
  std::vector<float> out(4);
  EXPECT_THROW(Dequantize(t2, bytes.data(), out.data()), Error);

  // ternary1.6: bytes above 3^5 - 1 = 242.
  const Layout t16{QuantType::kTernary1_6, 2, 5, Granularity::kTensor, 0};
  bytes = Concat({{121, 243, 0, 0}, FloatBytes(1.0f)});
  message = ErrorOf([&] { UnpackAtq(t16, bytes.data()); });
  EXPECT_TRUE(Contains(message, "t1.6: row 1, byte 0 holds 243")) << message;

  // asymmetric zero points above 2^b - 1.
  const Layout u2a{QuantType::kUniform2Asym, 1, 4, Granularity::kTensor, 0};
  bytes = Concat({{0, 0, 0, 0}, FloatBytes(1.0f), {4}});
  message = ErrorOf([&] { UnpackAtq(u2a, bytes.data()); });
  EXPECT_TRUE(Contains(message, "zero point 4")) << message;
}

TEST(AtqPackedTest, LayoutErrorsNameTheProblem) {
  const Layout no_group{QuantType::kTernary2, 2, 8, Granularity::kGroup, 0};
  EXPECT_TRUE(Contains(ErrorOf([&] { AtqPackedBytes(no_group); }), "group size > 0, got 0"));
  const Layout negative{QuantType::kUniform8Sym, 2, -8, Granularity::kTensor, 0};
  EXPECT_TRUE(Contains(ErrorOf([&] { AtqPackedBytes(negative); }), "negative shape 2x-8"));
  const Layout huge{QuantType::kUniform8Sym, INT64_MAX / 4, 8, Granularity::kTensor, 0};
  EXPECT_TRUE(Contains(ErrorOf([&] { AtqPackedBytes(huge); }), "too large"));
  const Layout huge_empty{QuantType::kUniform8Sym, 0, INT64_MAX, Granularity::kTensor, 0};
  EXPECT_TRUE(Contains(ErrorOf([&] { AtqPackedBytes(huge_empty); }), "too large"));
  const Layout bad_granularity{QuantType::kTernary2, 1, 8, static_cast<Granularity>(7), 0};
  EXPECT_TRUE(Contains(ErrorOf([&] { AtqPackedBytes(bad_granularity); }), "granularity"));
}

TEST(AtqPackedTest, GroupLargerThanTheRowIsOneShortGroup) {
  EXPECT_EQ(GroupsPerRow(Layout{QuantType::kTernary2, 2, 5, Granularity::kGroup, INT64_MAX}), 1);
  const Layout layout{QuantType::kUniform4Sym, 2, 5, Granularity::kGroup, 64};
  EXPECT_EQ(GroupsPerRow(layout), 1);
  EXPECT_EQ(NumScaleGroups(layout), 2);
  const std::vector<float> w = {1, 2, 3, 4, 7, -7, 0, 0, 0, 0};
  const std::vector<uint8_t> packed = Quantize(layout, w.data());
  const AtqCodes codes = UnpackAtq(layout, packed.data());
  EXPECT_EQ(codes.scales, (std::vector<float>{1.0f, 1.0f}));  // 7 / (2^3 - 1)
}

TEST(AtqPackedTest, ExtremeWeightsKeepFiniteScales) {
  // max - min of +-3e38 overflows float; the asymmetric range is taken in double, so the scale stays finite.
  const Layout layout{QuantType::kUniform8Asym, 1, 3, Granularity::kTensor, 0};
  const std::vector<float> w = {3e38f, -3e38f, 0.0f};
  const std::vector<uint8_t> packed = Quantize(layout, w.data());
  const std::vector<float> back = Dequantize(layout, packed.data(), static_cast<int64_t>(packed.size()));
  const float step = static_cast<float>(6e38 / 255);
  for (size_t i = 0; i < w.size(); ++i) EXPECT_LE(std::fabs(back[i] - w[i]), step) << i;
}

}  // namespace
}  // namespace atq
