// atq's own packed formats: ternary at 2 bits (4 per byte) and 1.6 bits (5 per byte, base 3), and uniform
// b-bit (b = 2..8) symmetric or asymmetric, with a float32 scale per tensor, per output channel or per group.
//
// Byte layout of a packed tensor [rows, cols] (all little-endian):
//   codes:  rows x RowBytes(layout) bytes; every row starts on a byte boundary.
//     ternary2:   weight j of a row in byte j/4, bits 2*(j%4)..+1, code = trit + 1 (0,1,2); padding code 1.
//     ternary1.6: weights 5i..5i+4 in byte i as sum_k code_k * 3^k (0..242), code = trit + 1; padding code 1.
//     uniform b:  weight j in bits j*b .. j*b+b-1 of the row's little-endian bit stream; padding bits 0.
//   pad:    zero bytes up to a multiple of 4 from the start of the tensor.
//   scales: NumScaleGroups(layout) float32, group index = row * GroupsPerRow(layout) + col / group_size
//           (per tensor: 1 scale; per channel: one per row).
//   zeros:  asymmetric uniform only: NumScaleGroups(layout) uint8 zero points.
// Values: ternary w = scale * trit; uniform symmetric w = scale * (code - 2^(b-1));
//         uniform asymmetric w = scale * (code - zero).
#pragma once

#include <cstdint>
#include <vector>

#include "formats/quant_type.h"

namespace atq {

// b for atq's uniform b-bit types; throws atq::Error for any other type.
int UniformBits(QuantType type);
bool IsAsymmetric(QuantType type);

int64_t GroupsPerRow(const Layout& layout);    // 1 for tensor/channel granularity
int64_t NumScaleGroups(const Layout& layout);  // 1, rows, or rows * GroupsPerRow
int64_t ScaleGroupOf(const Layout& layout, int64_t row, int64_t col);
int64_t RowBytes(const Layout& layout);        // bytes of one row's codes
int64_t CodesBytes(const Layout& layout);      // rows * RowBytes, before padding
int64_t ScalesOffset(const Layout& layout);    // CodesBytes rounded up to 4
int64_t AtqPackedBytes(const Layout& layout);  // whole packed tensor

// Codes, scales and zero points unpacked, for quantizers that choose their own grid (ATQ thresholds, GPTQ).
struct AtqCodes {
  std::vector<uint8_t> codes;        // rows * cols stored codes (ternary: trit + 1)
  std::vector<float> scales;         // NumScaleGroups
  std::vector<uint8_t> zero_points;  // NumScaleGroups for asymmetric types, else empty
};

// Packs codes; throws atq::Error when a code is out of range for the type or sizes do not match the layout.
void PackAtq(const Layout& layout, const AtqCodes& codes, uint8_t* dst);
// Throws atq::Error on bytes that hold no valid code (ternary2 bits 11, a ternary1.6 byte above 242, a zero
// point above 2^b - 1); so does DequantizeAtq.
AtqCodes UnpackAtq(const Layout& layout, const uint8_t* src);

// One row's codes (cols of them) and one scale group's scale and zero point (0 for types without one), read in
// place from a packed tensor, for kernels that work on integer codes. ReadAtqRowCodes throws like UnpackAtq.
void ReadAtqRowCodes(const Layout& layout, const uint8_t* src, int64_t row, uint8_t* codes);
float AtqScale(const Layout& layout, const uint8_t* src, int64_t group);
int AtqZeroPoint(const Layout& layout, const uint8_t* src, int64_t group);

// Reference quantizers (the format's default grid):
//   ternary: per scale group, threshold = 0.7 * mean|w| and scale = mean |w| over the weights above it.
//   uniform symmetric: scale = max|w| / (2^(b-1) - 1), code = clamp(round(w / scale)) + 2^(b-1).
//   uniform asymmetric: range [min(w, 0), max(w, 0)] over 2^b - 1 steps, integer zero point.
void QuantizeAtq(const Layout& layout, const float* src, uint8_t* dst);
void DequantizeAtq(const Layout& layout, const uint8_t* src, float* dst);

}  // namespace atq
