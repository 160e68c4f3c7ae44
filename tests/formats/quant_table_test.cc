// Table-driven tests over AllTypes(): every row is round-tripped, sized, re-quantized and fed NaN/Inf, so a
// new row is tested without new test code. Error bounds are derived per family below.
#include <algorithm>
#include <cctype>
#include <cfloat>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <functional>
#include <limits>
#include <ostream>
#include <random>
#include <set>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "formats/atq_packed.h"
#include "formats/half.h"
#include "formats/quant_type.h"
#include "util/error.h"

namespace atq {

// Failure messages name the type ("q4_0") rather than printing its bytes.
static void PrintTo(QuantType type, std::ostream* os) { *os << TypeName(type); }

namespace {

// ---- inputs ----

enum class Pattern { kNormal, kOutliers, kZeros, kPositive, kNegative, kConstant, kTiny };
constexpr Pattern kPatterns[] = {Pattern::kNormal,   Pattern::kOutliers, Pattern::kZeros, Pattern::kPositive,
                                 Pattern::kNegative, Pattern::kConstant, Pattern::kTiny};

// Weights with a different spread per row (so per-channel scales matter) and the given pattern.
std::vector<float> MakeWeights(const Layout& layout, Pattern pattern, uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  std::vector<float> w(static_cast<size_t>(layout.rows * layout.cols));
  for (int64_t r = 0; r < layout.rows; ++r) {
    const float row_scale = 0.02f * static_cast<float>(1 + r % 5);
    for (int64_t c = 0; c < layout.cols; ++c) {
      float& v = w[static_cast<size_t>(r * layout.cols + c)];
      const float n = normal(rng) * row_scale;
      switch (pattern) {
        case Pattern::kNormal: v = n; break;
        case Pattern::kOutliers: v = (c % 17 == 3) ? 40.0f * n : n; break;
        case Pattern::kZeros: v = 0.0f; break;
        case Pattern::kPositive: v = std::fabs(n) + 0.01f; break;
        case Pattern::kNegative: v = -std::fabs(n) - 0.01f; break;
        case Pattern::kConstant: v = 0.375f; break;
        case Pattern::kTiny: v = n * 1e-30f; break;  // scales underflow f16; 1/scale may overflow float
      }
    }
  }
  return w;
}

bool IsAtq(const TypeTraits& traits) {
  return traits.family == TypeFamily::kTernary || traits.family == TypeFamily::kUniform;
}

// Shapes each row is tested on: odd sizes and tails for atq and plain types; whole blocks for ggml types.
std::vector<Layout> LayoutsFor(const TypeTraits& traits) {
  std::vector<Layout> layouts;
  if (traits.family == TypeFamily::kGgmlBlock) {
    const int64_t block = traits.block_size;
    for (auto [rows, blocks] : std::vector<std::pair<int64_t, int64_t>>{{1, 1}, {4, 1}, {3, 2}, {1, 5}}) {
      layouts.push_back({traits.type, rows, blocks * block, Granularity::kTensor, 0});
    }
    return layouts;
  }
  const std::vector<std::pair<int64_t, int64_t>> shapes = {{1, 1},  {1, 7},  {3, 5},   {4, 13},
                                                           {2, 33}, {5, 64}, {7, 100}, {2, 255}};
  for (auto [rows, cols] : shapes) {
    if (!IsAtq(traits)) {
      layouts.push_back({traits.type, rows, cols, Granularity::kTensor, 0});
      continue;
    }
    layouts.push_back({traits.type, rows, cols, Granularity::kTensor, 0});
    layouts.push_back({traits.type, rows, cols, Granularity::kChannel, 0});
    for (int64_t group : {1, 3, 8, 32, 200}) layouts.push_back({traits.type, rows, cols, Granularity::kGroup, group});
  }
  return layouts;
}

std::string Describe(const Layout& layout) {
  static const char* const kGranularity[] = {"tensor", "channel", "group"};
  std::string text = std::string(TypeName(layout.type)) + " " + std::to_string(layout.rows) + "x" +
                     std::to_string(layout.cols) + " per " + kGranularity[static_cast<int>(layout.granularity)];
  if (layout.granularity == Granularity::kGroup) text += " " + std::to_string(layout.group_size);
  return text;
}

// The scale group of weight (row, col), computed here independently of ScaleGroupOf.
int64_t GroupOf(const Layout& layout, int64_t row, int64_t col) {
  switch (layout.granularity) {
    case Granularity::kTensor: return 0;
    case Granularity::kChannel: return row;
    case Granularity::kGroup: break;
  }
  const int64_t groups_per_row = (layout.cols + layout.group_size - 1) / layout.group_size;
  return row * groups_per_row + col / layout.group_size;
}

int64_t GroupCount(const Layout& layout) {
  switch (layout.granularity) {
    case Granularity::kTensor: return 1;
    case Granularity::kChannel: return layout.rows;
    case Granularity::kGroup: break;
  }
  return layout.rows * ((layout.cols + layout.group_size - 1) / layout.group_size);
}

// ---- error bounds, one per family ----
//
// Every bound below is exact arithmetic plus kFloatSlack: the quantizers compute x * (1/scale) or x / scale and
// the dequantizers scale * code in float32, each off by at most half an ulp, so a few ulps of the group's
// largest |w| cover what float rounding adds to the exact-arithmetic error.
constexpr float kFloatSlack = 8 * FLT_EPSILON;
// f16 keeps 10 mantissa bits: round to nearest is within 2^-11 relative in the normal range, and within half the
// subnormal spacing 2^-24 below it.
constexpr float kF16Relative = 1.0f / 2048;
constexpr float kF16Absolute = 1.0f / (1 << 25);
// bf16 keeps 7 mantissa bits: 2^-8 relative (same exponent range as float32).
constexpr float kBF16Relative = 1.0f / 256;
// atq ternary: threshold t = 0.7 mean|w| of the group; a weight at or below t becomes 0 (error <= t), one
// above it becomes +-scale where scale = mean of the |w| above t lies in (t, max|w|] (error < max|w| - t).
constexpr double kTernaryThresholdFraction = 0.7;

float F16Rounded(float x) { return F16ToF32(F32ToF16(x)); }

// Largest |w - dequantized w| each weight may have.
std::vector<float> ErrorBounds(const Layout& layout, const std::vector<float>& w) {
  const TypeTraits& traits = Traits(layout.type);
  const int64_t count = layout.rows * layout.cols;
  std::vector<float> bound(static_cast<size_t>(count), 0.0f);
  switch (traits.family) {
    case TypeFamily::kInteger: ADD_FAILURE() << "storage types are not quantized to"; break;
    case TypeFamily::kFloat:
      for (int64_t i = 0; i < count; ++i) {
        const float a = std::fabs(w[i]);
        if (layout.type == QuantType::kF16) bound[i] = a * kF16Relative + kF16Absolute;
        if (layout.type == QuantType::kBF16) bound[i] = a * kBF16Relative + FLT_MIN;
      }
      break;
    case TypeFamily::kGgmlBlock:
      for (int64_t block = 0; block < count / traits.block_size; ++block) {
        const float* x = w.data() + block * traits.block_size;
        float max_abs = 0.0f, max = 0.0f;
        for (int64_t j = 0; j < traits.block_size; ++j) {
          if (max_abs < std::fabs(x[j])) {
            max_abs = std::fabs(x[j]);
            max = x[j];
          }
        }
        float limit = 0.0f;
        if (layout.type == QuantType::kQ8_0) {
          // Half a step d = amax/127, plus the f16 rounding of d times the largest code 127.
          const float d = max_abs / 127;
          limit = d / 2 + 127 * std::fabs(d - F16Rounded(d));
        } else if (layout.type == QuantType::kQ4_0 || layout.type == QuantType::kQ5_0) {
          // d = max/-2^(b-1) puts the extreme weight on code 0; the opposite end (+2^(b-1) steps) does not exist
          // and is clamped to 2^(b-1) - 1, so a full step |d| there; plus 2^(b-1) times the f16 rounding of d.
          const float half_range = layout.type == QuantType::kQ4_0 ? 8 : 16;
          const float d = max / -half_range;
          limit = std::fabs(d) + half_range * std::fabs(d - F16Rounded(d));
        } else if (layout.type == QuantType::kQ4_1 || layout.type == QuantType::kQ5_1) {
          // d = (max - min) / (2^b - 1), m = min: half a step, plus the f16 rounding of d times the largest code
          // and the f16 rounding of m.
          const float top = layout.type == QuantType::kQ4_1 ? 15 : 31;
          const float low = *std::min_element(x, x + traits.block_size);
          const float high = *std::max_element(x, x + traits.block_size);
          const float d = (high - low) / top;
          limit = d / 2 + top * std::fabs(d - F16Rounded(d)) + std::fabs(low - F16Rounded(low));
        } else {
          // TQ1_0 / TQ2_0: d = amax, trits round(x/amax): half a step, plus the f16 rounding of d.
          limit = max_abs / 2 + std::fabs(max_abs - F16Rounded(max_abs));
        }
        limit += kFloatSlack * max_abs;
        for (int64_t j = 0; j < traits.block_size; ++j) bound[block * traits.block_size + j] = limit;
      }
      break;
    case TypeFamily::kTernary:
    case TypeFamily::kUniform: {
      const int64_t groups = GroupCount(layout);
      std::vector<double> abs_sum(groups, 0.0);
      std::vector<int64_t> members(groups, 0);
      std::vector<float> max_abs(groups, 0.0f), low(groups, 0.0f), high(groups, 0.0f);
      for (int64_t r = 0; r < layout.rows; ++r) {
        for (int64_t c = 0; c < layout.cols; ++c) {
          const int64_t g = GroupOf(layout, r, c);
          const float v = w[r * layout.cols + c];
          abs_sum[g] += std::fabs(v);
          ++members[g];
          max_abs[g] = std::max(max_abs[g], std::fabs(v));
          low[g] = std::min(low[g], v);
          high[g] = std::max(high[g], v);
        }
      }
      std::vector<float> limit(groups);
      for (int64_t g = 0; g < groups; ++g) {
        if (traits.family == TypeFamily::kTernary) {
          const double threshold = kTernaryThresholdFraction * abs_sum[g] / std::max<int64_t>(members[g], 1);
          limit[g] = static_cast<float>(std::max(threshold, max_abs[g] - threshold));
        } else if (IsAsymmetric(layout.type)) {
          // Half a step of (max(w,0) - min(w,0)) / (2^b - 1): the integer zero point keeps every weight within
          // half a step of the grid (see atq_packed.h).
          limit[g] = (high[g] - low[g]) / static_cast<float>((1 << UniformBits(layout.type)) - 1) / 2;
        } else {
          // Half a step of max|w| / (2^(b-1) - 1); no weight needs clamping.
          limit[g] = max_abs[g] / static_cast<float>((1 << (UniformBits(layout.type) - 1)) - 1) / 2;
        }
        limit[g] += kFloatSlack * std::max(max_abs[g], high[g] - low[g]);
      }
      for (int64_t r = 0; r < layout.rows; ++r) {
        for (int64_t c = 0; c < layout.cols; ++c) bound[r * layout.cols + c] = limit[GroupOf(layout, r, c)];
      }
      break;
    }
  }
  return bound;
}

// The packed size from the row's numbers alone: whole blocks for ggml; for atq, codes packed per row at
// bytes_per_block / block_size bytes per weight (rounded up per row), zero padding to 4, then a float32 scale
// (and a uint8 zero point for asymmetric types) per scale group.
int64_t ExpectedPackedBytes(const Layout& layout) {
  const TypeTraits& traits = Traits(layout.type);
  if (!IsAtq(traits)) return layout.rows * (layout.cols / traits.block_size) * traits.bytes_per_block;
  const int64_t row_bytes = (layout.cols * traits.bytes_per_block + traits.block_size - 1) / traits.block_size;
  const int64_t codes = layout.rows * row_bytes;
  const int64_t groups = GroupCount(layout);
  return (codes + 3) / 4 * 4 + groups * 4 + (IsAsymmetric(layout.type) ? groups : 0);
}

// ---- the table itself ----

TEST(QuantTableTest, RowsAreConsistent) {
  const std::vector<TypeTraits>& rows = AllTypes();
  ASSERT_FALSE(rows.empty());
  std::set<std::string_view> names;
  for (size_t i = 0; i < rows.size(); ++i) {
    const TypeTraits& row = rows[i];
    SCOPED_TRACE(std::string(row.name));
    if (i > 0) {
      EXPECT_LT(static_cast<uint32_t>(rows[i - 1].type), static_cast<uint32_t>(row.type)) << "id order";
    }
    EXPECT_TRUE(names.insert(row.name).second) << "duplicate name";
    EXPECT_EQ(FindTraits(static_cast<uint32_t>(row.type)), &row);
    EXPECT_EQ(ParseQuantType(row.name), row.type);
    std::string upper(row.name);
    for (char& c : upper) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
    EXPECT_EQ(ParseQuantType(upper), row.type);
    EXPECT_GT(row.block_size, 0);
    EXPECT_GT(row.bytes_per_block, 0);
    // bits per weight is what a block costs: for ggml rows scales included, for atq rows codes only.
    EXPECT_DOUBLE_EQ(row.bits_per_weight, 8.0 * row.bytes_per_block / row.block_size);
    EXPECT_NE(row.dequantize, nullptr);
    EXPECT_NE(row.packed_bytes, nullptr);
    // Storage types are never quantized to; read-only rows (llama.cpp's k-quants) are ggml blocks.
    if (row.family == TypeFamily::kInteger) {
      EXPECT_EQ(row.quantize, nullptr);
    }
    if (row.quantize == nullptr) {
      EXPECT_TRUE(row.family == TypeFamily::kInteger || row.family == TypeFamily::kGgmlBlock);
    }
    // Integer-kernel codes are a ggml block's: one f16 scale inside the block, offset within the code range.
    if (row.block_codes.decode != nullptr) {
      EXPECT_EQ(row.family, TypeFamily::kGgmlBlock);
      EXPECT_GE(row.block_codes.scale_byte, 0);
      EXPECT_LE(row.block_codes.scale_byte + 2, row.bytes_per_block);
      EXPECT_GT(row.block_codes.offset, 0);
    }
    EXPECT_EQ(row.is_quantized, row.family != TypeFamily::kInteger && row.family != TypeFamily::kFloat);
    EXPECT_FALSE(row.description.empty());
  }
  EXPECT_EQ(FindTraits(12345), nullptr);
  EXPECT_THROW(Traits(static_cast<QuantType>(12345)), Error);
  EXPECT_EQ(ParseQuantType("no-such-type"), std::nullopt);
  // GGUF needs llama.cpp's ids.
  EXPECT_EQ(static_cast<uint32_t>(QuantType::kQ4_0), 2u);
  EXPECT_EQ(static_cast<uint32_t>(QuantType::kQ8_0), 8u);
  EXPECT_EQ(static_cast<uint32_t>(QuantType::kTQ1_0), 34u);
  EXPECT_EQ(static_cast<uint32_t>(QuantType::kTQ2_0), 35u);
}

TEST(QuantTableTest, StorageAndReadOnlyTypesAreNotQuantizedTo) {
  for (const TypeTraits& row : AllTypes()) {
    if (row.quantize != nullptr) continue;
    const Layout layout{row.type, 1, row.block_size == 1 ? 4 : row.block_size, Granularity::kTensor, 0};
    const std::vector<float> w(static_cast<size_t>(layout.cols), 1.0f);
    std::vector<uint8_t> out(static_cast<size_t>(PackedBytes(layout)));
    try {
      Quantize(layout, w.data(), out.data());
      ADD_FAILURE() << row.name << ": expected an error";
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find(row.name), std::string::npos) << e.what();
    }
  }
}

// ---- one test suite per row that atq quantizes or converts to ----

std::vector<QuantType> ConvertibleTypes() {
  std::vector<QuantType> types;
  for (const TypeTraits& row : AllTypes()) {
    if (row.quantize != nullptr) types.push_back(row.type);
  }
  return types;
}

class EveryTypeTest : public ::testing::TestWithParam<QuantType> {
 protected:
  const TypeTraits& traits() const { return Traits(GetParam()); }
};

TEST_P(EveryTypeTest, PackedBytesMatchesTheSizeFormula) {
  for (const Layout& layout : LayoutsFor(traits())) {
    EXPECT_EQ(PackedBytes(layout), ExpectedPackedBytes(layout)) << Describe(layout);
  }
}

TEST_P(EveryTypeTest, RoundTripErrorIsWithinTheFamilyBound) {
  uint32_t seed = 1;
  for (const Layout& layout : LayoutsFor(traits())) {
    for (Pattern pattern : kPatterns) {
      const std::vector<float> w = MakeWeights(layout, pattern, seed++);
      const std::vector<uint8_t> packed = Quantize(layout, w.data());
      ASSERT_EQ(static_cast<int64_t>(packed.size()), ExpectedPackedBytes(layout)) << Describe(layout);
      const std::vector<float> back = Dequantize(layout, packed.data(), static_cast<int64_t>(packed.size()));
      const std::vector<float> bound = ErrorBounds(layout, w);
      int reported = 0;
      for (size_t i = 0; i < w.size() && reported < 3; ++i) {
        ASSERT_TRUE(std::isfinite(back[i])) << Describe(layout) << " pattern " << static_cast<int>(pattern);
        if (!(std::fabs(back[i] - w[i]) <= bound[i])) {
          ADD_FAILURE() << Describe(layout) << " pattern " << static_cast<int>(pattern) << " element " << i << ": w "
                        << w[i] << " came back " << back[i] << ", allowed error " << bound[i];
          ++reported;
        }
      }
    }
  }
}

// Quantizing what a quantizer produced gives it back: the dequantized weights lie on the grid the first pass
// chose, and every scale rule maps that grid onto itself.
//   ggml blocks and atq ternary: byte for byte (f16 scales re-round to themselves; ternary scales are means of
//     equal values, summed in double).
//   atq uniform: the same codes and zero points; the scale is recomputed as (s*k)/k in float, which can differ
//     from s in the last bit, so scales are compared to kScaleUlps.
//   plain float types: byte for byte (a value already in f16/bf16 converts to itself).
TEST_P(EveryTypeTest, RequantizingIsIdempotent) {
  constexpr float kScaleUlps = 2 * FLT_EPSILON;
  uint32_t seed = 1000;
  for (const Layout& layout : LayoutsFor(traits())) {
    for (Pattern pattern :
         {Pattern::kNormal, Pattern::kOutliers, Pattern::kPositive, Pattern::kNegative, Pattern::kConstant}) {
      const std::vector<float> w = MakeWeights(layout, pattern, seed++);
      const std::vector<uint8_t> first = Quantize(layout, w.data());
      const std::vector<float> grid = Dequantize(layout, first.data(), static_cast<int64_t>(first.size()));
      const std::vector<uint8_t> second = Quantize(layout, grid.data());
      const std::string where = Describe(layout) + " pattern " + std::to_string(static_cast<int>(pattern));
      if (traits().family != TypeFamily::kUniform) {
        EXPECT_EQ(first, second) << where;
        continue;
      }
      const AtqCodes a = UnpackAtq(layout, first.data());
      const AtqCodes b = UnpackAtq(layout, second.data());
      EXPECT_EQ(a.codes, b.codes) << where;
      EXPECT_EQ(a.zero_points, b.zero_points) << where;
      ASSERT_EQ(a.scales.size(), b.scales.size()) << where;
      for (size_t g = 0; g < a.scales.size(); ++g) {
        EXPECT_NEAR(a.scales[g], b.scales[g], kScaleUlps * std::fabs(a.scales[g])) << where << " group " << g;
      }
    }
  }
}

// Quantized types refuse NaN and Inf with a message naming the type and the element (row and column); plain
// float types carry them through, as IEEE conversions do.
TEST_P(EveryTypeTest, NonFiniteInput) {
  const int64_t cols = traits().family == TypeFamily::kGgmlBlock ? traits().block_size : 7;
  const Layout layout{traits().type, 2, cols, Granularity::kChannel, 0};
  const int64_t bad = cols + 3;  // row 1, column 3
  for (float value : {std::numeric_limits<float>::quiet_NaN(), std::numeric_limits<float>::infinity(),
                      -std::numeric_limits<float>::infinity()}) {
    std::vector<float> w = MakeWeights(layout, Pattern::kNormal, 7);
    w[bad] = value;
    if (!traits().is_quantized) {
      const std::vector<uint8_t> packed = Quantize(layout, w.data());
      const float back = Dequantize(layout, packed.data(), static_cast<int64_t>(packed.size()))[bad];
      if (std::isnan(value)) {
        EXPECT_TRUE(std::isnan(back)) << traits().name;
      } else {
        EXPECT_EQ(back, value) << traits().name;
      }
      continue;
    }
    try {
      Quantize(layout, w.data());
      ADD_FAILURE() << traits().name << ": " << value << " was accepted";
    } catch (const Error& e) {
      const std::string message = e.what();
      EXPECT_NE(message.find(traits().name), std::string::npos) << message;
      EXPECT_NE(message.find("element " + std::to_string(bad)), std::string::npos) << message;
      EXPECT_NE(message.find("row 1"), std::string::npos) << message;
      EXPECT_NE(message.find("column 3"), std::string::npos) << message;
      EXPECT_NE(message.find(std::isnan(value) ? "nan" : "inf"), std::string::npos) << message;
    }
  }
}

// Rows with integer-kernel codes: d * (code - offset) over each block's codes is exactly what Dequantize gives.
TEST_P(EveryTypeTest, BlockCodesAgreeWithDequantize) {
  const BlockCodes& codes = traits().block_codes;
  if (codes.decode == nullptr) GTEST_SKIP() << traits().name << " has no integer-kernel codes";
  for (const Layout& layout : LayoutsFor(traits())) {
    const std::vector<float> w = MakeWeights(layout, Pattern::kOutliers, 11);
    const std::vector<uint8_t> packed = Quantize(layout, w.data());
    const std::vector<float> want = Dequantize(layout, packed.data(), static_cast<int64_t>(packed.size()));
    std::vector<uint8_t> block_codes(static_cast<size_t>(traits().block_size));
    for (int64_t b = 0; b < static_cast<int64_t>(want.size()) / traits().block_size; ++b) {
      const uint8_t* block = packed.data() + b * traits().bytes_per_block;
      const float d = codes.decode(block, block_codes.data());
      uint16_t stored;
      std::memcpy(&stored, block + codes.scale_byte, 2);
      ASSERT_EQ(d, F16ToF32(stored)) << Describe(layout) << " block " << b;
      for (int64_t j = 0; j < traits().block_size; ++j) {
        ASSERT_EQ(d * static_cast<float>(block_codes[j] - codes.offset), want[b * traits().block_size + j])
            << Describe(layout) << " block " << b << " weight " << j;
      }
    }
  }
}

TEST_P(EveryTypeTest, DequantizeChecksTheByteCount) {
  const Layout layout = LayoutsFor(traits()).back();
  const std::vector<float> w = MakeWeights(layout, Pattern::kNormal, 3);
  const std::vector<uint8_t> packed = Quantize(layout, w.data());
  for (int64_t size : {static_cast<int64_t>(packed.size()) - 1, static_cast<int64_t>(packed.size()) + 1}) {
    try {
      Dequantize(layout, packed.data(), size);
      ADD_FAILURE() << Describe(layout) << ": " << size << " bytes accepted";
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find(std::to_string(packed.size())), std::string::npos) << e.what();
    }
  }
}

// Empty tensors: no codes, only the scales the granularity asks for (zero), and nothing written past them.
// (Real buffers and the pointer overloads: the vector overloads would hand memcpy a null data() for 0 bytes.)
TEST_P(EveryTypeTest, EmptyTensorsPackToTheirScalesOnly) {
  for (int64_t rows : {0, 3}) {
    for (Granularity granularity : {Granularity::kTensor, Granularity::kChannel, Granularity::kGroup}) {
      const Layout layout{traits().type, rows, 0, granularity, 4};
      const int64_t bytes = PackedBytes(layout);
      EXPECT_EQ(bytes, ExpectedPackedBytes(layout)) << Describe(layout);
      constexpr uint8_t kSentinel = 0xEE;
      std::vector<uint8_t> packed(static_cast<size_t>(bytes) + 1, kSentinel);
      const float unused_src = 0.0f;
      Quantize(layout, &unused_src, packed.data());
      for (int64_t i = 0; i < bytes; ++i) EXPECT_EQ(packed[i], 0) << Describe(layout) << " byte " << i;
      EXPECT_EQ(packed[bytes], kSentinel) << Describe(layout);
      float unused_dst = 1.0f;
      Dequantize(layout, packed.data(), &unused_dst);
      EXPECT_EQ(unused_dst, 1.0f) << Describe(layout);
    }
  }
}

TEST_P(EveryTypeTest, InvalidLayoutsAreRejected) {
  std::vector<Layout> bad = {{traits().type, -1, 8, Granularity::kTensor, 0}};
  if (traits().family == TypeFamily::kGgmlBlock) {
    bad.push_back({traits().type, 2, traits().block_size + 1, Granularity::kTensor, 0});
    bad.push_back({traits().type, 1, traits().block_size / 2, Granularity::kTensor, 0});
  }
  if (IsAtq(traits())) {
    bad.push_back({traits().type, 2, 8, Granularity::kGroup, 0});
    bad.push_back({traits().type, 2, 8, Granularity::kGroup, -4});
  }
  for (const Layout& layout : bad) {
    try {
      PackedBytes(layout);
      ADD_FAILURE() << Describe(layout) << " accepted";
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find(traits().name), std::string::npos) << e.what();
    }
  }
}

std::string TypeTestName(const ::testing::TestParamInfo<QuantType>& info) {
  std::string name(TypeName(info.param));
  for (char& c : name) {
    if (!std::isalnum(static_cast<unsigned char>(c))) c = '_';
  }
  return name;
}

INSTANTIATE_TEST_SUITE_P(AllTypes, EveryTypeTest, ::testing::ValuesIn(ConvertibleTypes()), TypeTestName);

}  // namespace
}  // namespace atq
