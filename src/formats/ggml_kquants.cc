// Readers for llama.cpp's k-quant blocks. Each weight's value is computed from its index within the super-block
// by the layout's formula, in the float operation order of ggml's dequantizers (scale products first, then the
// code), so the floats are ggml's wherever the compiler does not fuse a multiply-add.
#include "formats/ggml_kquants.h"

#include <cstring>

#include "formats/half.h"

namespace atq {
namespace {

static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__, "ggml blocks are little-endian; so is the memcpy here");

int64_t SuperBlocks(const Layout& layout) { return layout.rows * (layout.cols / kQK_K); }

// Q3_K's 16 six-bit scales in 12 bytes: the low 4 bits of scale i in the low (i < 8) or high (i >= 8) nibble of
// byte i % 8, its top 2 bits in byte 8 + i % 4 at bit 2 * (i / 4). Stored with a bias of 32.
int Q3KScale(const uint8_t* scales, int i) {
  const int low = i < 8 ? scales[i] & 0x0F : scales[i - 8] >> 4;
  const int high = (scales[8 + i % 4] >> (2 * (i / 4))) & 3;
  return (low | (high << 4)) - 32;
}

}  // namespace

void KQuantScaleMin(int j, const uint8_t* scales, uint8_t* scale, uint8_t* min) {
  if (j < 4) {
    *scale = scales[j] & 63;
    *min = scales[j + 4] & 63;
  } else {
    *scale = static_cast<uint8_t>((scales[j + 4] & 0x0F) | ((scales[j - 4] >> 6) << 4));
    *min = static_cast<uint8_t>((scales[j + 4] >> 4) | ((scales[j] >> 6) << 4));
  }
}

// Weight w of a super-block: half h = w / 128, pass j = (w % 128) / 32, lane l = w % 32. Its 2 bits are bits 2j of
// qs[32h + l]; its sub-block (scale) is w / 16.
void DequantizeQ2_K(const Layout& layout, const uint8_t* src, float* dst) {
  for (int64_t i = 0; i < SuperBlocks(layout); ++i) {
    const BlockQ2_K block = LoadGgmlBlock<BlockQ2_K>(src, i);
    const float d = F16ToF32(block.d), dmin = F16ToF32(block.dmin);
    float* y = dst + i * kQK_K;
    for (int w = 0; w < kQK_K; ++w) {
      const int half = w / 128, pass = (w % 128) / 32, lane = w % 32;
      const int q = (block.qs[32 * half + lane] >> (2 * pass)) & 3;
      const uint8_t sc = block.scales[w / 16];
      const float step = d * static_cast<float>(sc & 0x0F);
      const float offset = dmin * static_cast<float>(sc >> 4);
      y[w] = step * static_cast<float>(q) - offset;
    }
  }
}

// As Q2_K for the 2 low bits; the third bit of weight w is bit 4h + j of hmask[l], and a clear bit subtracts 4.
void DequantizeQ3_K(const Layout& layout, const uint8_t* src, float* dst) {
  for (int64_t i = 0; i < SuperBlocks(layout); ++i) {
    const BlockQ3_K block = LoadGgmlBlock<BlockQ3_K>(src, i);
    const float d = F16ToF32(block.d);
    float* y = dst + i * kQK_K;
    for (int w = 0; w < kQK_K; ++w) {
      const int half = w / 128, pass = (w % 128) / 32, lane = w % 32;
      const int low = (block.qs[32 * half + lane] >> (2 * pass)) & 3;
      const bool high = (block.hmask[lane] >> (4 * half + pass)) & 1;
      const float step = d * static_cast<float>(Q3KScale(block.scales, w / 16));
      y[w] = step * static_cast<float>(low - (high ? 0 : 4));
    }
  }
}

// Weight w: chunk c = w / 64 of 32 bytes, lane l = w % 32, upper = (w % 64) >= 32 takes the high nibble of
// qs[32c + l]; sub-block w / 32. Q5_K's fifth bit is bit 2c + upper of qh[l].
template <typename Block, bool kFifthBit>
void DequantizeScaleMinBlocks(const Layout& layout, const uint8_t* src, float* dst) {
  for (int64_t i = 0; i < SuperBlocks(layout); ++i) {
    const Block block = LoadGgmlBlock<Block>(src, i);
    const float d = F16ToF32(block.d), dmin = F16ToF32(block.dmin);
    float* y = dst + i * kQK_K;
    for (int w = 0; w < kQK_K; ++w) {
      const int chunk = w / 64, lane = w % 32, upper = (w % 64) / 32;
      const uint8_t byte = block.qs[32 * chunk + lane];
      int q = upper ? byte >> 4 : byte & 0x0F;
      if constexpr (kFifthBit) q += ((block.qh[lane] >> (2 * chunk + upper)) & 1) << 4;
      uint8_t scale, min;
      KQuantScaleMin(w / 32, block.scales, &scale, &min);
      const float step = d * static_cast<float>(scale);
      const float offset = dmin * static_cast<float>(min);
      y[w] = step * static_cast<float>(q) - offset;
    }
  }
}

void DequantizeQ4_K(const Layout& layout, const uint8_t* src, float* dst) {
  DequantizeScaleMinBlocks<BlockQ4_K, false>(layout, src, dst);
}

void DequantizeQ5_K(const Layout& layout, const uint8_t* src, float* dst) {
  DequantizeScaleMinBlocks<BlockQ5_K, true>(layout, src, dst);
}

// Weight w: half h = w / 128, quarter k = (w % 128) / 32, lane l = w % 32. Its low 4 bits are the low (k < 2) or
// high nibble of ql[64h + l + 32 (k % 2)], its top 2 bits bits 2k of qh[32h + l]; sub-block w / 16.
void DequantizeQ6_K(const Layout& layout, const uint8_t* src, float* dst) {
  for (int64_t i = 0; i < SuperBlocks(layout); ++i) {
    const BlockQ6_K block = LoadGgmlBlock<BlockQ6_K>(src, i);
    const float d = F16ToF32(block.d);
    float* y = dst + i * kQK_K;
    for (int w = 0; w < kQK_K; ++w) {
      const int half = w / 128, quarter = (w % 128) / 32, lane = w % 32;
      const uint8_t byte = block.ql[64 * half + lane + 32 * (quarter % 2)];
      const int low = quarter < 2 ? byte & 0x0F : byte >> 4;
      const int high = (block.qh[32 * half + lane] >> (2 * quarter)) & 3;
      const float scale = d * static_cast<float>(block.scales[w / 16]);
      y[w] = scale * static_cast<float>((low | (high << 4)) - 32);
    }
  }
}

void DequantizeQ8_K(const Layout& layout, const uint8_t* src, float* dst) {
  for (int64_t i = 0; i < SuperBlocks(layout); ++i) {
    const BlockQ8_K block = LoadGgmlBlock<BlockQ8_K>(src, i);
    for (int w = 0; w < kQK_K; ++w) dst[i * kQK_K + w] = block.d * static_cast<float>(block.qs[w]);
  }
}

}  // namespace atq
