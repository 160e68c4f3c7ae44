// The SIMD float operations (kernels/float_ops.h) against the plain loops their comments write, on lengths that
// leave every kind of tail (0 to several vectors plus a remainder), with values whose sums are not exact.
#include "kernels/float_ops.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <random>
#include <vector>

#include <fmt/format.h>
#include <gtest/gtest.h>
#include <hwy/targets.h>

#include "formats/half.h"

namespace atq {
namespace {

std::vector<float> Random(int64_t n, uint32_t seed, float low = -3, float high = 3) {
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> uniform(low, high);
  std::vector<float> values(static_cast<size_t>(n));
  for (float& v : values) v = uniform(rng);
  return values;
}

// Sums in another order differ by a few ulps of the sum of magnitudes; exp and tanh by a few ulps of the value.
void ExpectNearAll(const std::vector<float>& expected, const std::vector<float>& actual, float relative,
                   const std::string& what) {
  ASSERT_EQ(expected.size(), actual.size());
  for (size_t i = 0; i < expected.size(); ++i) {
    EXPECT_NEAR(actual[i], expected[i], relative * (1 + std::fabs(expected[i]))) << what << " at " << i;
  }
}

const std::vector<int64_t> kLengths = {0, 1, 3, 7, 8, 15, 16, 17, 31, 33, 64, 100, 257};

TEST(FloatOps, DotAddAndNorm) {
  for (const int64_t n : kLengths) {
    const std::vector<float> a = Random(n, 1), b = Random(n, 2), scale = Random(n, 3, 0.5f, 1.5f);
    double dot = 0, magnitude = 0;
    for (int64_t i = 0; i < n; ++i) {
      dot += static_cast<double>(a[i]) * b[i];
      magnitude += std::fabs(static_cast<double>(a[i]) * b[i]);
    }
    EXPECT_NEAR(vec::Dot(a.data(), b.data(), n), dot, 1e-6 * (1 + magnitude)) << n;

    std::vector<float> y = b, expected = b;
    vec::AddScaled(0.37f, a.data(), y.data(), n);
    for (int64_t i = 0; i < n; ++i) expected[i] += 0.37f * a[i];
    ExpectNearAll(expected, y, 1e-6f, "AddScaled n=" + std::to_string(n));
    y = b;
    expected = b;
    vec::Add(a.data(), y.data(), n);
    for (int64_t i = 0; i < n; ++i) expected[i] += a[i];
    EXPECT_EQ(y, expected) << "Add n=" << n;  // one rounding each, the same in both

    if (n == 0) continue;
    double squares = 0;
    for (const float v : a) squares += static_cast<double>(v) * v;
    const double inverse = 1 / std::sqrt(squares / static_cast<double>(n) + 1e-5);
    for (int64_t i = 0; i < n; ++i) expected[i] = static_cast<float>(a[i] * inverse * scale[i]);
    std::vector<float> normed = a;
    vec::RmsNorm(normed.data(), scale.data(), n, 1e-5f, normed.data());  // in place
    ExpectNearAll(expected, normed, 1e-5f, "RmsNorm n=" + std::to_string(n));

    // LayerNorm on values far from zero mean (where E[x^2] - mean^2 would cancel), with and without a bias.
    std::vector<float> shifted = a;
    for (float& v : shifted) v += 100.0f;
    const std::vector<float> bias = Random(n, 6);
    double mean = 0, variance = 0;
    for (const float v : shifted) mean += v;
    mean /= static_cast<double>(n);
    for (const float v : shifted) variance += (v - mean) * (v - mean);
    const double layer_inverse = 1 / std::sqrt(variance / static_cast<double>(n) + 1e-5);
    for (const bool with_bias : {true, false}) {
      for (int64_t i = 0; i < n; ++i) {
        expected[i] = static_cast<float>((shifted[i] - mean) * layer_inverse * scale[i] + (with_bias ? bias[i] : 0.0));
      }
      std::vector<float> layer = shifted;
      vec::LayerNorm(layer.data(), scale.data(), with_bias ? bias.data() : nullptr, n, 1e-5f, layer.data());
      ExpectNearAll(expected, layer, 1e-4f, "LayerNorm n=" + std::to_string(n) + (with_bias ? " bias" : ""));
    }
  }
}

// Every float16 and bfloat16 bit pattern (NaN payloads, infinities, subnormals and signed zeros included), widened
// in vector lanes and in the tail, is the scalar conversion's float.
TEST(FloatOps, HalfAndBfloat16WidenExactly) {
  std::vector<uint16_t> bits(65536 + 5);
  for (size_t i = 0; i < bits.size(); ++i) bits[i] = static_cast<uint16_t>(i);
  std::vector<float> half(bits.size()), bf16(bits.size());
  vec::HalfToFloat(bits.data(), half.data(), static_cast<int64_t>(bits.size()));
  vec::Bfloat16ToFloat(bits.data(), bf16.data(), static_cast<int64_t>(bits.size()));
  for (size_t i = 0; i < bits.size(); ++i) {
    const float h = F16ToF32(bits[i]), b = BF16ToF32(bits[i]);
    ASSERT_TRUE(std::memcmp(&half[i], &h, 4) == 0 || (std::isnan(half[i]) && std::isnan(h))) << "f16 bits " << i;
    ASSERT_TRUE(std::memcmp(&bf16[i], &b, 4) == 0 || (std::isnan(bf16[i]) && std::isnan(b))) << "bf16 bits " << i;
  }
}

TEST(FloatOps, ExpSoftcapAndGates) {
  for (const int64_t n : kLengths) {
    const std::vector<float> x = Random(n, 4, -12, 12), up = Random(n, 5);
    std::vector<float> e = x, expected(x.size());
    double total = 0;
    for (int64_t i = 0; i < n; ++i) total += (expected[i] = std::exp(x[i] - 12.0f));
    const float sum = vec::ExpShifted(e.data(), n, 12.0f);
    ExpectNearAll(expected, e, 1e-5f, "ExpShifted n=" + std::to_string(n));
    EXPECT_NEAR(sum, total, 1e-5 * (1 + total));

    std::vector<float> capped = x;
    vec::Softcap(capped.data(), n, 5.0f);
    for (int64_t i = 0; i < n; ++i) expected[i] = std::tanh(x[i] / 5.0f) * 5.0f;
    ExpectNearAll(expected, capped, 1e-5f, "Softcap n=" + std::to_string(n));

    std::vector<float> silu = x;
    vec::SiluGate(silu.data(), up.data(), n);
    for (int64_t i = 0; i < n; ++i) expected[i] = x[i] / (1 + std::exp(-x[i])) * up[i];
    ExpectNearAll(expected, silu, 1e-5f, "SiluGate n=" + std::to_string(n));

    std::vector<float> gelu = x;
    vec::GeluTanhGate(gelu.data(), up.data(), n);
    for (int64_t i = 0; i < n; ++i) {
      const double g = x[i];
      expected[i] = static_cast<float>(0.5 * g * (1 + std::tanh(std::sqrt(2 / M_PI) * (g + 0.044715 * g * g * g))) * up[i]);
    }
    ExpectNearAll(expected, gelu, 1e-5f, "GeluTanhGate n=" + std::to_string(n));

    // The ungated forms: the gated ones with up = 1.
    std::vector<float> plain = x;
    vec::GeluTanh(plain.data(), n);
    for (int64_t i = 0; i < n; ++i) {
      const double g = x[i];
      expected[i] = static_cast<float>(0.5 * g * (1 + std::tanh(std::sqrt(2 / M_PI) * (g + 0.044715 * g * g * g))));
    }
    ExpectNearAll(expected, plain, 1e-5f, "GeluTanh n=" + std::to_string(n));
    plain = x;
    vec::Silu(plain.data(), n);
    for (int64_t i = 0; i < n; ++i) expected[i] = x[i] / (1 + std::exp(-x[i]));
    ExpectNearAll(expected, plain, 1e-5f, "Silu n=" + std::to_string(n));
  }
  // SiLU far below zero is about 0 (exp(-g) is clamped before it overflows), never NaN.
  std::vector<float> far = {-200.0f, -100.0f, 100.0f};
  const std::vector<float> ones = {1, 1, 1};
  vec::SiluGate(far.data(), ones.data(), 3);
  EXPECT_NEAR(far[0], 0.0f, 1e-30f);
  EXPECT_NEAR(far[1], 0.0f, 1e-30f);
  EXPECT_EQ(far[2], 100.0f);
}

// The attention blocks on every target: 1 to 4 query rows against key and value rows with strides wider than
// the head (as the cache holds heads side by side), head sizes with and without a vector tail, and key counts
// that leave a remainder of the four-key steps; against the loops in double.
TEST(FloatOps, ScoreAndWeightedRowsOnEveryTarget) {
  for (int64_t target : hwy::SupportedAndGeneratedTargets()) {
    hwy::SetSupportedTargetsForTest(target);
    for (const int64_t dim : {1, 7, 16, 17, 64, 100}) {
      for (const int64_t count : {1, 3, 4, 9, 33}) {
        for (int64_t rows = 1; rows <= 4; ++rows) {
          const int64_t q_stride = 3 * dim + 1, key_stride = 2 * dim + 3, out_stride = dim + 2;
          const std::vector<float> q = Random(rows * q_stride, 11), keys = Random(count * key_stride, 12);
          const std::vector<float> p = Random(rows * (count + 1), 13, 0, 1), values = Random(count * key_stride, 14);
          std::vector<float> scores(static_cast<size_t>(rows * (count + 2)), -7.0f);
          vec::ScoreRows(q.data(), q_stride, rows, keys.data(), key_stride, count, dim, 0.125f, scores.data(), count + 2);
          std::vector<float> out(static_cast<size_t>(rows * out_stride), -7.0f);
          vec::WeightedRows(p.data(), count + 1, rows, values.data(), key_stride, count, dim, out.data(), out_stride);
          const std::string what = fmt::format("{} dim {} count {} rows {}", hwy::TargetName(target), dim, count, rows);
          for (int64_t i = 0; i < rows; ++i) {
            for (int64_t j = 0; j < count; ++j) {
              double dot = 0, magnitude = 0;
              for (int64_t e = 0; e < dim; ++e) {
                dot += static_cast<double>(q[i * q_stride + e]) * keys[j * key_stride + e];
                magnitude += std::fabs(static_cast<double>(q[i * q_stride + e]) * keys[j * key_stride + e]);
              }
              EXPECT_NEAR(scores[i * (count + 2) + j], 0.125 * dot, 1e-6 * (1 + magnitude)) << what;
            }
            EXPECT_EQ(scores[i * (count + 2) + count], -7.0f) << what << ": written past the row";
            for (int64_t e = 0; e < dim; ++e) {
              double sum = 0, magnitude = 0;
              for (int64_t j = 0; j < count; ++j) {
                sum += static_cast<double>(p[i * (count + 1) + j]) * values[j * key_stride + e];
                magnitude += std::fabs(static_cast<double>(p[i * (count + 1) + j]) * values[j * key_stride + e]);
              }
              EXPECT_NEAR(out[i * out_stride + e], sum, 1e-6 * (1 + magnitude)) << what;
            }
            if (dim + 2 <= out_stride) EXPECT_EQ(out[i * out_stride + dim], -7.0f) << what << ": written past the row";
          }
        }
      }
    }
  }
  hwy::SetSupportedTargetsForTest(0);
}

}  // namespace
}  // namespace atq
