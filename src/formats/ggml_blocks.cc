// llama.cpp's Q8_0, Q4_0, Q4_1, Q5_0, Q5_1, TQ1_0 and TQ2_0 blocks: the reference quantizers of ggml-quants.c, reproduced
// operation for operation (same float ops, same rounding) so the bytes match llama-quantize's output.
#include "formats/ggml_blocks.h"

#include <algorithm>
#include <cfloat>
#include <cmath>
#include <cstring>

#include "formats/half.h"
#include "util/error.h"

namespace atq {
namespace {

static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__, "ggml blocks are little-endian; so is the memcpy here");

int64_t NumBlocks(const Layout& layout, int64_t block_size) { return layout.rows * (layout.cols / block_size); }

template <typename Block>
Block LoadBlock(const uint8_t* src, int64_t index) {
  return LoadGgmlBlock<Block>(src, index);
}
// Blocks live at any byte offset inside a file, so they are copied out rather than cast in place.
template <typename Block>
void StoreBlock(uint8_t* dst, int64_t index, const Block& block) {
  std::memcpy(dst + index * static_cast<int64_t>(sizeof(Block)), &block, sizeof(Block));
}

// ggml's "amax": the largest |x| of a block, as a float max over fabsf.
float MaxAbs(const float* x, int64_t count) {
  float max_abs = 0.0f;
  for (int64_t j = 0; j < count; ++j) max_abs = std::max(max_abs, std::fabs(x[j]));
  return max_abs;
}

// The weight of largest magnitude, sign kept (the first of equal magnitudes), and that magnitude: Q4_0 and Q5_0
// put it exactly on their lowest code.
float SignedExtreme(const float* x, int64_t count, float& max_abs) {
  float max = 0.0f;
  max_abs = 0.0f;
  for (int64_t j = 0; j < count; ++j) {
    if (max_abs < std::fabs(x[j])) {
      max_abs = std::fabs(x[j]);
      max = x[j];
    }
  }
  return max;
}

// ggml computes 1/d in float; for a block whose largest |x| is below ~1e-37 that overflows to Inf, x * (1/d)
// becomes Inf or NaN, and ggml's float -> int conversion of it is undefined in C. On x86 (where llama-quantize
// runs) cvttss2si then yields 0x80000000, whose low byte is 0, and glibc's lroundf yields LONG_MIN, whose low
// word is 0; we produce those values without the undefined behaviour. Such a block's f16 scale is 0 anyway.
// (Finite values here are always within int8: |x * (1/d)| <= 127 or 16.5 up to a few ulps.)
int8_t ToInt8(float value) { return std::fabs(value) < 128.0f ? static_cast<int8_t>(value) : int8_t{0}; }

// A ternary weight's stored digit in ggml's TQ formats: lroundf(x / amax) + 1, so -1, 0, +1 -> 0, 1, 2.
int TernaryDigit(float x, float inverse_scale) {
  const float scaled = x * inverse_scale;
  return (std::isfinite(scaled) ? static_cast<int>(std::lround(scaled)) : 0) + 1;
}

// The f16 scale of block `block` (counted over the whole tensor), or a clear error where llama.cpp would
// silently store Inf and every weight of the block would come back Inf or NaN.
uint16_t BlockScale(const Layout& layout, int64_t block, float d, float max_abs) {
  const uint16_t half = F32ToF16(d);
  if ((half & 0x7C00u) == 0x7C00u) {
    const TypeTraits& traits = Traits(layout.type);
    const int64_t blocks_per_row = layout.cols / traits.block_size;
    Fail("{}: row {}, block {} needs scale {} (largest |w| {}), beyond float16's 65504; llama.cpp would store Inf",
         traits.name, block / blocks_per_row, block % blocks_per_row, d, max_abs);
  }
  return half;
}

// TQ1_0 stores 5 base-3 digits in a byte not as their value v (0..242) but as ceil(v * 256 / 243), so that
// the k-th digit is recovered by one 8-bit multiply by 3^k (dropping the high byte) and taking the top
// "third" of the byte: ((uint8_t)(q * 3^k) * 3) >> 8.
uint8_t TritsToFixedPoint(int value) { return static_cast<uint8_t>((value * 256 + (243 - 1)) / 243); }
int FixedPointTrit(uint8_t byte, uint8_t power_of_3) {
  const uint8_t shifted = static_cast<uint8_t>(byte * power_of_3);
  return ((static_cast<uint16_t>(shifted) * 3) >> 8) - 1;
}
constexpr uint8_t kPow3[6] = {1, 3, 9, 27, 81, 243};

}  // namespace

// ---- Q8_0: d = amax / 127, q = roundf(x / d) ----

void QuantizeQ8_0(const Layout& layout, const float* src, uint8_t* dst) {
  const int64_t blocks = NumBlocks(layout, kQK8_0);
  for (int64_t i = 0; i < blocks; ++i) {
    const float* x = src + i * kQK8_0;
    const float max_abs = MaxAbs(x, kQK8_0);
    const float d = max_abs / ((1 << 7) - 1);  // the largest |x| maps to +-127
    const float inverse_d = d != 0.0f ? 1.0f / d : 0.0f;
    BlockQ8_0 block;
    block.d = BlockScale(layout, i, d, max_abs);
    for (int64_t j = 0; j < kQK8_0; ++j) block.qs[j] = ToInt8(std::round(x[j] * inverse_d));
    StoreBlock(dst, i, block);
  }
}

void DequantizeQ8_0(const Layout& layout, const uint8_t* src, float* dst) {
  const int64_t blocks = NumBlocks(layout, kQK8_0);
  for (int64_t i = 0; i < blocks; ++i) {
    const BlockQ8_0 block = LoadBlock<BlockQ8_0>(src, i);
    const float d = F16ToF32(block.d);
    float* y = dst + i * kQK8_0;
    for (int64_t j = 0; j < kQK8_0; ++j) y[j] = static_cast<float>(block.qs[j]) * d;
  }
}

// ---- Q4_0: the signed value of largest magnitude maps to code 0, d = max / -8, q = trunc(x / d + 8.5) ----

void QuantizeQ4_0(const Layout& layout, const float* src, uint8_t* dst) {
  const int64_t blocks = NumBlocks(layout, kQK4_0);
  constexpr int64_t kHalf = kQK4_0 / 2;
  for (int64_t i = 0; i < blocks; ++i) {
    const float* x = src + i * kQK4_0;
    float max_abs;
    const float max = SignedExtreme(x, kQK4_0, max_abs);  // represented exactly as d * -8
    const float d = max / -8;
    const float inverse_d = d != 0.0f ? 1.0f / d : 0.0f;
    BlockQ4_0 block;
    block.d = BlockScale(layout, i, d, max_abs);
    for (int64_t j = 0; j < kHalf; ++j) {
      // Separate statements so that no compiler fuses x * id + 8.5 into one FMA (ggml rounds the product).
      const float low_scaled = x[j] * inverse_d;
      const float high_scaled = x[kHalf + j] * inverse_d;
      // ggml converts through int8_t, which truncates toward zero; the +8.5 makes that round to nearest
      // (ties toward the larger code), and MIN(15) folds the unrepresentable +8 onto +7.
      const int low = std::min(15, static_cast<int>(ToInt8(low_scaled + 8.5f)));
      const int high = std::min(15, static_cast<int>(ToInt8(high_scaled + 8.5f)));
      block.qs[j] = static_cast<uint8_t>(low | (high << 4));
    }
    StoreBlock(dst, i, block);
  }
}

void DequantizeQ4_0(const Layout& layout, const uint8_t* src, float* dst) {
  const int64_t blocks = NumBlocks(layout, kQK4_0);
  constexpr int64_t kHalf = kQK4_0 / 2;
  for (int64_t i = 0; i < blocks; ++i) {
    const BlockQ4_0 block = LoadBlock<BlockQ4_0>(src, i);
    const float d = F16ToF32(block.d);
    float* y = dst + i * kQK4_0;
    for (int64_t j = 0; j < kHalf; ++j) {
      y[j] = static_cast<float>((block.qs[j] & 0x0F) - 8) * d;
      y[kHalf + j] = static_cast<float>((block.qs[j] >> 4) - 8) * d;
    }
  }
}

// ---- Q4_1, Q5_1: d = (max - min) / (2^b - 1), m = min, q = trunc((x - min) / d + 0.5) ----
// ---- Q5_0: as Q4_0 with 5 bits: d = max / -16, q = trunc(x / d + 16.5), the extreme weight on code 0 ----

namespace {

// The 5-bit codes of Q5_0/Q5_1 in weight order: low nibbles as Q4_0, the fifth bit of weight j in bit j of qh.
void FiveBitCodes(const uint8_t* qh_bytes, const uint8_t* qs, uint8_t* codes) {
  uint32_t qh;
  std::memcpy(&qh, qh_bytes, 4);
  constexpr int64_t kHalf = kQK4_0 / 2;
  for (int64_t j = 0; j < kHalf; ++j) {
    codes[j] = static_cast<uint8_t>((qs[j] & 0x0F) | (((qh >> j) & 1u) << 4));
    codes[kHalf + j] = static_cast<uint8_t>((qs[j] >> 4) | (((qh >> (kHalf + j)) & 1u) << 4));
  }
}

void PackFiveBitCodes(const uint8_t* codes, uint8_t* qh_bytes, uint8_t* qs) {
  uint32_t qh = 0;
  constexpr int64_t kHalf = kQK4_0 / 2;
  for (int64_t j = 0; j < kHalf; ++j) {
    qs[j] = static_cast<uint8_t>((codes[j] & 0x0F) | ((codes[kHalf + j] & 0x0F) << 4));
    qh |= static_cast<uint32_t>(codes[j] >> 4) << j;
    qh |= static_cast<uint32_t>(codes[kHalf + j] >> 4) << (kHalf + j);
  }
  std::memcpy(qh_bytes, &qh, 4);
}

// A block's minimum as f16, or an error where it is beyond float16 (llama.cpp would store Inf).
uint16_t BlockMinimum(const Layout& layout, int64_t block, float min) {
  const uint16_t half = F32ToF16(min);
  if ((half & 0x7C00u) == 0x7C00u) {
    const TypeTraits& traits = Traits(layout.type);
    const int64_t blocks_per_row = layout.cols / traits.block_size;
    Fail("{}: row {}, block {} has minimum {}, beyond float16's range; llama.cpp would store Inf", traits.name,
         block / blocks_per_row, block % blocks_per_row, min);
  }
  return half;
}

// Q4_1 and Q5_1: codes (x - min) / d rounded by +0.5 and truncation, as ggml does, at most max_code.
template <typename Block, int kBits>
Block QuantizeMinBlock(const Layout& layout, int64_t index, const float* x, uint8_t* codes) {
  float min = FLT_MAX, max = -FLT_MAX;
  for (int64_t j = 0; j < kQK4_0; ++j) {
    min = std::min(min, x[j]);
    max = std::max(max, x[j]);
  }
  constexpr int kMaxCode = (1 << kBits) - 1;
  const float d = (max - min) / kMaxCode;
  const float inverse_d = d != 0.0f ? 1.0f / d : 0.0f;
  Block block;
  block.d = BlockScale(layout, index, d, std::max(std::fabs(min), std::fabs(max)));
  block.m = BlockMinimum(layout, index, min);
  for (int64_t j = 0; j < kQK4_0; ++j) {
    const float scaled = (x[j] - min) * inverse_d;  // a separate statement: no FMA with the + 0.5 below
    codes[j] = static_cast<uint8_t>(std::min(kMaxCode, static_cast<int>(ToInt8(scaled + 0.5f))));
  }
  return block;
}

}  // namespace

void QuantizeQ4_1(const Layout& layout, const float* src, uint8_t* dst) {
  constexpr int64_t kHalf = kQK4_0 / 2;
  for (int64_t i = 0; i < NumBlocks(layout, kQK4_0); ++i) {
    uint8_t codes[kQK4_0];
    BlockQ4_1 block = QuantizeMinBlock<BlockQ4_1, 4>(layout, i, src + i * kQK4_0, codes);
    for (int64_t j = 0; j < kHalf; ++j) block.qs[j] = static_cast<uint8_t>(codes[j] | (codes[kHalf + j] << 4));
    StoreBlock(dst, i, block);
  }
}

void DequantizeQ4_1(const Layout& layout, const uint8_t* src, float* dst) {
  constexpr int64_t kHalf = kQK4_0 / 2;
  for (int64_t i = 0; i < NumBlocks(layout, kQK4_0); ++i) {
    const BlockQ4_1 block = LoadBlock<BlockQ4_1>(src, i);
    const float d = F16ToF32(block.d), m = F16ToF32(block.m);
    float* y = dst + i * kQK4_0;
    for (int64_t j = 0; j < kHalf; ++j) {
      y[j] = static_cast<float>(block.qs[j] & 0x0F) * d + m;
      y[kHalf + j] = static_cast<float>(block.qs[j] >> 4) * d + m;
    }
  }
}

void QuantizeQ5_0(const Layout& layout, const float* src, uint8_t* dst) {
  for (int64_t i = 0; i < NumBlocks(layout, kQK4_0); ++i) {
    const float* x = src + i * kQK4_0;
    float max_abs;
    const float max = SignedExtreme(x, kQK4_0, max_abs);  // represented exactly as d * -16
    const float d = max / -16;
    const float inverse_d = d != 0.0f ? 1.0f / d : 0.0f;
    BlockQ5_0 block;
    block.d = BlockScale(layout, i, d, max_abs);
    uint8_t codes[kQK4_0];
    for (int64_t j = 0; j < kQK4_0; ++j) {
      const float scaled = x[j] * inverse_d;
      codes[j] = static_cast<uint8_t>(std::min(31, static_cast<int>(ToInt8(scaled + 16.5f))));
    }
    PackFiveBitCodes(codes, block.qh, block.qs);
    StoreBlock(dst, i, block);
  }
}

void DequantizeQ5_0(const Layout& layout, const uint8_t* src, float* dst) {
  for (int64_t i = 0; i < NumBlocks(layout, kQK4_0); ++i) {
    uint8_t codes[kQK4_0];
    const float d = Q5_0Codes(src + i * static_cast<int64_t>(sizeof(BlockQ5_0)), codes);
    for (int64_t j = 0; j < kQK4_0; ++j) dst[i * kQK4_0 + j] = static_cast<float>(codes[j] - 16) * d;
  }
}

void QuantizeQ5_1(const Layout& layout, const float* src, uint8_t* dst) {
  for (int64_t i = 0; i < NumBlocks(layout, kQK4_0); ++i) {
    uint8_t codes[kQK4_0];
    BlockQ5_1 block = QuantizeMinBlock<BlockQ5_1, 5>(layout, i, src + i * kQK4_0, codes);
    PackFiveBitCodes(codes, block.qh, block.qs);
    StoreBlock(dst, i, block);
  }
}

void DequantizeQ5_1(const Layout& layout, const uint8_t* src, float* dst) {
  for (int64_t i = 0; i < NumBlocks(layout, kQK4_0); ++i) {
    const BlockQ5_1 block = LoadBlock<BlockQ5_1>(src, i);
    const float d = F16ToF32(block.d), m = F16ToF32(block.m);
    uint8_t codes[kQK4_0];
    FiveBitCodes(block.qh, block.qs, codes);
    for (int64_t j = 0; j < kQK4_0; ++j) dst[i * kQK4_0 + j] = static_cast<float>(codes[j]) * d + m;
  }
}

// ---- TQ1_0: d = amax, trits packed 5 per byte (qs) then 4 per byte (qh) ----
//
// Within a block the 256 weights are laid out as:
//   qs[0..31]:  weights m + 32n     (m = byte 0..31,  n = digit 0..4, most significant digit first)  160 weights
//   qs[32..47]: weights 160 + m + 16n (m = 0..15, n = 0..4)                                              80 weights
//   qh[0..3]:   weights 240 + m + 4n  (m = 0..3,  n = 0..3, then a zero 5th digit)                      16 weights

void QuantizeTQ1_0(const Layout& layout, const float* src, uint8_t* dst) {
  const int64_t blocks = NumBlocks(layout, kQK_K);
  constexpr int64_t kQsBytes = sizeof(BlockTQ1_0::qs);      // 48
  constexpr int64_t kQhBytes = sizeof(BlockTQ1_0::qh);      // 4
  constexpr int64_t kWideBytes = kQsBytes - kQsBytes % 32;  // 32: the part packed along 32-byte strides
  for (int64_t i = 0; i < blocks; ++i) {
    const float* x = src + i * kQK_K;
    const float d = MaxAbs(x, kQK_K);
    const float inverse_d = d != 0.0f ? 1.0f / d : 0.0f;
    BlockTQ1_0 block;
    block.d = BlockScale(layout, i, d, d);
    auto pack_strided = [&](int64_t first_byte, int64_t stride) {
      for (int64_t m = 0; m < stride; ++m) {
        int value = 0;
        for (int64_t n = 0; n < 5; ++n) value = value * 3 + TernaryDigit(x[m + n * stride], inverse_d);
        block.qs[first_byte + m] = TritsToFixedPoint(value);
      }
      x += 5 * stride;
    };
    for (int64_t j = 0; j < kWideBytes; j += 32) pack_strided(j, 32);
    for (int64_t j = kWideBytes; j < kQsBytes; j += 16) pack_strided(j, 16);
    for (int64_t j = 0; j < kQhBytes; ++j) {
      int value = 0;
      for (int64_t m = 0; m < 4; ++m) value = value * 3 + TernaryDigit(x[j + m * kQhBytes], inverse_d);
      value *= 3;  // a fifth, zero digit: the first weight stays the most significant trit
      block.qh[j] = TritsToFixedPoint(value);
    }
    StoreBlock(dst, i, block);
  }
}

void DequantizeTQ1_0(const Layout& layout, const uint8_t* src, float* dst) {
  const int64_t blocks = NumBlocks(layout, kQK_K);
  constexpr int64_t kQsBytes = sizeof(BlockTQ1_0::qs);
  constexpr int64_t kQhBytes = sizeof(BlockTQ1_0::qh);
  constexpr int64_t kWideBytes = kQsBytes - kQsBytes % 32;
  for (int64_t i = 0; i < blocks; ++i) {
    const BlockTQ1_0 block = LoadBlock<BlockTQ1_0>(src, i);
    const float d = F16ToF32(block.d);
    float* y = dst + i * kQK_K;
    auto unpack_strided = [&](int64_t first_byte, int64_t stride) {
      for (int64_t n = 0; n < 5; ++n) {
        for (int64_t m = 0; m < stride; ++m) {
          *y++ = static_cast<float>(FixedPointTrit(block.qs[first_byte + m], kPow3[n])) * d;
        }
      }
    };
    for (int64_t j = 0; j < kWideBytes; j += 32) unpack_strided(j, 32);
    for (int64_t j = kWideBytes; j < kQsBytes; j += 16) unpack_strided(j, 16);
    for (int64_t n = 0; n < 4; ++n) {
      for (int64_t j = 0; j < kQhBytes; ++j) *y++ = static_cast<float>(FixedPointTrit(block.qh[j], kPow3[n])) * d;
    }
  }
}

// ---- TQ2_0: d = amax, 2-bit digits (trit + 1); byte j + m of each 32-byte stride holds weights
// j*4 + m + 32n in bits 2n..2n+1 (n = 0..3) ----

void QuantizeTQ2_0(const Layout& layout, const float* src, uint8_t* dst) {
  const int64_t blocks = NumBlocks(layout, kQK_K);
  constexpr int64_t kQsBytes = sizeof(BlockTQ2_0::qs);  // 64
  for (int64_t i = 0; i < blocks; ++i) {
    const float* x = src + i * kQK_K;
    const float d = MaxAbs(x, kQK_K);
    const float inverse_d = d != 0.0f ? 1.0f / d : 0.0f;
    BlockTQ2_0 block;
    block.d = BlockScale(layout, i, d, d);
    for (int64_t j = 0; j < kQsBytes; j += 32) {
      for (int64_t m = 0; m < 32; ++m) {
        int byte = 0;
        for (int64_t n = 0; n < 4; ++n) byte += (TernaryDigit(x[m + n * 32], inverse_d) & 3) << (2 * n);
        block.qs[j + m] = static_cast<uint8_t>(byte);
      }
      x += 4 * 32;
    }
    StoreBlock(dst, i, block);
  }
}

void DequantizeTQ2_0(const Layout& layout, const uint8_t* src, float* dst) {
  const int64_t blocks = NumBlocks(layout, kQK_K);
  constexpr int64_t kQsBytes = sizeof(BlockTQ2_0::qs);
  for (int64_t i = 0; i < blocks; ++i) {
    const BlockTQ2_0 block = LoadBlock<BlockTQ2_0>(src, i);
    const float d = F16ToF32(block.d);
    float* y = dst + i * kQK_K;
    for (int64_t j = 0; j < kQsBytes; j += 32) {
      for (int64_t n = 0; n < 4; ++n) {
        for (int64_t m = 0; m < 32; ++m) *y++ = static_cast<float>(((block.qs[j + m] >> (2 * n)) & 3) - 1) * d;
      }
    }
  }
}

// ---- codes for integer kernels ----

float Q8_0Codes(const uint8_t* block, uint8_t* codes) {
  const BlockQ8_0 b = LoadBlock<BlockQ8_0>(block, 0);
  for (int64_t j = 0; j < kQK8_0; ++j) codes[j] = static_cast<uint8_t>(b.qs[j] + 128);
  return F16ToF32(b.d);
}

float Q4_0Codes(const uint8_t* block, uint8_t* codes) {
  const BlockQ4_0 b = LoadBlock<BlockQ4_0>(block, 0);
  for (int64_t j = 0; j < kQK4_0 / 2; ++j) {
    codes[j] = static_cast<uint8_t>(b.qs[j] & 0x0F);
    codes[kQK4_0 / 2 + j] = static_cast<uint8_t>(b.qs[j] >> 4);
  }
  return F16ToF32(b.d);
}

float Q5_0Codes(const uint8_t* block, uint8_t* codes) {
  const BlockQ5_0 b = LoadBlock<BlockQ5_0>(block, 0);
  FiveBitCodes(b.qh, b.qs, codes);
  return F16ToF32(b.d);
}

float TQ1_0Codes(const uint8_t* block, uint8_t* codes) {
  const BlockTQ1_0 b = LoadBlock<BlockTQ1_0>(block, 0);
  constexpr int64_t kQsBytes = sizeof(BlockTQ1_0::qs);
  constexpr int64_t kWideBytes = kQsBytes - kQsBytes % 32;
  uint8_t* y = codes;
  auto unpack_strided = [&](const uint8_t* bytes, int64_t stride, int digits) {
    for (int n = 0; n < digits; ++n) {
      for (int64_t m = 0; m < stride; ++m) *y++ = static_cast<uint8_t>(FixedPointTrit(bytes[m], kPow3[n]) + 1);
    }
  };
  for (int64_t j = 0; j < kWideBytes; j += 32) unpack_strided(b.qs + j, 32, 5);
  for (int64_t j = kWideBytes; j < kQsBytes; j += 16) unpack_strided(b.qs + j, 16, 5);
  unpack_strided(b.qh, sizeof(BlockTQ1_0::qh), 4);
  return F16ToF32(b.d);
}

float TQ2_0Codes(const uint8_t* block, uint8_t* codes) {
  const BlockTQ2_0 b = LoadBlock<BlockTQ2_0>(block, 0);
  uint8_t* y = codes;
  for (int64_t j = 0; j < static_cast<int64_t>(sizeof(BlockTQ2_0::qs)); j += 32) {
    for (int n = 0; n < 4; ++n) {
      for (int64_t m = 0; m < 32; ++m) *y++ = static_cast<uint8_t>((b.qs[j + m] >> (2 * n)) & 3);
    }
  }
  return F16ToF32(b.d);
}

}  // namespace atq
