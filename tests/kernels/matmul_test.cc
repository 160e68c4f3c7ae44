// MatMul on every compiled Highway target against MatMulReference (same arithmetic, scalar) and against a
// double-precision product of the dequantized weights, for every type of the format table that kernels run,
// over odd shapes, tails, groups and batch sizes.
#include "kernels/backend.h"
#include "kernels/matmul.h"

#include <cctype>
#include <cmath>
#include <cstdint>
#include <initializer_list>
#include <random>
#include <string>
#include <tuple>
#include <vector>

#include <gtest/gtest.h>
#include <hwy/targets.h>

#include "formats/atq_packed.h"
#include "formats/quant_type.h"
#include "kernels/blas_float.h"
#include "kernels/int8_activations.h"
#include "kernels/interleaved.h"
#include "kernels/packed_matrix.h"
#include "util/error.h"
#include "util/thread_pool.h"

namespace atq {
namespace {

struct Case {
  Layout layout;
  std::vector<uint8_t> bytes;
  std::vector<float> x;  // n * cols
  int64_t n = 0;
  PackedMatrix matrix() const { return {layout, bytes.data()}; }
};

Case MakeCase(QuantType type, int64_t rows, int64_t cols, Granularity granularity, int64_t group, int64_t n,
              uint32_t seed) {
  Case c;
  c.layout = {type, rows, cols, granularity, group};
  c.n = n;
  std::mt19937 rng(seed);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  std::vector<float> w(static_cast<size_t>(rows * cols));
  for (float& v : w) v = normal(rng) * 0.05f;
  c.bytes = Quantize(c.layout, w.data());
  c.x.resize(static_cast<size_t>(n * cols));
  for (float& v : c.x) v = normal(rng);
  if (cols > 3) c.x[3] = 9.0f;  // an outlier, as LLM activations have
  return c;
}

// The cases for one type: shapes that hit whole vectors, tails, one column, short last groups.
std::vector<Case> CasesFor(QuantType type) {
  const TypeTraits& traits = Traits(type);
  std::vector<Case> cases;
  uint32_t seed = 1;
  const std::vector<int64_t> batches = {1, 2, 3, 4, 5, 9};
  if (traits.family == TypeFamily::kGgmlBlock) {
    const int64_t block = traits.block_size;
    for (int64_t cols : {block, 2 * block, 5 * block}) {
      for (int64_t rows : {1, 7, 16, 33}) cases.push_back(MakeCase(type, rows, cols, Granularity::kTensor, 0, batches[seed % 6], seed)), ++seed;
    }
    return cases;
  }
  if (traits.family == TypeFamily::kFloat) {
    for (int64_t cols : {1, 15, 16, 17, 100, 513}) cases.push_back(MakeCase(type, 5, cols, Granularity::kTensor, 0, batches[seed % 6], seed)), ++seed;
    return cases;
  }
  for (int64_t cols : {1, 5, 37, 255, 256, 257, 300, 512, 1000, 1024}) {
    cases.push_back(MakeCase(type, 7, cols, Granularity::kChannel, 0, batches[seed % 6], seed)), ++seed;
  }
  cases.push_back(MakeCase(type, 3, 700, Granularity::kTensor, 0, 4, seed++));
  for (int64_t group : {32, 64, 100, 160, 256, 320, 512}) {
    cases.push_back(MakeCase(type, 5, 1100, Granularity::kGroup, group, batches[seed % 6], seed)), ++seed;
  }
  return cases;
}

std::vector<QuantType> KernelTypes() {
  std::vector<QuantType> types;
  for (const TypeTraits& traits : AllTypes()) {
    if (BackendFor(Device::kCpu).supports(traits.type)) types.push_back(traits.type);
  }
  return types;
}

// |y - y'| allowed between two evaluations of the same per-segment sums in a different float order: a few ulps
// of the sum of the magnitudes of every term, offset terms included.
std::vector<double> RoundingBounds(const Case& c) {
  const Layout& layout = c.layout;
  std::vector<double> bounds(static_cast<size_t>(c.n * layout.rows), 0.0);
  std::vector<float> row(static_cast<size_t>(layout.cols));
  const int64_t segment = KernelSegment(layout);
  const int64_t segments = SegmentsPerRow(layout);
  std::vector<float> scales(static_cast<size_t>(std::max<int64_t>(segments, 1)));
  std::vector<int32_t> offsets(static_cast<size_t>(std::max<int64_t>(segments, 1)));
  for (int64_t r = 0; r < layout.rows; ++r) {
    DequantizeRow(c.matrix(), r, row.data());
    if (segment > 0) RowDecoder(c.matrix()).Scales(r, scales.data(), offsets.data());
    for (int64_t i = 0; i < c.n; ++i) {
      double magnitude = 0.0;
      for (int64_t j = 0; j < layout.cols; ++j) {
        const double offset_term = segment > 0 ? std::fabs(scales[j / segment]) * offsets[j / segment] : 0.0;
        magnitude += (std::fabs(row[j]) + offset_term) * std::fabs(c.x[i * layout.cols + j]) * 1.02;
      }
      bounds[i * layout.rows + r] = 4e-6 * magnitude + 1e-30;
    }
  }
  return bounds;
}

// |y - exact| allowed: the int8 rounding of each activation (half a step of its segment's scale) times |w|,
// plus the rounding bound.
std::vector<double> QuantizationBounds(const Case& c, std::vector<double>& exact) {
  const Layout& layout = c.layout;
  const int64_t segment = KernelSegment(layout);
  Int8Activations acts;
  if (segment > 0) QuantizeActivations(c.x.data(), c.n, layout.cols, segment, acts);
  std::vector<double> bounds = RoundingBounds(c);
  exact.assign(bounds.size(), 0.0);
  std::vector<float> row(static_cast<size_t>(layout.cols));
  for (int64_t r = 0; r < layout.rows; ++r) {
    DequantizeRow(c.matrix(), r, row.data());
    for (int64_t i = 0; i < c.n; ++i) {
      double sum = 0.0, error = 0.0;
      for (int64_t j = 0; j < layout.cols; ++j) {
        sum += static_cast<double>(row[j]) * c.x[i * layout.cols + j];
        if (segment > 0) error += std::fabs(row[j]) * 0.5 * acts.scales[i * acts.segments + j / segment];
      }
      exact[i * layout.rows + r] = sum;
      bounds[i * layout.rows + r] += error * 1.001;
    }
  }
  return bounds;
}

class MatMulTest : public ::testing::TestWithParam<QuantType> {};

TEST_P(MatMulTest, EveryTargetMatchesReferenceAndDoubleProduct) {
  const QuantType type = GetParam();
  ThreadPool pool(3);
  const std::vector<int64_t> targets = hwy::SupportedAndGeneratedTargets();
  ASSERT_FALSE(targets.empty());
  for (const Case& c : CasesFor(type)) {
    const Layout& l = c.layout;
    const std::string shape = fmt::format("{} {}x{} {} n={}", TypeName(type), l.rows, l.cols, GranularityString(l), c.n);
    // The kernels' own row decoding against the format table's dequantizer.
    const std::vector<float> dequantized = Dequantize(l, c.bytes.data(), static_cast<int64_t>(c.bytes.size()));
    std::vector<float> row(static_cast<size_t>(l.cols));
    for (int64_t r = 0; r < l.rows; ++r) {
      DequantizeRow(c.matrix(), r, row.data());
      for (int64_t j = 0; j < l.cols; ++j) ASSERT_EQ(row[j], dequantized[r * l.cols + j]) << shape << " row " << r;
    }
    std::vector<float> reference(static_cast<size_t>(c.n * l.rows));
    MatMulReference(c.matrix(), c.x.data(), c.n, reference.data());
    std::vector<double> exact;
    const std::vector<double> rounding = RoundingBounds(c);
    const std::vector<double> quantization = QuantizationBounds(c, exact);
    for (size_t k = 0; k < reference.size(); ++k) {
      ASSERT_NEAR(reference[k], exact[k], quantization[k]) << shape << " reference vs double, output " << k;
    }
    // Q8_0 and Q4_0 also with their rows interleaved (kernels/interleaved.h), as the CPU decoder holds them.
    const std::vector<uint8_t> interleaved = InterleaveRows(c.matrix());
    ASSERT_EQ(interleaved.empty(), !HasInterleavedLayout(type) || l.rows < kInterleavedRows) << shape;
    std::vector<PackedMatrix> matrices = {c.matrix()};
    if (!interleaved.empty()) {
      matrices.push_back(c.matrix());
      matrices.back().interleaved = interleaved.data();
    }
    for (int64_t target : targets) {
      hwy::SetSupportedTargetsForTest(target);
      for (const PackedMatrix& matrix : matrices) {
        std::vector<float> y(reference.size(), -12345.0f);
        MatMul(matrix, c.x.data(), c.n, y.data(), pool);
        for (size_t k = 0; k < y.size(); ++k) {
          ASSERT_NEAR(y[k], reference[k], rounding[k]) << shape << (matrix.interleaved ? " interleaved" : "") << " on "
                                                       << hwy::TargetName(target) << ", output " << k;
        }
      }
    }
    hwy::SetSupportedTargetsForTest(0);
  }
}

INSTANTIATE_TEST_SUITE_P(FormatTable, MatMulTest, ::testing::ValuesIn(KernelTypes()),
                         [](const ::testing::TestParamInfo<QuantType>& info) {
                           std::string name(TypeName(info.param));
                           for (char& ch : name) ch = std::isalnum(static_cast<unsigned char>(ch)) ? ch : '_';
                           return name;
                         });

// Float weights against kBlasMinRows activation rows or more go through the system BLAS where the build has one
// (kernels/blas_float.h): the same products as the reference within the rounding of a different summation order,
// on odd shapes, one or several BLAS threads, and slabs of rows that do not divide the matrix (f16/bf16 widened).
TEST(MatMul, FloatWeightsAgainstManyRowsMatchTheReference) {
  if (!HaveBlas()) GTEST_SKIP() << "this build has no BLAS: float weights always run through atq's kernel";
  uint32_t seed = 300;
  for (const QuantType type : {QuantType::kF32, QuantType::kF16, QuantType::kBF16}) {
    for (const auto& [rows, cols, n] : {std::tuple<int64_t, int64_t, int64_t>{37, 129, kBlasMinRows},
                                        {203, 1000, kBlasMinRows + 13}, {5000, 300, kBlasMinRows + 1}}) {
      const Case c = MakeCase(type, rows, cols, Granularity::kTensor, 0, n, ++seed);
      const std::string shape = fmt::format("{} {}x{} n={}", TypeName(type), rows, cols, n);
      std::vector<float> reference(static_cast<size_t>(n * rows));
      MatMulReference(c.matrix(), c.x.data(), n, reference.data());
      const std::vector<double> rounding = RoundingBounds(c);
      for (const int threads : {1, 3}) {
        ThreadPool pool(threads);
        std::vector<float> y(reference.size(), -12345.0f);
        MatMul(c.matrix(), c.x.data(), n, y.data(), pool);
        for (size_t k = 0; k < y.size(); ++k) {
          ASSERT_NEAR(y[k], reference[k], rounding[k]) << shape << ", " << threads << " threads, output " << k;
        }
      }
    }
  }
}

// A prompt's rows: the activations are quantized (and, for the 2-bit kernels, reordered) in tasks over the pool
// before the products; the same outputs on 1 and 3 threads, and the reference's within its rounding, for every
// target. A value that is not finite in a late row is still named, from whichever thread found it.
TEST(MatMul, ManyActivationRowsSharedOverThreads) {
  uint32_t seed = 900;
  for (const QuantType type : {QuantType::kTQ2_0, QuantType::kTernary2, QuantType::kQ8_0, QuantType::kTQ1_0}) {
    const Granularity granularity = Traits(type).family == TypeFamily::kGgmlBlock ? Granularity::kTensor
                                                                                  : Granularity::kChannel;
    const Case c = MakeCase(type, 40, 1024, granularity, 0, 301, ++seed);
    std::vector<float> reference(static_cast<size_t>(c.n * 40));
    MatMulReference(c.matrix(), c.x.data(), c.n, reference.data());
    const std::vector<double> rounding = RoundingBounds(c);
    ThreadPool single(1), several(3);
    for (int64_t target : hwy::SupportedAndGeneratedTargets()) {
      hwy::SetSupportedTargetsForTest(target);
      std::vector<float> one(reference.size()), many(reference.size());
      MatMul(c.matrix(), c.x.data(), c.n, one.data(), single);
      MatMul(c.matrix(), c.x.data(), c.n, many.data(), several);
      ASSERT_EQ(one, many) << TypeName(type) << " on " << hwy::TargetName(target);
      for (size_t k = 0; k < many.size(); ++k) {
        ASSERT_NEAR(many[k], reference[k], rounding[k]) << TypeName(type) << " on " << hwy::TargetName(target)
                                                        << ", output " << k;
      }
      std::vector<float> x = c.x;
      x[290 * 1024 + 7] = NAN;
      try {
        MatMul(c.matrix(), x.data(), c.n, many.data(), several);
        ADD_FAILURE() << "a NaN in row 290 was accepted: " << TypeName(type) << " on " << hwy::TargetName(target);
      } catch (const Error& error) {
        EXPECT_NE(std::string(error.what()).find("row 290, column 7"), std::string::npos) << error.what();
      }
    }
    hwy::SetSupportedTargetsForTest(0);
  }
}

TEST(MatMul, ThreadCountsGiveTheSameOutputs) {
  const Case c = MakeCase(QuantType::kTernary2, 203, 1024, Granularity::kChannel, 0, 3, 77);
  std::vector<float> one(static_cast<size_t>(c.n * 203)), many(one.size());
  ThreadPool single(1), several(4);
  MatMul(c.matrix(), c.x.data(), c.n, one.data(), single);
  MatMul(c.matrix(), c.x.data(), c.n, many.data(), several);
  EXPECT_EQ(one, many);
}

// The interleaved Q8_0 and Q4_0 kernels at the ends of their ranges, where a 16-bit pair sum would saturate if
// the kernel let it: weights -128, -127 and 127 (Q8_0) or codes 0 and 15 (Q4_0), every activation at +-127 of its
// scale, 24 rows (3 groups), 64 columns, every target, against the reference and the exact integer sum.
TEST(MatMul, InterleavedRowsAtTheExtremesOfTheirCodes) {
  ThreadPool pool(2);
  std::mt19937 rng(11);
  for (const QuantType type : {QuantType::kQ8_0, QuantType::kQ4_0}) {
    const Layout layout{type, 24, 64, Granularity::kTensor, 0};
    std::vector<uint8_t> bytes(static_cast<size_t>(PackedBytes(layout)));
    const bool q8 = type == QuantType::kQ8_0;
    const size_t block = q8 ? 34 : 18;
    std::vector<double> weights(static_cast<size_t>(24 * 64));
    for (size_t b = 0; b * block < bytes.size(); ++b) {
      uint8_t* at = bytes.data() + b * block;
      at[0] = 0x00, at[1] = 0x3C;  // float16 1.0
      const size_t row = b / 2, first = (b % 2) * 32;
      for (size_t j = 0; j < 32; ++j) {
        if (q8) {
          const int8_t w = std::vector<int8_t>{-128, -127, 127}[rng() % 3];
          at[2 + j] = static_cast<uint8_t>(w);
          weights[row * 64 + first + j] = w;
        } else {
          const uint8_t code = (rng() % 2) ? 15 : 0;
          at[2 + j % 16] |= static_cast<uint8_t>(j < 16 ? code : code << 4);
          weights[row * 64 + first + j] = static_cast<double>(code) - 8.0;
        }
      }
    }
    const int64_t n = 3;
    std::vector<float> x(static_cast<size_t>(n * 64));
    for (float& v : x) v = (rng() % 2) ? 1.0f : -1.0f;  // int8 levels +-127 at scale 1/127
    const PackedMatrix plain{layout, bytes.data()};
    const std::vector<uint8_t> interleaved = InterleaveRows(plain);
    PackedMatrix regrouped = plain;
    regrouped.interleaved = interleaved.data();
    std::vector<float> reference(static_cast<size_t>(n * 24));
    MatMulReference(plain, x.data(), n, reference.data());
    for (int64_t target : hwy::SupportedAndGeneratedTargets()) {
      hwy::SetSupportedTargetsForTest(target);
      std::vector<float> y(reference.size());
      MatMul(regrouped, x.data(), n, y.data(), pool);
      for (int64_t i = 0; i < n; ++i) {
        for (int64_t r = 0; r < 24; ++r) {
          double exact = 0;
          for (int64_t j = 0; j < 64; ++j) exact += weights[r * 64 + j] * x[i * 64 + j];
          const size_t k = static_cast<size_t>(i * 24 + r);
          EXPECT_NEAR(y[k], exact, 1e-3 * std::fabs(exact) + 1e-3) << TypeName(type) << " on " << hwy::TargetName(target);
          EXPECT_NEAR(y[k], reference[k], 1e-4 * std::fabs(exact) + 1e-4) << TypeName(type);
        }
      }
    }
    hwy::SetSupportedTargetsForTest(0);
  }
}

// MatMul of `matrix` on every target against the exact product with `weights` (its values, exactly
// representable) and against the reference, for each batch size in `batches`, activations +-1: the exact sums are
// integers times the scales, so both bounds can be tight.
void ExpectExactOnEveryTarget(const PackedMatrix& matrix, const std::vector<double>& weights,
                              std::initializer_list<int64_t> batches, const std::string& what) {
  ThreadPool pool(2);
  std::mt19937 rng(5);
  const int64_t rows = matrix.layout.rows, cols = matrix.layout.cols;
  for (const int64_t n : batches) {
    std::vector<float> x(static_cast<size_t>(n * cols));
    for (float& v : x) v = (rng() % 2) ? 1.0f : -1.0f;
    std::vector<float> reference(static_cast<size_t>(n * rows));
    MatMulReference(matrix, x.data(), n, reference.data());
    for (int64_t target : hwy::SupportedAndGeneratedTargets()) {
      hwy::SetSupportedTargetsForTest(target);
      std::vector<float> y(reference.size(), -12345.0f);
      MatMul(matrix, x.data(), n, y.data(), pool);
      for (int64_t i = 0; i < n; ++i) {
        for (int64_t r = 0; r < rows; ++r) {
          double exact = 0;
          for (int64_t j = 0; j < cols; ++j) exact += weights[r * cols + j] * x[i * cols + j];
          const size_t k = static_cast<size_t>(i * rows + r);
          EXPECT_NEAR(y[k], exact, 1e-3) << what << " n=" << n << " row " << r << " on " << hwy::TargetName(target);
          EXPECT_NEAR(y[k], reference[k], 1e-3) << what << " n=" << n << " row " << r << " on "
                                                << hwy::TargetName(target);
        }
      }
    }
    hwy::SetSupportedTargetsForTest(0);
  }
}

// TQ1_0's digits for every byte value in every position of a block (the 32-byte run, the 16-byte run, the qh
// bytes), values no quantizer writes included, against the digit written out by hand (floor(3 * (q * 3^k mod 256)
// / 256) - 1, ggml's fixed point), one activation row (the fused kernel) and several (the decoded rows).
TEST(MatMul, TQ1_0DigitsOfEveryByteValue) {
  constexpr int64_t kRows = 20, kCols = 4 * 256;
  const Layout layout{QuantType::kTQ1_0, kRows, kCols, Granularity::kTensor, 0};
  std::vector<uint8_t> bytes(static_cast<size_t>(PackedBytes(layout)));
  ASSERT_EQ(bytes.size(), static_cast<size_t>(kRows * 4 * 54));
  std::vector<double> weights(static_cast<size_t>(kRows * kCols));
  const auto digit = [](uint8_t q, int k) {
    uint8_t v = q;
    for (int i = 0; i < k; ++i) v = static_cast<uint8_t>(v * 3);
    return static_cast<int>((v * 3) >> 8) - 1;
  };
  for (int64_t b = 0; b < kRows * 4; ++b) {
    uint8_t* block = bytes.data() + b * 54;
    for (int j = 0; j < 52; ++j) block[j] = static_cast<uint8_t>((b * 52 + j) * 7 % 256);  // every value, every place
    block[52] = 0x00, block[53] = 0x3C;  // float16 1.0
    double* w = weights.data() + b * 256;
    for (int k = 0; k < 5; ++k) {
      for (int m = 0; m < 32; ++m) w[32 * k + m] = digit(block[m], k);
      for (int m = 0; m < 16; ++m) w[160 + 16 * k + m] = digit(block[32 + m], k);
    }
    for (int k = 0; k < 4; ++k) {
      for (int m = 0; m < 4; ++m) w[240 + 4 * k + m] = digit(block[48 + m], k);
    }
  }
  ExpectExactOnEveryTarget({layout, bytes.data()}, weights, {1, 3, 6}, "tq1_0");
}

// t1.6 bytes of every value 0..242 in every place of a 160-weight chunk and of a partial last chunk (357 columns:
// two chunks and 37 weights), per channel and in groups of 160: weights of exactly -1, 0, +1 (scale 1).
TEST(MatMul, Ternary16EveryByteValueInEveryPlace) {
  constexpr int64_t kRows = 24, kCols = 357;
  std::vector<float> w(static_cast<size_t>(kRows * kCols));
  for (int64_t r = 0; r < kRows; ++r) {
    for (int64_t b = 0; b * 5 < kCols; ++b) {
      int value = static_cast<int>((r * 72 + b * 7) % 243);
      for (int64_t k = 0; k < 5 && b * 5 + k < kCols; ++k, value /= 3) w[r * kCols + b * 5 + k] = static_cast<float>(value % 3 - 1);
    }
    w[r * kCols] = 1.0f;  // every row holds a nonzero weight, so its scale is 1
  }
  for (const Granularity granularity : {Granularity::kChannel, Granularity::kGroup}) {
    const Layout layout{QuantType::kTernary1_6, kRows, kCols, granularity, granularity == Granularity::kGroup ? 160 : 0};
    const std::vector<uint8_t> bytes = Quantize(layout, w.data());
    ASSERT_EQ(Dequantize(layout, bytes.data(), static_cast<int64_t>(bytes.size())), w) << "the trits packed as written";
    ExpectExactOnEveryTarget({layout, bytes.data()}, std::vector<double>(w.begin(), w.end()), {1, 2, 5},
                             "t1.6 " + GranularityString(layout));
  }
}

// Activations the caller quantized go through the same kernels: the outputs equal MatMul's exactly, and the
// reference's within rounding. Float weights and activations cut for another segment length are refused.
TEST(MatMul, QuantizedActivationsGiveMatMulsOutputs) {
  ThreadPool pool(2);
  for (const QuantType type : {QuantType::kTernary2, QuantType::kTernary1_6, QuantType::kQ8_0, QuantType::kTQ2_0,
                               QuantType::kUniform4Sym}) {
    const Case c = MakeCase(type, 37, 512, Granularity::kChannel, 0, 6, 5);
    Int8Activations acts;
    QuantizeActivations(c.x.data(), c.n, c.layout.cols, KernelSegment(c.layout), acts);
    std::vector<float> direct(static_cast<size_t>(c.n * c.layout.rows)), given(direct.size()), reference(direct.size());
    MatMul(c.matrix(), c.x.data(), c.n, direct.data(), pool);
    MatMulQuantized(c.matrix(), acts, given.data(), pool);
    MatMulQuantizedReference(c.matrix(), acts, reference.data());
    EXPECT_EQ(given, direct) << TypeName(type);
    const std::vector<double> rounding = RoundingBounds(c);
    for (size_t k = 0; k < given.size(); ++k) ASSERT_NEAR(given[k], reference[k], rounding[k]) << TypeName(type);
  }
  const Case floats = MakeCase(QuantType::kF16, 3, 64, Granularity::kTensor, 0, 1, 2);
  Int8Activations acts;
  QuantizeActivations(floats.x.data(), 1, 64, 32, acts);
  std::vector<float> y(3);
  EXPECT_THROW(MatMulQuantized(floats.matrix(), acts, y.data(), pool), Error);
  const Case ternary = MakeCase(QuantType::kTernary2, 3, 64, Granularity::kChannel, 0, 1, 2);
  EXPECT_THROW(MatMulQuantized(ternary.matrix(), acts, y.data(), pool), Error);  // segments of 32, not 64
}

TEST(MatMul, TypesWithoutKernelsAndBadBytesAreRefused) {
  const Layout layout{QuantType::kI32, 2, 4, Granularity::kTensor, 0};
  std::vector<uint8_t> bytes(32);
  std::vector<float> x(4), y(2);
  EXPECT_THROW(MatMul({layout, bytes.data()}, x.data(), 1, y.data()), Error);
  const Case c = MakeCase(QuantType::kTernary2, 2, 8, Granularity::kChannel, 0, 1, 3);
  try {
    CheckPackedMatrix(c.matrix(), static_cast<int64_t>(c.bytes.size()) - 1, "model.safetensors: w");
    FAIL() << "a short tensor was accepted";
  } catch (const Error& error) {
    EXPECT_NE(std::string(error.what()).find("model.safetensors: w"), std::string::npos) << error.what();
  }
  std::vector<uint8_t> bad = c.bytes;
  bad[0] = 0xFF;  // code 3 is no ternary code
  EXPECT_THROW(CheckPackedMatrix({c.layout, bad.data()}, static_cast<int64_t>(bad.size()), "w"), Error);
  EXPECT_NO_THROW(CheckPackedMatrix(c.matrix(), static_cast<int64_t>(c.bytes.size()), "w"));
}

TEST(MatMul, NonFiniteActivationsAreRefusedOnEveryTarget) {
  const Case c = MakeCase(QuantType::kTernary2, 8, 100, Granularity::kChannel, 0, 2, 5);
  for (const float bad : {NAN, INFINITY}) {
    std::vector<float> x = c.x;
    x[100 + 40] = bad;  // row 1, inside the vector part of the row
    std::vector<float> y(16);
    for (int64_t target : hwy::SupportedAndGeneratedTargets()) {
      hwy::SetSupportedTargetsForTest(target);
      try {
        MatMul(c.matrix(), x.data(), 2, y.data());
        ADD_FAILURE() << "a non-finite activation was accepted on " << hwy::TargetName(target);
      } catch (const Error& error) {
        EXPECT_NE(std::string(error.what()).find("row 1, column 40"), std::string::npos) << error.what();
      }
    }
    hwy::SetSupportedTargetsForTest(0);
  }
}

TEST(Int8Activations, KnownAnswer) {
  const std::vector<float> x = {1.0f, -0.5f, 0.25f, 127.0f, 0.0f};
  Int8Activations acts;
  QuantizeActivations(x.data(), 1, 5, 3, acts);
  ASSERT_EQ(acts.segments, 2);
  ASSERT_EQ(acts.stride, 6);
  EXPECT_FLOAT_EQ(acts.scales[0], 1.0f / 127.0f);
  EXPECT_EQ(acts.values[0], 127);
  EXPECT_EQ(acts.values[1], -64);  // -63.5 rounds to even
  EXPECT_EQ(acts.values[2], 32);   // 31.75
  EXPECT_EQ(acts.sums[0], 127 - 64 + 32);
  EXPECT_FLOAT_EQ(acts.scales[1], 1.0f);
  EXPECT_EQ(acts.values[3], 127);
  EXPECT_EQ(acts.values[5], 0);  // padding
  const std::vector<float> bad = {1.0f, NAN};
  EXPECT_THROW(QuantizeActivations(bad.data(), 1, 2, 2, acts), Error);
}

}  // namespace
}  // namespace atq

namespace atq {
namespace {

// RPB: the corrections SetBoosted computes are (stored value - decoded code) at each boosted weight, and AddBoosted
// adds exactly x[c] * correction to y[r]; bad residuals are refused by name.
TEST(Boosted, CorrectionsAreTheStoredValuesOverTheCodes) {
  const Case c = MakeCase(QuantType::kTernary2, 5, 37, Granularity::kChannel, 0, 3, 11);
  PackedWeights packed{c.layout, c.bytes, nullptr, 0};
  const std::vector<int64_t> index = {0, 36, 40, 5 * 37 - 1};
  const std::vector<float> value = {0.5f, -0.25f, 0.125f, 1.0f};
  SetBoosted(packed, index, value, "test");
  std::vector<float> row(37);
  for (size_t k = 0; k < index.size(); ++k) {
    DequantizeRow(c.matrix(), index[k] / 37, row.data());
    EXPECT_EQ(packed.boosted_delta[k], value[k] - row[static_cast<size_t>(index[k] % 37)]);
  }
  std::vector<float> y(static_cast<size_t>(c.n * 5), 0.0f);
  AddBoosted(packed, c.x.data(), c.n, y.data());
  for (int64_t i = 0; i < c.n; ++i) {
    for (int64_t r = 0; r < 5; ++r) {
      float expected = 0;
      for (size_t k = 0; k < index.size(); ++k) {
        if (index[k] / 37 == r) expected += c.x[static_cast<size_t>(i * 37 + index[k] % 37)] * packed.boosted_delta[k];
      }
      EXPECT_EQ(y[static_cast<size_t>(i * 5 + r)], expected) << i << " " << r;
    }
  }
  EXPECT_THROW(SetBoosted(packed, {5 * 37}, {1.0f}, "test"), Error);         // outside the matrix
  EXPECT_THROW(SetBoosted(packed, {3, 3}, {1.0f, 2.0f}, "test"), Error);     // not increasing
  EXPECT_THROW(SetBoosted(packed, {3}, {NAN}, "test"), Error);               // not finite
  EXPECT_THROW(SetBoosted(packed, {3, 4}, {1.0f}, "test"), Error);           // lengths differ
}

}  // namespace
}  // namespace atq
