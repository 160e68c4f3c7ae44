// The format table: every tensor element type atq reads, writes or quantizes to, as one row of traits.
// Ids are stable and never reused; ggml's ids where GGUF needs them, so what atq writes llama.cpp reads.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace atq {

enum class QuantType : uint32_t {
  // Plain element types (ggml ids).
  kF32 = 0,
  kF16 = 1,
  kQ4_0 = 2,   // 32 weights: f16 scale d + 16 bytes of nibbles; w = d * (q - 8)
  kQ4_1 = 3,   // 32 weights: f16 step d and minimum m + nibbles; w = d * q + m
  kQ5_0 = 6,   // 32 weights: f16 scale d + 5-bit codes; w = d * (q - 16)
  kQ5_1 = 7,   // 32 weights: f16 step d and minimum m + 5-bit codes; w = d * q + m
  kQ8_0 = 8,   // 32 weights: f16 scale d + 32 int8; w = d * q
  // llama.cpp's k-quants: 256-weight super-blocks of 16 or 32-weight sub-blocks with their own 4-8 bit scales
  // (and minimums). atq reads them (every file llama-quantize writes); it does not quantize to them.
  kQ2_K = 10,
  kQ3_K = 11,
  kQ4_K = 12,
  kQ5_K = 13,
  kQ6_K = 14,
  kQ8_K = 15,
  kI8 = 24,
  kI16 = 25,
  kI32 = 26,
  kI64 = 27,
  kF64 = 28,
  kBF16 = 30,
  kTQ1_0 = 34,  // 256 ternary weights: 48 bytes of 5 trits/byte, 4 bytes of 4 trits/byte, f16 scale
  kTQ2_0 = 35,  // 256 ternary weights: 64 bytes of 2-bit codes, f16 scale
  // Storage types safetensors has and ggml does not.
  kU8 = 64,
  kBool = 65,
  // atq's own packed formats: codes packed densely per row, scales (and zero points) after the codes.
  kTernary2 = 128,    // {-1,0,+1}, 4 weights per byte, float32 scale per tensor/channel/group
  kTernary1_6 = 129,  // {-1,0,+1}, 5 weights per byte (base 3), float32 scale per tensor/channel/group
  kUniform2Sym = 130,  // b-bit symmetric: w = s * (c - 2^(b-1)), c in [0, 2^b)
  kUniform3Sym = 131,
  kUniform4Sym = 132,
  kUniform5Sym = 133,
  kUniform6Sym = 134,
  kUniform7Sym = 135,
  kUniform8Sym = 136,
  kUniform2Asym = 138,  // b-bit asymmetric: w = s * (c - z), z an integer in [0, 2^b)
  kUniform3Asym = 139,
  kUniform4Asym = 140,
  kUniform5Asym = 141,
  kUniform6Asym = 142,
  kUniform7Asym = 143,
  kUniform8Asym = 144,
};

enum class TypeFamily {
  kFloat,      // f32 f16 bf16 f64
  kInteger,    // storage only: i8 .. i64, u8, bool; no quantize
  kGgmlBlock,  // llama.cpp block formats: scales inside each block
  kTernary,    // atq ternary with separate scales
  kUniform,    // atq uniform b-bit with separate scales (and zero points)
};

// How atq's own formats share scales. ggml block formats have their own (per block) and ignore this.
enum class Granularity : uint8_t { kTensor = 0, kChannel = 1, kGroup = 2 };

// A 2-D view of a weight: rows are output channels, cols the reduction dimension (row-major, cols fastest).
// Any tensor is quantized as [rows = product of leading dims, cols = last dim].
struct Layout {
  QuantType type = QuantType::kF32;
  int64_t rows = 0;
  int64_t cols = 0;
  Granularity granularity = Granularity::kTensor;
  int64_t group_size = 0;  // for kGroup: weights per group along a row; need not divide cols (last group short)
};

// "tensor", "channel" or "group:<N>": how files (GGUF's atq.layout.<name>, atq's packed safetensors) name a layout's
// scale granularity.
std::string GranularityString(const Layout& layout);
// Sets layout.granularity and group_size from such a string; false for anything else, including a group size
// with a sign, leading zeros or more digits than int64 holds.
bool ParseGranularity(std::string_view text, Layout& layout);

struct TypeTraits;
using QuantizeFn = void (*)(const Layout& layout, const float* src, uint8_t* dst);
using DequantizeFn = void (*)(const Layout& layout, const uint8_t* src, float* dst);
using PackedBytesFn = int64_t (*)(const Layout& layout);
using BlockCodesFn = float (*)(const uint8_t* block, uint8_t* codes);

// How the integer kernels read a ggml block: w = d * (code - offset), one f16 d per block at byte scale_byte.
// decode writes block_size codes in weight order and returns d. Empty (decode == nullptr) for every other row,
// including ggml types whose blocks carry minimums or sub-block scales (Q4_1, Q5_1, the k-quants): kernels do not
// run those, and loaders dequantize them.
struct BlockCodes {
  BlockCodesFn decode = nullptr;
  int offset = 0;
  int64_t scale_byte = 0;
};

struct TypeTraits {
  QuantType type;
  std::string_view name;    // the name users type (--type) and GGUF/safetensors metadata carry
  TypeFamily family;
  int64_t block_size;       // weights per block (1 for plain types; codes packed per block for atq types)
  int64_t bytes_per_block;  // bytes per block, scales included for ggml types, excluded for atq types
  double bits_per_weight;   // code bits only for atq types; scale overhead comes from PackedBytes(layout)
  bool is_quantized;
  std::string_view description;
  QuantizeFn quantize;      // reference quantize; nullptr for storage-only and read-only types. Throws on NaN/Inf.
  DequantizeFn dequantize;  // to float32
  PackedBytesFn packed_bytes;
  BlockCodes block_codes = {};
};

// All rows, in id order.
const std::vector<TypeTraits>& AllTypes();
// Throws atq::Error for an id not in the table.
const TypeTraits& Traits(QuantType type);
// nullptr when the id is unknown (for parsers that report the file themselves).
const TypeTraits* FindTraits(uint32_t id);
// By name (case-insensitive, also accepts "q4_0"/"Q4_0"); std::nullopt when unknown.
std::optional<QuantType> ParseQuantType(std::string_view name);

inline std::string_view TypeName(QuantType type) { return Traits(type).name; }

// atq's uniform b-bit type for bits 2..8, symmetric (u<b>s) or asymmetric (u<b>a): the one place bits map to a
// storage type. Throws atq::Error for other bits.
QuantType UniformType(int bits, bool symmetric);

// Bytes of the packed layout (codes + scales + zero points). Throws atq::Error if the layout is invalid
// for the type (e.g. cols not a multiple of a ggml block size, bad group size).
int64_t PackedBytes(const Layout& layout);
// Validates the layout, checks src for NaN/Inf (error names the first bad index), then packs.
void Quantize(const Layout& layout, const float* src, uint8_t* dst);
std::vector<uint8_t> Quantize(const Layout& layout, const float* src);
void Dequantize(const Layout& layout, const uint8_t* src, float* dst);
std::vector<float> Dequantize(const Layout& layout, const uint8_t* src, int64_t src_bytes);

}  // namespace atq
