// atq's own packed formats (ternary2, ternary1.6, uniform b-bit): layout arithmetic, packing of codes,
// and the reference quantizers. The byte layout is documented in atq_packed.h.
#include "formats/atq_packed.h"

#include <algorithm>
#include <cmath>
#include <cstring>

#include "util/error.h"

namespace atq {
namespace {

static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__, "atq scales are stored little-endian via memcpy");

bool IsTernary(QuantType type) { return type == QuantType::kTernary2 || type == QuantType::kTernary1_6; }

bool IsUniform(QuantType type) {
  const TypeTraits* traits = FindTraits(static_cast<uint32_t>(type));
  return traits != nullptr && traits->family == TypeFamily::kUniform;
}

// Rejects layouts the atq formats cannot describe; every public function goes through this first.
void CheckAtqLayout(const Layout& layout) {
  const std::string_view name = TypeName(layout.type);
  Require(IsTernary(layout.type) || IsUniform(layout.type), "{} is not an atq packed format", name);
  Require(layout.rows >= 0 && layout.cols >= 0, "{}: negative shape {}x{}", name, layout.rows, layout.cols);
  // Up to 8 bits per weight plus 5 bytes per scale group: bounding weights by 2^59 keeps every size below 2^63.
  constexpr int64_t kMaxWeights = INT64_MAX / 16;
  Require(layout.cols <= kMaxWeights && (layout.cols == 0 || layout.rows <= kMaxWeights / layout.cols),
          "{}: shape {}x{} is too large", name, layout.rows, layout.cols);
  switch (layout.granularity) {
    case Granularity::kTensor:
    case Granularity::kChannel: break;
    case Granularity::kGroup:
      Require(layout.group_size > 0, "{}: per-group scales need a group size > 0, got {}", name, layout.group_size);
      break;
    default: Fail("{}: unknown scale granularity {}", name, static_cast<int>(layout.granularity));
  }
}

// The largest stored code: 2 for ternary (trit + 1), 2^b - 1 for uniform b-bit.
int MaxCode(QuantType type) { return IsTernary(type) ? 2 : (1 << UniformBits(type)) - 1; }

// For a >= 0, b > 0; does not overflow for any b (group sizes come from users).
int64_t CeilDiv(int64_t a, int64_t b) { return a / b + (a % b != 0 ? 1 : 0); }

void WriteCodesRow(const Layout& layout, const uint8_t* codes, uint8_t* row) {
  const int64_t cols = layout.cols;
  const int64_t row_bytes = RowBytes(layout);
  if (layout.type == QuantType::kTernary2) {
    for (int64_t byte = 0; byte < row_bytes; ++byte) {
      int packed = 0;
      for (int64_t k = 0; k < 4; ++k) {
        const int64_t j = byte * 4 + k;
        packed |= (j < cols ? codes[j] : 1) << (2 * k);
      }
      row[byte] = static_cast<uint8_t>(packed);
    }
  } else if (layout.type == QuantType::kTernary1_6) {
    for (int64_t byte = 0; byte < row_bytes; ++byte) {
      int packed = 0;
      for (int64_t k = 4; k >= 0; --k) {  // Horner: code_0 + 3 * (code_1 + 3 * (...))
        const int64_t j = byte * 5 + k;
        packed = packed * 3 + (j < cols ? codes[j] : 1);
      }
      row[byte] = static_cast<uint8_t>(packed);
    }
  } else {
    const int bits = UniformBits(layout.type);
    if (row_bytes > 0) std::memset(row, 0, static_cast<size_t>(row_bytes));
    for (int64_t j = 0; j < cols; ++j) {
      const int64_t first_bit = j * bits;
      // A code spans at most two bytes (b <= 8).
      const unsigned shifted = static_cast<unsigned>(codes[j]) << (first_bit % 8);
      row[first_bit / 8] = static_cast<uint8_t>(row[first_bit / 8] | (shifted & 0xFFu));
      if ((first_bit % 8) + bits > 8) {
        row[first_bit / 8 + 1] = static_cast<uint8_t>(row[first_bit / 8 + 1] | (shifted >> 8));
      }
    }
  }
}

void ReadCodesRow(const Layout& layout, const uint8_t* row, int64_t row_index, uint8_t* codes) {
  const int64_t cols = layout.cols;
  if (layout.type == QuantType::kTernary2) {
    for (int64_t j = 0; j < cols; ++j) {
      const int code = (row[j / 4] >> (2 * (j % 4))) & 3;
      if (code == 3) {
        Fail("{}: row {}, column {} holds code 3, which is not a ternary code (0, 1, 2)", TypeName(layout.type),
             row_index, j);
      }
      codes[j] = static_cast<uint8_t>(code);
    }
  } else if (layout.type == QuantType::kTernary1_6) {
    for (int64_t byte = 0; byte * 5 < cols; ++byte) {
      int packed = row[byte];
      if (packed > 242) {
        Fail("{}: row {}, byte {} holds {}, more than 3^5 - 1 = 242", TypeName(layout.type), row_index, byte, packed);
      }
      for (int64_t k = 0; k < 5 && byte * 5 + k < cols; ++k) {
        codes[byte * 5 + k] = static_cast<uint8_t>(packed % 3);
        packed /= 3;
      }
    }
  } else if (UniformBits(layout.type) == 8) {
    if (cols > 0) std::memcpy(codes, row, static_cast<size_t>(cols));  // (an empty row may be a null pointer)
  } else if (UniformBits(layout.type) == 4) {
    const int64_t pairs = cols / 2;
    for (int64_t b = 0; b < pairs; ++b) {
      const uint8_t byte = row[b];
      codes[2 * b] = static_cast<uint8_t>(byte & 0x0F);
      codes[2 * b + 1] = static_cast<uint8_t>(byte >> 4);
    }
    if (cols % 2 != 0) codes[cols - 1] = static_cast<uint8_t>(row[cols / 2] & 0x0F);
  } else {
    const int bits = UniformBits(layout.type);
    const unsigned mask = (1u << bits) - 1;
    const int64_t row_bytes = RowBytes(layout);
    for (int64_t j = 0; j < cols; ++j) {
      const int64_t first_bit = j * bits;
      unsigned window = row[first_bit / 8];
      if (first_bit / 8 + 1 < row_bytes) window |= static_cast<unsigned>(row[first_bit / 8 + 1]) << 8;
      codes[j] = static_cast<uint8_t>((window >> (first_bit % 8)) & mask);
    }
  }
}

float LoadFloat(const uint8_t* p) {
  float value;
  std::memcpy(&value, p, 4);
  return value;
}

// Calls visit(scale group, index, value) for every weight, in memory order.
template <typename Visit>
void ForEachWeight(const Layout& layout, const float* src, Visit visit) {
  for (int64_t row = 0; row < layout.rows; ++row) {
    for (int64_t col = 0; col < layout.cols; ++col) {
      visit(ScaleGroupOf(layout, row, col), row * layout.cols + col, src[row * layout.cols + col]);
    }
  }
}

// ternary: threshold = 0.7 * mean|w|; scale = mean |w| over the weights above it. Sums in double so that
// re-quantizing a dequantized tensor (every kept |w| equal to the scale) gives back the same scale exactly.
void ChooseTernary(const Layout& layout, const float* src, AtqCodes& out) {
  constexpr double kThresholdFraction = 0.7;
  const int64_t groups = NumScaleGroups(layout);
  std::vector<double> abs_sum(static_cast<size_t>(groups), 0.0);
  std::vector<int64_t> count(static_cast<size_t>(groups), 0);
  ForEachWeight(layout, src, [&](int64_t group, int64_t, float w) {
    abs_sum[group] += std::fabs(w);
    ++count[group];
  });
  std::vector<double> threshold(static_cast<size_t>(groups), 0.0);
  for (int64_t g = 0; g < groups; ++g) {
    threshold[g] = count[g] > 0 ? kThresholdFraction * abs_sum[g] / static_cast<double>(count[g]) : 0.0;
  }
  std::vector<double> kept_sum(static_cast<size_t>(groups), 0.0);
  std::vector<int64_t> kept(static_cast<size_t>(groups), 0);
  ForEachWeight(layout, src, [&](int64_t group, int64_t index, float w) {
    const bool keep = std::fabs(w) > threshold[group];
    if (keep) {
      kept_sum[group] += std::fabs(w);
      ++kept[group];
    }
    out.codes[index] = static_cast<uint8_t>(keep ? (w > 0 ? 2 : 0) : 1);
  });
  for (int64_t g = 0; g < groups; ++g) {
    out.scales[g] = kept[g] > 0 ? static_cast<float>(kept_sum[g] / static_cast<double>(kept[g])) : 0.0f;
  }
}

// symmetric b-bit: scale = max|w| / (2^(b-1) - 1); code = clamp(round(w / scale)) + 2^(b-1).
void ChooseUniformSymmetric(const Layout& layout, const float* src, AtqCodes& out) {
  const int bits = UniformBits(layout.type);
  const int middle = 1 << (bits - 1);
  const int64_t groups = NumScaleGroups(layout);
  std::vector<float> max_abs(static_cast<size_t>(groups), 0.0f);
  ForEachWeight(layout, src,
                [&](int64_t group, int64_t, float w) { max_abs[group] = std::max(max_abs[group], std::fabs(w)); });
  for (int64_t g = 0; g < groups; ++g) out.scales[g] = max_abs[g] / static_cast<float>(middle - 1);
  ForEachWeight(layout, src, [&](int64_t group, int64_t index, float w) {
    const float scale = out.scales[group];
    const float level = scale != 0.0f ? std::round(w / scale) : 0.0f;
    const float clamped = std::min(std::max(level, static_cast<float>(-middle)), static_cast<float>(middle - 1));
    out.codes[index] = static_cast<uint8_t>(static_cast<int>(clamped) + middle);
  });
}

// asymmetric b-bit: [min(w, 0), max(w, 0)] over 2^b - 1 steps; zero = round(-min / scale), so that 0 is exact.
// The range is taken in double: max - min of two finite floats can overflow float, the scale cannot.
void ChooseUniformAsymmetric(const Layout& layout, const float* src, AtqCodes& out) {
  const int max_code = MaxCode(layout.type);
  const int64_t groups = NumScaleGroups(layout);
  std::vector<float> low(static_cast<size_t>(groups), 0.0f);
  std::vector<float> high(static_cast<size_t>(groups), 0.0f);
  ForEachWeight(layout, src, [&](int64_t group, int64_t, float w) {
    low[group] = std::min(low[group], w);
    high[group] = std::max(high[group], w);
  });
  for (int64_t g = 0; g < groups; ++g) {
    const auto scale = static_cast<float>((static_cast<double>(high[g]) - low[g]) / max_code);
    out.scales[g] = scale;
    const float zero = scale != 0.0f ? std::round(-low[g] / scale) : 0.0f;
    out.zero_points[g] = static_cast<uint8_t>(std::min(std::max(zero, 0.0f), static_cast<float>(max_code)));
  }
  ForEachWeight(layout, src, [&](int64_t group, int64_t index, float w) {
    const float scale = out.scales[group];
    const float level = (scale != 0.0f ? std::round(w / scale) : 0.0f) + static_cast<float>(out.zero_points[group]);
    out.codes[index] = static_cast<uint8_t>(std::min(std::max(level, 0.0f), static_cast<float>(max_code)));
  });
}

}  // namespace

int UniformBits(QuantType type) {
  for (const bool symmetric : {true, false}) {
    for (int bits = 2; bits <= 8; ++bits) {
      if (UniformType(bits, symmetric) == type) return bits;
    }
  }
  Fail("{} is not a uniform b-bit type", TypeName(type));
}

bool IsAsymmetric(QuantType type) {
  return Traits(type).family == TypeFamily::kUniform && UniformType(UniformBits(type), /*symmetric=*/false) == type;
}

int64_t GroupsPerRow(const Layout& layout) {
  CheckAtqLayout(layout);
  return layout.granularity == Granularity::kGroup ? CeilDiv(layout.cols, layout.group_size) : 1;
}

int64_t NumScaleGroups(const Layout& layout) {
  CheckAtqLayout(layout);
  switch (layout.granularity) {
    case Granularity::kTensor: return 1;
    case Granularity::kChannel: return layout.rows;
    case Granularity::kGroup: break;
  }
  return layout.rows * GroupsPerRow(layout);
}

int64_t ScaleGroupOf(const Layout& layout, int64_t row, int64_t col) {
  switch (layout.granularity) {
    case Granularity::kTensor: return 0;
    case Granularity::kChannel: return row;
    case Granularity::kGroup: break;
  }
  return row * CeilDiv(layout.cols, layout.group_size) + col / layout.group_size;
}

int64_t RowBytes(const Layout& layout) {
  CheckAtqLayout(layout);
  if (layout.type == QuantType::kTernary2) return CeilDiv(layout.cols, 4);
  if (layout.type == QuantType::kTernary1_6) return CeilDiv(layout.cols, 5);
  return CeilDiv(layout.cols * UniformBits(layout.type), 8);
}

int64_t CodesBytes(const Layout& layout) { return layout.rows * RowBytes(layout); }

int64_t ScalesOffset(const Layout& layout) { return CeilDiv(CodesBytes(layout), 4) * 4; }

int64_t AtqPackedBytes(const Layout& layout) {
  const int64_t groups = NumScaleGroups(layout);
  return ScalesOffset(layout) + groups * 4 + (IsAsymmetric(layout.type) ? groups : 0);
}

void ReadAtqRowCodes(const Layout& layout, const uint8_t* src, int64_t row, uint8_t* codes) {
  ReadCodesRow(layout, src + row * RowBytes(layout), row, codes);
}

float AtqScale(const Layout& layout, const uint8_t* src, int64_t group) {
  return LoadFloat(src + ScalesOffset(layout) + 4 * group);
}

int AtqZeroPoint(const Layout& layout, const uint8_t* src, int64_t group) {
  if (!IsAsymmetric(layout.type)) return 0;
  return src[ScalesOffset(layout) + 4 * NumScaleGroups(layout) + group];
}

void PackAtq(const Layout& layout, const AtqCodes& codes, uint8_t* dst) {
  const std::string_view name = TypeName(layout.type);
  const int64_t groups = NumScaleGroups(layout);
  const int64_t count = layout.rows * layout.cols;
  Require(static_cast<int64_t>(codes.codes.size()) == count, "{} tensor {}x{} needs {} codes, got {}", name,
          layout.rows, layout.cols, count, codes.codes.size());
  Require(static_cast<int64_t>(codes.scales.size()) == groups, "{} tensor {}x{} needs {} scales, got {}", name,
          layout.rows, layout.cols, groups, codes.scales.size());
  const int64_t zero_count = IsAsymmetric(layout.type) ? groups : 0;
  Require(static_cast<int64_t>(codes.zero_points.size()) == zero_count, "{} tensor {}x{} needs {} zero points, got {}",
          name, layout.rows, layout.cols, zero_count, codes.zero_points.size());
  const int max_code = MaxCode(layout.type);
  for (int64_t i = 0; i < count; ++i) {
    if (codes.codes[i] > max_code) {
      Fail("{}: code {} at row {}, column {} is out of range 0..{}", name, codes.codes[i], i / layout.cols,
           i % layout.cols, max_code);
    }
  }
  for (int64_t g = 0; g < zero_count; ++g) {
    Require(codes.zero_points[g] <= max_code, "{}: zero point {} of scale group {} is out of range 0..{}", name,
            codes.zero_points[g], g, max_code);
  }
  for (int64_t g = 0; g < groups; ++g) {
    Require(std::isfinite(codes.scales[g]), "{}: scale of group {} is {}", name, g, codes.scales[g]);
  }

  const int64_t row_bytes = RowBytes(layout);
  for (int64_t row = 0; row < layout.rows; ++row) {
    WriteCodesRow(layout, codes.codes.data() + row * layout.cols, dst + row * row_bytes);
  }
  const int64_t codes_end = CodesBytes(layout);
  const int64_t scales_offset = ScalesOffset(layout);
  // (Every copy is guarded: for an empty layout dst may be a null vector.data(), which memset must not get.)
  if (scales_offset > codes_end) std::memset(dst + codes_end, 0, static_cast<size_t>(scales_offset - codes_end));
  if (groups > 0) std::memcpy(dst + scales_offset, codes.scales.data(), static_cast<size_t>(groups) * 4);
  if (zero_count > 0) {
    std::memcpy(dst + scales_offset + groups * 4, codes.zero_points.data(), static_cast<size_t>(zero_count));
  }
}

AtqCodes UnpackAtq(const Layout& layout, const uint8_t* src) {
  const int64_t groups = NumScaleGroups(layout);
  const int64_t row_bytes = RowBytes(layout);
  AtqCodes out;
  out.codes.resize(static_cast<size_t>(layout.rows * layout.cols));
  for (int64_t row = 0; row < layout.rows; ++row) {
    ReadCodesRow(layout, src + row * row_bytes, row, out.codes.data() + row * layout.cols);
  }
  const int64_t scales_offset = ScalesOffset(layout);
  out.scales.resize(static_cast<size_t>(groups));
  for (int64_t g = 0; g < groups; ++g) out.scales[g] = LoadFloat(src + scales_offset + 4 * g);
  if (IsAsymmetric(layout.type)) {
    const int max_code = MaxCode(layout.type);
    out.zero_points.assign(src + scales_offset + 4 * groups, src + scales_offset + 4 * groups + groups);
    for (int64_t g = 0; g < groups; ++g) {
      Require(out.zero_points[g] <= max_code, "{}: zero point {} of scale group {} is out of range 0..{}",
              TypeName(layout.type), out.zero_points[g], g, max_code);
    }
  }
  return out;
}

void QuantizeAtq(const Layout& layout, const float* src, uint8_t* dst) {
  const int64_t groups = NumScaleGroups(layout);
  AtqCodes codes;
  codes.codes.resize(static_cast<size_t>(layout.rows * layout.cols));
  codes.scales.resize(static_cast<size_t>(groups));
  if (IsAsymmetric(layout.type)) codes.zero_points.resize(static_cast<size_t>(groups));
  if (IsTernary(layout.type)) {
    ChooseTernary(layout, src, codes);
  } else if (IsAsymmetric(layout.type)) {
    ChooseUniformAsymmetric(layout, src, codes);
  } else {
    ChooseUniformSymmetric(layout, src, codes);
  }
  PackAtq(layout, codes, dst);
}

void DequantizeAtq(const Layout& layout, const uint8_t* src, float* dst) {
  const AtqCodes codes = UnpackAtq(layout, src);
  // The code that stands for 0: 1 for ternary (trit + 1), 2^(b-1) for symmetric; asymmetric types store theirs.
  const bool asymmetric = IsAsymmetric(layout.type);
  const int fixed_zero = IsTernary(layout.type) ? 1 : asymmetric ? 0 : 1 << (UniformBits(layout.type) - 1);
  for (int64_t row = 0; row < layout.rows; ++row) {
    for (int64_t col = 0; col < layout.cols; ++col) {
      const int64_t group = ScaleGroupOf(layout, row, col);
      const int64_t index = row * layout.cols + col;
      const int zero = asymmetric ? codes.zero_points[group] : fixed_zero;
      dst[index] = codes.scales[group] * static_cast<float>(codes.codes[index] - zero);
    }
  }
}

}  // namespace atq
