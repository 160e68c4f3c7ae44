// llama.cpp's 32- and 256-weight block formats with one scale per block, byte for byte: Q8_0, Q4_0, Q4_1, Q5_0,
// Q5_1, TQ1_0, TQ2_0 (ggml-common.h layouts, ggml-quants.c reference quantizers). A GGUF written by atq with these
// types is read by llama.cpp and vice versa. The k-quants (sub-block scales) are in ggml_kquants.h.
#pragma once

#include <cstdint>
#include <cstring>

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

// 5 bits per weight: w = d * q + m. Byte j holds weight j (low nibble) and j + 16 (high nibble), as in Q4_0.
struct BlockQ4_1 {
  uint16_t d;  // f16 step
  uint16_t m;  // f16 minimum
  uint8_t qs[kQK4_0 / 2];
};
static_assert(sizeof(BlockQ4_1) == 20, "Q4_1 block must match ggml");

// 5.5 bits per weight: w = d * (q - 16), q 5 bits: the low 4 as in Q4_0, the fifth bit of weight j in bit j of qh.
struct BlockQ5_0 {
  uint16_t d;     // f16 scale
  uint8_t qh[4];  // fifth bits, little-endian uint32
  uint8_t qs[kQK4_0 / 2];
};
static_assert(sizeof(BlockQ5_0) == 22, "Q5_0 block must match ggml");

// 6 bits per weight: w = d * q + m, q 5 bits laid out as in Q5_0.
struct BlockQ5_1 {
  uint16_t d;  // f16 step
  uint16_t m;  // f16 minimum
  uint8_t qh[4];
  uint8_t qs[kQK4_0 / 2];
};
static_assert(sizeof(BlockQ5_1) == 24, "Q5_1 block must match ggml");

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

// Block `index` of a run of blocks at any byte offset inside a file: copied out rather than cast in place.
template <typename Block>
Block LoadGgmlBlock(const uint8_t* src, int64_t index) {
  Block block;
  std::memcpy(&block, src + index * static_cast<int64_t>(sizeof(Block)), sizeof(Block));
  return block;
}

// Reference quantizers and dequantizers over whole layouts (layout.cols a multiple of the block size;
// the caller, atq::Quantize, checks that and rejects NaN/Inf before calling). The quantizers throw atq::Error
// where a block's scale overflows float16 (llama.cpp would store Inf); otherwise their bytes are llama.cpp's.
void QuantizeQ8_0(const Layout& layout, const float* src, uint8_t* dst);
void DequantizeQ8_0(const Layout& layout, const uint8_t* src, float* dst);
void QuantizeQ4_0(const Layout& layout, const float* src, uint8_t* dst);
void DequantizeQ4_0(const Layout& layout, const uint8_t* src, float* dst);
void QuantizeQ4_1(const Layout& layout, const float* src, uint8_t* dst);
void DequantizeQ4_1(const Layout& layout, const uint8_t* src, float* dst);
void QuantizeQ5_0(const Layout& layout, const float* src, uint8_t* dst);
void DequantizeQ5_0(const Layout& layout, const uint8_t* src, float* dst);
void QuantizeQ5_1(const Layout& layout, const float* src, uint8_t* dst);
void DequantizeQ5_1(const Layout& layout, const uint8_t* src, float* dst);
void QuantizeTQ1_0(const Layout& layout, const float* src, uint8_t* dst);
void DequantizeTQ1_0(const Layout& layout, const uint8_t* src, float* dst);
void QuantizeTQ2_0(const Layout& layout, const float* src, uint8_t* dst);
void DequantizeTQ2_0(const Layout& layout, const uint8_t* src, float* dst);

// Integer kernels see a block as unsigned codes and one scale, w = d * (code - offset): the row's
// TypeTraits::block_codes (Q8_0: q + 128, offset 128; Q4_0: the nibble, 8; Q5_0: the 5 bits, 16; TQ1_0, TQ2_0:
// trit + 1, 1). Each writes block_size codes in weight order and returns d.
float Q8_0Codes(const uint8_t* block, uint8_t* codes);
float Q4_0Codes(const uint8_t* block, uint8_t* codes);
float Q5_0Codes(const uint8_t* block, uint8_t* codes);
float TQ1_0Codes(const uint8_t* block, uint8_t* codes);
float TQ2_0Codes(const uint8_t* block, uint8_t* codes);

}  // namespace atq
