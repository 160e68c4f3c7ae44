// llama.cpp's k-quants, read byte for byte (ggml-common.h layouts, ggml-quants.c dequantizers): 256-weight
// super-blocks of 16 or 32-weight sub-blocks, each with its own small integer scale (and minimum) under the
// super-block's f16 scales. llama-quantize writes these for its Q2_K .. Q6_K presets (and Q8_K for intermediate
// products); atq reads every one so that any such GGUF loads. atq does not write them: their quantizers are a
// search (ggml's make_qkx*_quants), and a plain rounding in the same layout would be a different, worse format.
#pragma once

#include <cstdint>

#include "formats/ggml_blocks.h"
#include "formats/quant_type.h"

namespace atq {

constexpr int64_t kKScaleBytes = 12;  // 8 six-bit scales and 8 six-bit minimums (Q4_K, Q5_K)

// 2.625 bits per weight: 16 sub-blocks of 16, 4-bit scale and 4-bit minimum each; w = d*sc*q - dmin*m, q 2 bits.
struct BlockQ2_K {
  uint8_t scales[kQK_K / 16];  // low nibble scale, high nibble minimum
  uint8_t qs[kQK_K / 4];
  uint16_t d;
  uint16_t dmin;
};
static_assert(sizeof(BlockQ2_K) == 84, "Q2_K block must match ggml");

// 3.4375 bits per weight: 16 sub-blocks of 16, 6-bit signed scales; w = d * (sc - 32) * (q - 4*(1 - hbit)),
// q 2 low bits in qs and the third (inverted) in hmask.
struct BlockQ3_K {
  uint8_t hmask[kQK_K / 8];
  uint8_t qs[kQK_K / 4];
  uint8_t scales[12];
  uint16_t d;
};
static_assert(sizeof(BlockQ3_K) == 110, "Q3_K block must match ggml");

// 4.5 bits per weight: 8 sub-blocks of 32, 6-bit scale and minimum; w = d*sc*q - dmin*m, q 4 bits.
struct BlockQ4_K {
  uint16_t d;
  uint16_t dmin;
  uint8_t scales[kKScaleBytes];
  uint8_t qs[kQK_K / 2];
};
static_assert(sizeof(BlockQ4_K) == 144, "Q4_K block must match ggml");

// 5.5 bits per weight: as Q4_K with a fifth bit per weight in qh.
struct BlockQ5_K {
  uint16_t d;
  uint16_t dmin;
  uint8_t scales[kKScaleBytes];
  uint8_t qh[kQK_K / 8];
  uint8_t qs[kQK_K / 2];
};
static_assert(sizeof(BlockQ5_K) == 176, "Q5_K block must match ggml");

// 6.5625 bits per weight: 16 sub-blocks of 16, int8 scales; w = d * sc * (q - 32), q 4 low bits in ql, 2 in qh.
struct BlockQ6_K {
  uint8_t ql[kQK_K / 2];
  uint8_t qh[kQK_K / 4];
  int8_t scales[kQK_K / 16];
  uint16_t d;
};
static_assert(sizeof(BlockQ6_K) == 210, "Q6_K block must match ggml");

// 9.125 bits per weight: a float32 scale, int8 codes and 16 partial sums (ignored when reading); w = d * q.
struct BlockQ8_K {
  float d;
  int8_t qs[kQK_K];
  int16_t bsums[kQK_K / 16];
};
static_assert(sizeof(BlockQ8_K) == 292, "Q8_K block must match ggml");

void DequantizeQ2_K(const Layout& layout, const uint8_t* src, float* dst);
void DequantizeQ3_K(const Layout& layout, const uint8_t* src, float* dst);
void DequantizeQ4_K(const Layout& layout, const uint8_t* src, float* dst);
void DequantizeQ5_K(const Layout& layout, const uint8_t* src, float* dst);
void DequantizeQ6_K(const Layout& layout, const uint8_t* src, float* dst);
void DequantizeQ8_K(const Layout& layout, const uint8_t* src, float* dst);

// The 6-bit scale and minimum of sub-block j (0..7) of Q4_K/Q5_K's 12 packed bytes: j < 4 in the low 6 bits of
// bytes j and j + 4; j >= 4 in the nibbles of byte j + 4 with their top 2 bits in the spare bits of bytes j - 4, j.
void KQuantScaleMin(int j, const uint8_t* scales, uint8_t* scale, uint8_t* min);

}  // namespace atq
