// The codes table of the kernels: per format, where a row's codes, scales and offsets live.
#include "kernels/packed_matrix.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <vector>

#include "formats/atq_packed.h"
#include "formats/ggml_blocks.h"
#include "formats/half.h"
#include "util/error.h"

namespace atq {
namespace {

constexpr int64_t kAtqSegment = 256;      // rows longer than kMaxRowSegment
constexpr int64_t kMaxRowSegment = 65536;

bool IsGgmlCodes(QuantType type) { return Traits(type).block_codes.decode != nullptr; }

int64_t RowStride(const Layout& layout) {
  const TypeTraits& traits = Traits(layout.type);
  return layout.cols / traits.block_size * traits.bytes_per_block;
}

}  // namespace

bool IsFloatWeight(QuantType type) {
  return type == QuantType::kF32 || type == QuantType::kF16 || type == QuantType::kBF16;
}

int64_t KernelSegment(const Layout& layout) {
  if (IsFloatWeight(layout.type)) return 0;
  if (IsGgmlCodes(layout.type)) return Traits(layout.type).block_size;
  const TypeTraits& traits = Traits(layout.type);
  Require(traits.family == TypeFamily::kTernary || traits.family == TypeFamily::kUniform,
          "{} has no matrix kernel (kernels run f32, f16, bf16, the ggml types with one scale and integer codes per "
          "block: q8_0, q4_0, q5_0, tq1_0, tq2_0, and atq's packed types)",
          traits.name);
  // One weight scale per row: one int8 activation scale per row too (per token, as BitNet b1.58 quantizes its
  // activations), so a row is one integer sum. Integer sums stay within int32 while 255 * 127 * cols < 2^31.
  if (layout.granularity != Granularity::kGroup) return layout.cols <= kMaxRowSegment ? std::max<int64_t>(layout.cols, 1) : kAtqSegment;
  // Integer sums of a segment stay within int32: 255 * 127 * 16384 < 2^31.
  Require(layout.group_size <= 16384, "{}: kernels take groups of at most 16384 weights, not {}", traits.name,
          layout.group_size);
  return layout.group_size;
}

int64_t SegmentsPerRow(const Layout& layout) {
  const int64_t segment = KernelSegment(layout);
  return segment == 0 ? 0 : (layout.cols + segment - 1) / segment;
}

void CheckPackedMatrix(const PackedMatrix& matrix, int64_t bytes, const std::string& what) {
  const Layout& layout = matrix.layout;
  try {
    KernelSegment(layout);
    const int64_t expected = PackedBytes(layout);
    Require(bytes == expected, "{} bytes for a {} matrix {}x{}, which takes {}", bytes, TypeName(layout.type),
            layout.rows, layout.cols, expected);
    const TypeFamily family = Traits(layout.type).family;
    if (family == TypeFamily::kTernary || family == TypeFamily::kUniform) {
      std::vector<uint8_t> codes(static_cast<size_t>(layout.cols));
      for (int64_t row = 0; row < layout.rows; ++row) ReadAtqRowCodes(layout, matrix.data, row, codes.data());
      for (int64_t group = 0; group < NumScaleGroups(layout); ++group) {
        const float scale = AtqScale(layout, matrix.data, group);
        Require(std::isfinite(scale), "scale group {} holds {}", group, scale);
        if (family == TypeFamily::kUniform && IsAsymmetric(layout.type)) {
          const int zero = AtqZeroPoint(layout, matrix.data, group);
          Require(zero < (1 << UniformBits(layout.type)), "zero point {} of group {} is out of range", zero, group);
        }
      }
    }
  } catch (const Error& error) {
    Fail("{}: {}", what, error.what());
  }
}

RowDecoder::RowDecoder(const PackedMatrix& matrix)
    : matrix_(matrix),
      segment_(KernelSegment(matrix.layout)),
      segments_(SegmentsPerRow(matrix.layout)),
      ggml_(IsGgmlCodes(matrix.layout.type)) {
  const Layout& layout = matrix.layout;
  if (ggml_) {
    block_bytes_ = Traits(layout.type).bytes_per_block;
    row_stride_ = RowStride(layout);
    const BlockCodes& codes = Traits(layout.type).block_codes;
    block_decode_ = codes.decode;
    scale_at_ = codes.scale_byte;
    fixed_offset_ = codes.offset;
    return;
  }
  const bool ternary = Traits(layout.type).family == TypeFamily::kTernary;
  fixed_offset_ = ternary ? 1 : 1 << (UniformBits(layout.type) - 1);
  scale_bytes_ = matrix.data + ScalesOffset(layout);
  if (!ternary && IsAsymmetric(layout.type)) zero_points_ = scale_bytes_ + 4 * NumScaleGroups(layout);
  per_group_ = layout.granularity == Granularity::kGroup;
  groups_per_row_ = layout.granularity == Granularity::kTensor ? 0 : GroupsPerRow(layout);
}

void RowDecoder::Scales(int64_t row, float* scales, int32_t* offsets) const {
  if (ggml_) {
    const uint8_t* row_data = matrix_.data + row * row_stride_;
    for (int64_t s = 0; s < segments_; ++s) {
      uint16_t bits;
      std::memcpy(&bits, row_data + s * block_bytes_ + scale_at_, 2);
      scales[s] = F16ToF32(bits);
      offsets[s] = fixed_offset_;
    }
    return;
  }
  // Per group, segments are the row's groups; per channel or tensor, every segment of the row shares one scale.
  for (int64_t s = 0; s < segments_; ++s) {
    const int64_t group = per_group_ ? row * groups_per_row_ + s : row * groups_per_row_;
    std::memcpy(&scales[s], scale_bytes_ + 4 * group, 4);
    offsets[s] = zero_points_ != nullptr ? zero_points_[group] : fixed_offset_;
  }
}

void RowDecoder::Decode(int64_t row, uint8_t* codes, float* scales, int32_t* offsets) const {
  if (segments_ > 0) std::memset(codes, 0, static_cast<size_t>(segments_ * segment_));  // (empty rows: maybe null)
  Scales(row, scales, offsets);
  if (ggml_) {
    const uint8_t* row_data = matrix_.data + row * row_stride_;
    for (int64_t s = 0; s < segments_; ++s) {
      block_decode_(row_data + s * block_bytes_, codes + s * segment_);
    }
  } else {
    ReadAtqRowCodes(matrix_.layout, matrix_.data, row, codes);
  }
}

void DequantizeRow(const PackedMatrix& matrix, int64_t row, float* out) {
  const Layout& layout = matrix.layout;
  const int64_t cols = layout.cols;
  switch (layout.type) {
    case QuantType::kF32:
      if (cols > 0) std::memcpy(out, matrix.data + row * cols * 4, static_cast<size_t>(cols) * 4);
      return;
    case QuantType::kF16:
    case QuantType::kBF16: {
      const uint8_t* p = matrix.data + row * cols * 2;
      for (int64_t j = 0; j < cols; ++j) {
        uint16_t bits;
        std::memcpy(&bits, p + 2 * j, 2);
        out[j] = layout.type == QuantType::kF16 ? F16ToF32(bits) : BF16ToF32(bits);
      }
      return;
    }
    default: break;
  }
  const int64_t segment = KernelSegment(layout);
  const int64_t segments = SegmentsPerRow(layout);
  std::vector<uint8_t> codes(static_cast<size_t>(segments * segment));
  std::vector<float> scales(static_cast<size_t>(segments));
  std::vector<int32_t> offsets(static_cast<size_t>(segments));
  RowDecoder(matrix).Decode(row, codes.data(), scales.data(), offsets.data());
  for (int64_t j = 0; j < cols; ++j) {
    out[j] = scales[j / segment] * static_cast<float>(static_cast<int32_t>(codes[j]) - offsets[j / segment]);
  }
}

void CheckBoosted(const Layout& layout, const std::vector<int64_t>& index, const std::vector<float>& value,
                  const std::string& what) {
  Require(index.size() == value.size(), "{}: {} boosted indices but {} values", what, index.size(), value.size());
  const int64_t count = layout.rows * layout.cols;
  for (size_t k = 0; k < index.size(); ++k) {
    Require(index[k] >= 0 && index[k] < count, "{}: boosted weight {} is outside the {}x{} matrix", what, index[k],
            layout.rows, layout.cols);
    Require(k == 0 || index[k] > index[k - 1], "{}: boosted indices are not strictly increasing at {}", what, k);
    Require(std::isfinite(value[k]), "{}: boosted weight {} is {}", what, index[k], value[k]);
  }
}

void SetBoosted(PackedWeights& packed, std::vector<int64_t> index, std::vector<float> value, const std::string& what) {
  const Layout& layout = packed.layout;
  CheckBoosted(layout, index, value, what);
  std::vector<float> delta(index.size());
  std::vector<float> row_values(static_cast<size_t>(layout.cols));
  int64_t decoded = -1;
  for (size_t k = 0; k < index.size(); ++k) {
    const int64_t row = index[k] / layout.cols;
    if (row != decoded) DequantizeRow(packed.view(), decoded = row, row_values.data());
    delta[k] = value[k] - row_values[static_cast<size_t>(index[k] % layout.cols)];
  }
  packed.boosted_index = std::move(index);
  packed.boosted_value = std::move(value);
  packed.boosted_delta = std::move(delta);
}

void AddBoosted(const PackedWeights& packed, const float* x, int64_t n, float* y) {
  const int64_t rows = packed.layout.rows, cols = packed.layout.cols;
  for (size_t k = 0; k < packed.boosted_index.size(); ++k) {
    const int64_t r = packed.boosted_index[k] / cols, c = packed.boosted_index[k] % cols;
    const float delta = packed.boosted_delta[k];
    for (int64_t i = 0; i < n; ++i) y[i * rows + r] += x[i * cols + c] * delta;
  }
}

}  // namespace atq
