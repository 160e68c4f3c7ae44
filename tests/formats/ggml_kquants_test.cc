// Known answers for the k-quant readers: one block each, bytes set by hand from ggml-common.h's layout comments,
// values worked out by hand. (The whole-model check against llama.cpp's own dequantization is
// scripts/check_llama_cpp.sh, which needs a llama.cpp build.)
#include <cstring>
#include <vector>

#include <gtest/gtest.h>

#include "formats/ggml_kquants.h"
#include "formats/half.h"
#include "formats/quant_type.h"
#include "util/error.h"

namespace atq {
namespace {

template <typename Block>
std::vector<float> DequantizeOne(QuantType type, const Block& block) {
  const Layout layout{type, 1, kQK_K, Granularity::kTensor, 0};
  std::vector<uint8_t> bytes(sizeof(Block));
  std::memcpy(bytes.data(), &block, sizeof(Block));
  return Dequantize(layout, bytes.data(), static_cast<int64_t>(bytes.size()));
}

TEST(KQuantsTest, Q2_K) {
  BlockQ2_K block{};
  block.d = F32ToF16(1.0f);
  block.dmin = F32ToF16(0.25f);
  block.scales[0] = 0x23;  // sub-block 0: scale 3, minimum 2
  block.qs[0] = 0x02;      // weight 0: bits 0-1 of qs[0]
  block.scales[6] = 0x15;  // sub-block 6 (weights 96..111): scale 5, minimum 1
  block.qs[4] = 0xC0;      // weight 100 = pass 3, lane 4: bits 6-7 of qs[4]
  const std::vector<float> y = DequantizeOne(QuantType::kQ2_K, block);
  EXPECT_EQ(y[0], 1.0f * 3 * 2 - 0.25f * 2);
  EXPECT_EQ(y[1], -0.25f * 2);  // code 0 still pays the minimum
  EXPECT_EQ(y[100], 1.0f * 5 * 3 - 0.25f * 1);
  EXPECT_EQ(y[200], 0.0f);  // scale 0, minimum 0
}

TEST(KQuantsTest, Q3_K) {
  BlockQ3_K block{};
  block.d = F32ToF16(2.0f);
  std::memset(block.scales, 0, sizeof(block.scales));
  block.scales[0] = 0x01;   // scale 0, low nibble 1
  block.scales[8] = 0x02;   // scale 0, top bits 2: 33 - 32 = +1
  block.scales[1] = 0xE0;   // scale 9, low nibble 14 (high nibble of byte 1)
  block.scales[9] = 0x10;   // scale 9, top bits 1 (byte 8 + 9 % 4, bit 2 * (9 / 4)): 30 - 32 = -2
  block.qs[0] = 0x03;       // weight 0: low bits 3
  block.hmask[0] = 0x01;    // and its high bit set: +3
  block.qs[54] = 0x01;      // weight 150 = half 1, pass 0, lane 22: low bits 1, high bit clear: 1 - 4
  const std::vector<float> y = DequantizeOne(QuantType::kQ3_K, block);
  EXPECT_EQ(y[0], 2.0f * 1 * 3);
  EXPECT_EQ(y[1], 2.0f * 1 * -4);
  EXPECT_EQ(y[150], 2.0f * -2 * -3);
  EXPECT_EQ(y[255], 2.0f * -32 * -4);  // scale 0 is -32; code 0 with a clear high bit is -4
}

TEST(KQuantsTest, Q4_KPacksSixBitScalesAndMinimums) {
  BlockQ4_K block{};
  block.d = F32ToF16(1.0f);
  block.dmin = F32ToF16(0.5f);
  block.scales[0] = 3;     // sub-block 0: scale 3
  block.scales[4] = 2;     //              minimum 2
  block.scales[9] = 0x35;  // sub-block 5: scale low nibble 5, minimum low nibble 3
  block.scales[1] = 0x40;  //              scale top bits 1 -> 21
  block.scales[5] = 0x80;  //              minimum top bits 2 -> 35
  block.qs[0] = 0x07;      // weight 0: low nibble of qs[0]
  block.qs[74] = 0x90;     // weight 170 = chunk 2, upper half, lane 10: high nibble of qs[74]
  uint8_t scale = 0, min = 0;
  KQuantScaleMin(5, block.scales, &scale, &min);
  EXPECT_EQ(scale, 21);
  EXPECT_EQ(min, 35);
  const std::vector<float> y = DequantizeOne(QuantType::kQ4_K, block);
  EXPECT_EQ(y[0], 1.0f * 3 * 7 - 0.5f * 2);
  EXPECT_EQ(y[170], 1.0f * 21 * 9 - 0.5f * 35);
  EXPECT_EQ(y[32], 0.0f);  // sub-block 1: scale 0 (the top bits in byte 1 belong to sub-block 5), minimum 0
}

TEST(KQuantsTest, Q5_KAddsAFifthBit) {
  BlockQ5_K block{};
  block.d = F32ToF16(1.0f);
  block.dmin = F32ToF16(0.0f);
  block.scales[2] = 4;  // sub-block 2 (weights 64..95): scale 4
  block.qs[38] = 0x03;  // weight 70 = chunk 1, lower half, lane 6
  block.qh[6] = 0x04;   // its fifth bit: bit 2 * 1 + 0
  const std::vector<float> y = DequantizeOne(QuantType::kQ5_K, block);
  EXPECT_EQ(y[70], 4.0f * (3 + 16));
  EXPECT_EQ(y[71], 0.0f);
}

TEST(KQuantsTest, Q6_K) {
  BlockQ6_K block{};
  block.d = F32ToF16(0.5f);
  block.scales[0] = 3;
  block.ql[0] = 0x0A;  // weight 0: low nibble 10
  block.qh[0] = 0x02;  //           top bits 2: 42 - 32 = 10
  block.scales[12] = -4;
  block.ql[72] = 0x50;  // weight 200 = half 1, quarter 2, lane 8: high nibble of ql[64 + 8]
  block.qh[40] = 0x10;  //             top bits 1 (bits 4-5 of qh[32 + 8]): 21 - 32 = -11
  const std::vector<float> y = DequantizeOne(QuantType::kQ6_K, block);
  EXPECT_EQ(y[0], 0.5f * 3 * 10);
  EXPECT_EQ(y[200], 0.5f * -4 * -11);
  EXPECT_EQ(y[1], 0.5f * 3 * -32);
}

TEST(KQuantsTest, Q8_K) {
  BlockQ8_K block{};
  block.d = 0.25f;
  block.qs[5] = -7;
  block.bsums[0] = 1234;  // partial sums are for dot products, not values
  const std::vector<float> y = DequantizeOne(QuantType::kQ8_K, block);
  EXPECT_EQ(y[5], -1.75f);
  EXPECT_EQ(y[6], 0.0f);
}

// Read-only rows: sized like llama.cpp's blocks, refused as quantization targets with the reason.
TEST(KQuantsTest, ReadOnly) {
  for (QuantType type : {QuantType::kQ2_K, QuantType::kQ3_K, QuantType::kQ4_K, QuantType::kQ5_K, QuantType::kQ6_K,
                         QuantType::kQ8_K}) {
    const Layout layout{type, 2, 2 * kQK_K, Granularity::kTensor, 0};
    EXPECT_EQ(PackedBytes(layout), 4 * Traits(type).bytes_per_block);
    const std::vector<float> w(2 * 2 * kQK_K, 0.5f);
    EXPECT_THROW(Quantize(layout, w.data()), Error) << TypeName(type);
  }
}

}  // namespace
}  // namespace atq
