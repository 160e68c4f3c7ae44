// The format table and the checked entry points every tool goes through.
#include "formats/quant_type.h"

#include <algorithm>
#include <cctype>
#include <cstddef>
#include <charconv>
#include <cmath>
#include <cstring>
#include <string>

#include "formats/atq_packed.h"
#include "formats/ggml_blocks.h"
#include "formats/ggml_kquants.h"
#include "formats/half.h"
#include "util/error.h"

namespace atq {
namespace {

// ---- plain element types: conversion to and from float32 ----

template <typename T>
T LoadUnaligned(const uint8_t* p) {
  T value;
  std::memcpy(&value, p, sizeof(T));
  return value;
}
template <typename T>
void StoreUnaligned(uint8_t* p, T value) {
  std::memcpy(p, &value, sizeof(T));
}

int64_t Elements(const Layout& layout) { return layout.rows * layout.cols; }

void QuantizeF32(const Layout& layout, const float* src, uint8_t* dst) {
  if (Elements(layout) > 0) std::memcpy(dst, src, static_cast<size_t>(Elements(layout)) * 4);
}
void DequantizeF32(const Layout& layout, const uint8_t* src, float* dst) {
  if (Elements(layout) > 0) std::memcpy(dst, src, static_cast<size_t>(Elements(layout)) * 4);
}
void QuantizeF16(const Layout& layout, const float* src, uint8_t* dst) {
  for (int64_t i = 0; i < Elements(layout); ++i) StoreUnaligned<uint16_t>(dst + 2 * i, F32ToF16(src[i]));
}
void DequantizeF16(const Layout& layout, const uint8_t* src, float* dst) {
  for (int64_t i = 0; i < Elements(layout); ++i) dst[i] = F16ToF32(LoadUnaligned<uint16_t>(src + 2 * i));
}
void QuantizeBF16(const Layout& layout, const float* src, uint8_t* dst) {
  for (int64_t i = 0; i < Elements(layout); ++i) StoreUnaligned<uint16_t>(dst + 2 * i, F32ToBF16(src[i]));
}
void DequantizeBF16(const Layout& layout, const uint8_t* src, float* dst) {
  for (int64_t i = 0; i < Elements(layout); ++i) dst[i] = BF16ToF32(LoadUnaligned<uint16_t>(src + 2 * i));
}
void QuantizeF64(const Layout& layout, const float* src, uint8_t* dst) {
  for (int64_t i = 0; i < Elements(layout); ++i) StoreUnaligned<double>(dst + 8 * i, src[i]);
}

// Storage-only integer types: read as float (for inspection and loading), never quantized to.
template <typename T>
void DequantizeInteger(const Layout& layout, const uint8_t* src, float* dst) {
  for (int64_t i = 0; i < Elements(layout); ++i) {
    dst[i] = static_cast<float>(LoadUnaligned<T>(src + sizeof(T) * i));
  }
}

template <int64_t kBytes>
int64_t PlainBytes(const Layout& layout) {
  return Elements(layout) * kBytes;
}

int64_t BlockBytes(const Layout& layout) {
  const TypeTraits& traits = Traits(layout.type);
  Require(layout.cols % traits.block_size == 0, "{} needs rows whose length is a multiple of {}, got {}", traits.name,
          traits.block_size, layout.cols);
  return layout.rows * (layout.cols / traits.block_size) * traits.bytes_per_block;
}

// bits per weight of a ggml block: its bytes over its weights.
template <typename Block>
constexpr double BlockBits(int64_t weights) {
  return 8.0 * sizeof(Block) / static_cast<double>(weights);
}

// A k-quant row: read, never written (quantize nullptr), no integer-kernel codes.
#define ATQ_KQUANT_ROW(id, name, desc)                                                                             \
  TypeTraits {                                                                                                     \
    QuantType::k##id, name, TypeFamily::kGgmlBlock, kQK_K, sizeof(Block##id), BlockBits<Block##id>(kQK_K), true, \
        desc, nullptr, Dequantize##id, BlockBytes                                                                  \
  }

#define ATQ_UNIFORM_ROW(bits, kind, suffix, desc)                                                                    \
  TypeTraits {                                                                                                       \
    QuantType::kUniform##bits##kind, "u" #bits suffix, TypeFamily::kUniform, 8, bits, bits, true, desc, QuantizeAtq, \
        DequantizeAtq, AtqPackedBytes                                                                                \
  }

// Built on first use (not at static initialization), so other TUs' static initializers can read it.
std::vector<TypeTraits> MakeTable() {
  return {
      {QuantType::kF32, "f32", TypeFamily::kFloat, 1, 4, 32, false, "IEEE float32", QuantizeF32, DequantizeF32,
       PlainBytes<4>},
      {QuantType::kF16, "f16", TypeFamily::kFloat, 1, 2, 16, false, "IEEE float16", QuantizeF16, DequantizeF16,
       PlainBytes<2>},
      {QuantType::kQ4_0, "q4_0", TypeFamily::kGgmlBlock, kQK4_0, sizeof(BlockQ4_0), BlockBits<BlockQ4_0>(kQK4_0), true,
       "llama.cpp Q4_0: 32 weights, f16 scale, 4-bit codes", QuantizeQ4_0, DequantizeQ4_0, BlockBytes,
       {Q4_0Codes, 8, offsetof(BlockQ4_0, d)}},
      {QuantType::kQ4_1, "q4_1", TypeFamily::kGgmlBlock, kQK4_0, sizeof(BlockQ4_1), BlockBits<BlockQ4_1>(kQK4_0), true,
       "llama.cpp Q4_1: 32 weights, f16 step and minimum, 4-bit codes", QuantizeQ4_1, DequantizeQ4_1, BlockBytes},
      {QuantType::kQ5_0, "q5_0", TypeFamily::kGgmlBlock, kQK4_0, sizeof(BlockQ5_0), BlockBits<BlockQ5_0>(kQK4_0), true,
       "llama.cpp Q5_0: 32 weights, f16 scale, 5-bit codes", QuantizeQ5_0, DequantizeQ5_0, BlockBytes,
       {Q5_0Codes, 16, offsetof(BlockQ5_0, d)}},
      {QuantType::kQ5_1, "q5_1", TypeFamily::kGgmlBlock, kQK4_0, sizeof(BlockQ5_1), BlockBits<BlockQ5_1>(kQK4_0), true,
       "llama.cpp Q5_1: 32 weights, f16 step and minimum, 5-bit codes", QuantizeQ5_1, DequantizeQ5_1, BlockBytes},
      {QuantType::kQ8_0, "q8_0", TypeFamily::kGgmlBlock, kQK8_0, sizeof(BlockQ8_0), BlockBits<BlockQ8_0>(kQK8_0), true,
       "llama.cpp Q8_0: 32 weights, f16 scale, int8 codes", QuantizeQ8_0, DequantizeQ8_0, BlockBytes,
       {Q8_0Codes, 128, offsetof(BlockQ8_0, d)}},
      ATQ_KQUANT_ROW(Q2_K, "q2_k", "llama.cpp Q2_K (read only): 16x16 weights, 4-bit scales and minimums"),
      ATQ_KQUANT_ROW(Q3_K, "q3_k", "llama.cpp Q3_K (read only): 16x16 weights, 6-bit scales, 3-bit codes"),
      ATQ_KQUANT_ROW(Q4_K, "q4_k", "llama.cpp Q4_K (read only): 8x32 weights, 6-bit scales and minimums"),
      ATQ_KQUANT_ROW(Q5_K, "q5_k", "llama.cpp Q5_K (read only): 8x32 weights, 6-bit scales and minimums"),
      ATQ_KQUANT_ROW(Q6_K, "q6_k", "llama.cpp Q6_K (read only): 16x16 weights, int8 scales, 6-bit codes"),
      ATQ_KQUANT_ROW(Q8_K, "q8_k", "llama.cpp Q8_K (read only): 256 weights, f32 scale, int8 codes"),
      {QuantType::kI8, "i8", TypeFamily::kInteger, 1, 1, 8, false, "int8 (storage)", nullptr, DequantizeInteger<int8_t>,
       PlainBytes<1>},
      {QuantType::kI16, "i16", TypeFamily::kInteger, 1, 2, 16, false, "int16 (storage)", nullptr,
       DequantizeInteger<int16_t>, PlainBytes<2>},
      {QuantType::kI32, "i32", TypeFamily::kInteger, 1, 4, 32, false, "int32 (storage)", nullptr,
       DequantizeInteger<int32_t>, PlainBytes<4>},
      {QuantType::kI64, "i64", TypeFamily::kInteger, 1, 8, 64, false, "int64 (storage)", nullptr,
       DequantizeInteger<int64_t>, PlainBytes<8>},
      {QuantType::kF64, "f64", TypeFamily::kFloat, 1, 8, 64, false, "IEEE float64", QuantizeF64,
       DequantizeInteger<double>, PlainBytes<8>},
      {QuantType::kBF16, "bf16", TypeFamily::kFloat, 1, 2, 16, false, "bfloat16", QuantizeBF16, DequantizeBF16,
       PlainBytes<2>},
      {QuantType::kTQ1_0, "tq1_0", TypeFamily::kGgmlBlock, kQK_K, sizeof(BlockTQ1_0), BlockBits<BlockTQ1_0>(kQK_K), true,
       "llama.cpp TQ1_0: 256 ternary weights, base-3 packing, f16 scale", QuantizeTQ1_0, DequantizeTQ1_0, BlockBytes,
       {TQ1_0Codes, 1, offsetof(BlockTQ1_0, d)}},
      {QuantType::kTQ2_0, "tq2_0", TypeFamily::kGgmlBlock, kQK_K, sizeof(BlockTQ2_0), BlockBits<BlockTQ2_0>(kQK_K), true,
       "llama.cpp TQ2_0: 256 ternary weights, 2-bit codes, f16 scale", QuantizeTQ2_0, DequantizeTQ2_0, BlockBytes,
       {TQ2_0Codes, 1, offsetof(BlockTQ2_0, d)}},
      {QuantType::kU8, "u8", TypeFamily::kInteger, 1, 1, 8, false, "uint8 (storage)", nullptr,
       DequantizeInteger<uint8_t>, PlainBytes<1>},
      {QuantType::kBool, "bool", TypeFamily::kInteger, 1, 1, 8, false, "bool, one byte (storage)", nullptr,
       DequantizeInteger<uint8_t>, PlainBytes<1>},
      {QuantType::kTernary2, "t2", TypeFamily::kTernary, 4, 1, 2, true,
       "atq ternary, 4 weights per byte, f32 scale per tensor/channel/group", QuantizeAtq, DequantizeAtq,
       AtqPackedBytes},
      {QuantType::kTernary1_6, "t1.6", TypeFamily::kTernary, 5, 1, 1.6, true,
       "atq ternary, 5 weights per byte (base 3), f32 scale per tensor/channel/group", QuantizeAtq, DequantizeAtq,
       AtqPackedBytes},
      ATQ_UNIFORM_ROW(2, Sym, "s", "atq uniform 2-bit symmetric"),
      ATQ_UNIFORM_ROW(3, Sym, "s", "atq uniform 3-bit symmetric"),
      ATQ_UNIFORM_ROW(4, Sym, "s", "atq uniform 4-bit symmetric"),
      ATQ_UNIFORM_ROW(5, Sym, "s", "atq uniform 5-bit symmetric"),
      ATQ_UNIFORM_ROW(6, Sym, "s", "atq uniform 6-bit symmetric"),
      ATQ_UNIFORM_ROW(7, Sym, "s", "atq uniform 7-bit symmetric"),
      ATQ_UNIFORM_ROW(8, Sym, "s", "atq uniform 8-bit symmetric"),
      ATQ_UNIFORM_ROW(2, Asym, "a", "atq uniform 2-bit asymmetric (scale + zero point)"),
      ATQ_UNIFORM_ROW(3, Asym, "a", "atq uniform 3-bit asymmetric (scale + zero point)"),
      ATQ_UNIFORM_ROW(4, Asym, "a", "atq uniform 4-bit asymmetric (scale + zero point)"),
      ATQ_UNIFORM_ROW(5, Asym, "a", "atq uniform 5-bit asymmetric (scale + zero point)"),
      ATQ_UNIFORM_ROW(6, Asym, "a", "atq uniform 6-bit asymmetric (scale + zero point)"),
      ATQ_UNIFORM_ROW(7, Asym, "a", "atq uniform 7-bit asymmetric (scale + zero point)"),
      ATQ_UNIFORM_ROW(8, Asym, "a", "atq uniform 8-bit asymmetric (scale + zero point)"),
  };
}
#undef ATQ_UNIFORM_ROW
#undef ATQ_KQUANT_ROW

std::string Lower(std::string_view text) {
  std::string out(text);
  std::transform(out.begin(), out.end(), out.begin(), [](unsigned char c) { return std::tolower(c); });
  return out;
}

void CheckLayout(const Layout& layout) {
  const TypeTraits& traits = Traits(layout.type);
  Require(layout.rows >= 0 && layout.cols >= 0, "{}: negative shape {}x{}", traits.name, layout.rows, layout.cols);
  Require(layout.cols == 0 || layout.rows <= INT64_MAX / layout.cols, "{}: shape {}x{} overflows", traits.name,
          layout.rows, layout.cols);
  if (traits.family == TypeFamily::kTernary || traits.family == TypeFamily::kUniform) {
    Require(layout.granularity != Granularity::kGroup || layout.group_size > 0,
            "{}: per-group scales need a group size > 0, got {}", traits.name, layout.group_size);
  }
}

}  // namespace

const std::vector<TypeTraits>& AllTypes() {
  static const std::vector<TypeTraits> table = MakeTable();
  return table;
}

const TypeTraits* FindTraits(uint32_t id) {
  // Kernels look types up per row: an index by id instead of a scan of the table.
  constexpr uint32_t kMaxId = 256;
  static const std::vector<const TypeTraits*> by_id = [] {
    std::vector<const TypeTraits*> index(kMaxId, nullptr);
    for (const TypeTraits& row : AllTypes()) index.at(static_cast<uint32_t>(row.type)) = &row;
    return index;
  }();
  return id < kMaxId ? by_id[id] : nullptr;
}

const TypeTraits& Traits(QuantType type) {
  const TypeTraits* row = FindTraits(static_cast<uint32_t>(type));
  if (row == nullptr) Fail("unknown tensor type id {}", static_cast<uint32_t>(type));
  return *row;
}

QuantType UniformType(int bits, bool symmetric) {
  static constexpr QuantType kSymmetric[] = {QuantType::kUniform2Sym, QuantType::kUniform3Sym, QuantType::kUniform4Sym,
                                             QuantType::kUniform5Sym, QuantType::kUniform6Sym, QuantType::kUniform7Sym,
                                             QuantType::kUniform8Sym};
  static constexpr QuantType kAsymmetric[] = {QuantType::kUniform2Asym, QuantType::kUniform3Asym,
                                              QuantType::kUniform4Asym, QuantType::kUniform5Asym,
                                              QuantType::kUniform6Asym, QuantType::kUniform7Asym,
                                              QuantType::kUniform8Asym};
  Require(bits >= 2 && bits <= 8, "atq's uniform types have 2 to 8 bits, not {}", bits);
  return (symmetric ? kSymmetric : kAsymmetric)[bits - 2];
}

std::optional<QuantType> ParseQuantType(std::string_view name) {
  const std::string wanted = Lower(name);
  for (const TypeTraits& row : AllTypes()) {
    if (row.name == wanted) return row.type;
  }
  return std::nullopt;
}

int64_t PackedBytes(const Layout& layout) {
  CheckLayout(layout);
  return Traits(layout.type).packed_bytes(layout);
}

void Quantize(const Layout& layout, const float* src, uint8_t* dst) {
  const TypeTraits& traits = Traits(layout.type);
  CheckLayout(layout);
  Require(traits.quantize != nullptr, "{}: atq reads this type but does not quantize to it ({})", traits.name,
          traits.family == TypeFamily::kInteger ? "a storage type" : "llama.cpp's own search writes it");
  traits.packed_bytes(layout);  // rejects shapes the type cannot hold
  if (traits.is_quantized) {
    const int64_t count = layout.rows * layout.cols;
    for (int64_t i = 0; i < count; ++i) {
      if (!std::isfinite(src[i])) {
        Fail("cannot quantize to {}: element {} (row {}, column {}) is {}", traits.name, i, i / layout.cols,
             i % layout.cols, src[i]);
      }
    }
  }
  traits.quantize(layout, src, dst);
}

std::vector<uint8_t> Quantize(const Layout& layout, const float* src) {
  std::vector<uint8_t> packed(static_cast<size_t>(PackedBytes(layout)));
  Quantize(layout, src, packed.data());
  return packed;
}

void Dequantize(const Layout& layout, const uint8_t* src, float* dst) {
  CheckLayout(layout);
  Traits(layout.type).dequantize(layout, src, dst);
}

std::vector<float> Dequantize(const Layout& layout, const uint8_t* src, int64_t src_bytes) {
  const int64_t expected = PackedBytes(layout);
  Require(src_bytes == expected, "{} tensor {}x{} needs {} bytes, got {}", TypeName(layout.type), layout.rows,
          layout.cols, expected, src_bytes);
  std::vector<float> out(static_cast<size_t>(layout.rows * layout.cols));
  Dequantize(layout, src, out.data());
  return out;
}

std::string GranularityString(const Layout& layout) {
  switch (layout.granularity) {
    case Granularity::kTensor: return "tensor";
    case Granularity::kChannel: return "channel";
    case Granularity::kGroup: return fmt::format("group:{}", layout.group_size);
  }
  Fail("unknown scale granularity {}", static_cast<int>(layout.granularity));
}

bool ParseGranularity(std::string_view text, Layout& layout) {
  if (text == "tensor" || text == "channel") {
    layout.granularity = text == "tensor" ? Granularity::kTensor : Granularity::kChannel;
    layout.group_size = 0;
    return true;
  }
  constexpr std::string_view kGroup = "group:";
  if (text.substr(0, kGroup.size()) != kGroup) return false;
  const std::string_view digits = text.substr(kGroup.size());
  if (digits.empty() || digits[0] < '1' || digits[0] > '9') return false;
  int64_t group_size = 0;
  const auto [end, error] = std::from_chars(digits.data(), digits.data() + digits.size(), group_size);
  if (error != std::errc() || end != digits.data() + digits.size()) return false;
  layout.granularity = Granularity::kGroup;
  layout.group_size = group_size;
  return true;
}

}  // namespace atq
