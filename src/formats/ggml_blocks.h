// llama.cpp's block formats, byte for byte: Q8_0, Q4_0, TQ1_0, TQ2_0 (ggml-common.h layouts, ggml-quants.c
// reference quantizers). A GGUF written by atq with these types is read by llama.cpp and vice versa.
#pragma once

#include <cstdint>

#include "formats/quant_type.h"

namespace atq {

constexpr int64_t kQK8_0 = 32;
constexpr int64_t kQK4_0 = 32;
constexpr int64_t kQK_K = 256;

// 8.5 bits per weight.
struct BlockQ8_0 {
  uint16_t d;  // f16 scale
  int8_t qs[kQK8_0];
};
static_assert(sizeof(BlockQ8_0) == 34, "Q8_0 block must match ggml");

// 4.5 bits per weight. Byte j holds weight j in its low nibble and weight j + 16 in its high nibble.
struct BlockQ4_0 {
  uint16_t d;  // f16 scale
  uint8_t qs[kQK4_0 / 2];
};
static_assert(sizeof(BlockQ4_0) == 18, "Q4_0 block must match ggml");

// 1.6875 bits per weight: 5 trits per byte in qs (240 weights), 4 trits per byte in qh (16 weights).
struct BlockTQ1_0 {
  uint8_t qs[(kQK_K - 4 * kQK_K / 64) / 5];  // 48 bytes
  uint8_t qh[kQK_K / 64];                    // 4 bytes
  uint16_t d;                                // f16 scale
};
static_assert(sizeof(BlockTQ1_0) == 54, "TQ1_0 block must match ggml");

// 2.0625 bits per weight: 2-bit codes (trit + 1), 4 per byte in 32-byte strides.
struct BlockTQ2_0 {
  uint8_t qs[kQK_K / 4];  // 64 bytes
  uint16_t d;             // f16 scale
};
static_assert(sizeof(BlockTQ2_0) == 66, "TQ2_0 block must match ggml");

// Reference quantizers and dequantizers over whole layouts (layout.cols a multiple of the block size;
// the caller, atq::Quantize, checks that and rejects NaN/Inf before calling). The quantizers throw atq::Error
// where a block's scale overflows float16 (llama.cpp would store Inf); otherwise their bytes are llama.cpp's.
void QuantizeQ8_0(const Layout& layout, const float* src, uint8_t* dst);
void DequantizeQ8_0(const Layout& layout, const uint8_t* src, float* dst);
void QuantizeQ4_0(const Layout& layout, const float* src, uint8_t* dst);
void DequantizeQ4_0(const Layout& layout, const uint8_t* src, float* dst);
void QuantizeTQ1_0(const Layout& layout, const float* src, uint8_t* dst);
void DequantizeTQ1_0(const Layout& layout, const uint8_t* src, float* dst);
void QuantizeTQ2_0(const Layout& layout, const float* src, uint8_t* dst);
void DequantizeTQ2_0(const Layout& layout, const uint8_t* src, float* dst);

// Integer kernels see a block as unsigned codes and one scale: w = d * (code - GgmlCodeOffset(type)).
// Q8_0: q + 128; Q4_0: the nibble; TQ1_0, TQ2_0: trit + 1. Writes block_size codes in weight order and
// returns d; throws atq::Error for a type that is not one of the four.
float GgmlBlockCodes(QuantType type, const uint8_t* block, uint8_t* codes);
int GgmlCodeOffset(QuantType type);

}  // namespace atq
