// PackedConv2d against PackedConv2dReference (the same arithmetic in scalar code) on every compiled Highway
// target, and the reference against a direct float convolution of the dequantized weights in double (torch's
// conv2d arithmetic, written out; channels-last images) within the int8 rounding of the patches; the channels-last reordering against
// the weights it came from; bad input refused.
#include "kernels/conv2d.h"

#include <cmath>
#include <cstdint>
#include <random>
#include <string>
#include <vector>

#include <fmt/format.h>
#include <gtest/gtest.h>
#include <hwy/targets.h>

#include "formats/quant_type.h"
#include "kernels/packed_matrix.h"
#include "util/error.h"
#include "util/thread_pool.h"

namespace atq {
namespace {

struct ConvCase {
  QuantType type;
  ConvGeometry geometry;
  int64_t n, height, width;
  bool boosted, bias;
};

std::string Describe(const ConvCase& c) {
  const ConvGeometry& g = c.geometry;
  return fmt::format("{} {}->{} k{} s{} p{} on {}x{}x{} n={}{}{}", TypeName(c.type), g.in_channels, g.out_channels,
                     g.kernel, g.stride, g.padding, c.n, c.height, c.width, c.boosted ? " rpb" : "",
                     c.bias ? " bias" : "");
}

struct Built {
  PackedWeights torch_order;  // [out, in * k * k] in torch's (c, i, j) column order
  PackedConvWeights conv;
  std::vector<float> bias, x;  // x [n, h, w, in]
};

Built Build(const ConvCase& c, uint32_t seed) {
  const ConvGeometry& g = c.geometry;
  std::mt19937 rng(seed);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  Built b;
  Layout& layout = b.torch_order.layout;
  layout = {c.type, g.out_channels, g.PatchSize(), Granularity::kChannel, 0};
  std::vector<float> w(static_cast<size_t>(layout.rows * layout.cols));
  for (float& v : w) v = normal(rng) * 0.1f;
  b.torch_order.bytes = Quantize(layout, w.data());
  if (c.boosted) {  // every 7th weight kept at its float value
    std::vector<int64_t> index;
    std::vector<float> value;
    for (int64_t k = 3; k < layout.rows * layout.cols; k += 7) index.push_back(k), value.push_back(w[k]);
    SetBoosted(b.torch_order, index, value, "test");
  }
  b.conv = ChannelsLastConvWeights(b.torch_order, g);
  if (c.bias) {
    for (int64_t o = 0; o < g.out_channels; ++o) b.bias.push_back(normal(rng));
  }
  b.x.resize(static_cast<size_t>(c.n * g.in_channels * c.height * c.width));
  for (float& v : b.x) v = normal(rng);
  b.x[b.x.size() / 2] = 8.0f;  // an outlier pixel
  return b;
}

std::vector<ConvCase> Cases() {
  std::vector<ConvCase> cases;
  for (const QuantType type : {QuantType::kTernary2, QuantType::kTernary1_6, QuantType::kUniform4Sym,
                               QuantType::kUniform8Asym}) {
    cases.push_back({type, {32, 16, 3, 1, 1}, 2, 12, 12, true, true});
    cases.push_back({type, {3, 5, 3, 2, 0}, 3, 9, 11, false, true});
    cases.push_back({type, {17, 33, 1, 1, 0}, 1, 7, 5, true, false});
    cases.push_back({type, {8, 7, 5, 2, 2}, 2, 13, 10, true, true});
    cases.push_back({type, {64, 20, 3, 1, 1}, 1, 4, 4, false, false});
    cases.push_back({type, {1, 4, 3, 1, 1}, 5, 6, 6, true, true});  // one input channel
  }
  return cases;
}

// The exact convolution of the packed weights (plus the boosted corrections) with x, in double.
std::vector<double> DirectConvolution(const ConvCase& c, const Built& b, std::vector<double>& magnitude) {
  const ConvGeometry& g = c.geometry;
  const Layout& layout = b.torch_order.layout;
  std::vector<float> w(static_cast<size_t>(layout.rows * layout.cols));
  for (int64_t r = 0; r < layout.rows; ++r) DequantizeRow(b.torch_order.view(), r, w.data() + r * layout.cols);
  for (size_t e = 0; e < b.torch_order.boosted_index.size(); ++e) {
    w[static_cast<size_t>(b.torch_order.boosted_index[e])] += b.torch_order.boosted_delta[e];
  }
  const int64_t oh = g.OutSide(c.height), ow = g.OutSide(c.width);
  std::vector<double> y(static_cast<size_t>(c.n * g.out_channels * oh * ow), 0.0);
  magnitude.assign(y.size(), 0.0);
  for (int64_t n = 0; n < c.n; ++n) {
    for (int64_t o = 0; o < g.out_channels; ++o) {
      for (int64_t p = 0; p < oh; ++p) {
        for (int64_t q = 0; q < ow; ++q) {
          double sum = c.bias ? b.bias[o] : 0.0, size = 0.0;
          for (int64_t ch = 0; ch < g.in_channels; ++ch) {
            for (int64_t i = 0; i < g.kernel; ++i) {
              for (int64_t j = 0; j < g.kernel; ++j) {
                const int64_t ih = p * g.stride - g.padding + i, iw = q * g.stride - g.padding + j;
                if (ih < 0 || ih >= c.height || iw < 0 || iw >= c.width) continue;
                const double wv = w[(o * g.in_channels + ch) * g.kernel * g.kernel + i * g.kernel + j];
                const double xv = b.x[((n * c.height + ih) * c.width + iw) * g.in_channels + ch];
                sum += wv * xv;
                size += std::fabs(wv);
              }
            }
          }
          const size_t at = static_cast<size_t>(((n * oh + p) * ow + q) * g.out_channels + o);
          y[at] = sum;
          magnitude[at] = size;
        }
      }
    }
  }
  return y;
}

TEST(PackedConv2d, ReorderedWeightsAreTheSameWeights) {
  const ConvCase c{QuantType::kTernary2, {5, 6, 3, 1, 1}, 1, 4, 4, true, false};
  const Built b = Build(c, 1);
  const int64_t cols = c.geometry.PatchSize();
  std::vector<float> before(static_cast<size_t>(cols)), after(before.size());
  for (int64_t r = 0; r < c.geometry.out_channels; ++r) {
    DequantizeRow(b.torch_order.view(), r, before.data());
    DequantizeRow(b.conv.weights.view(), r, after.data());
    for (int64_t ch = 0; ch < 5; ++ch) {
      for (int64_t tap = 0; tap < 9; ++tap) ASSERT_EQ(after[tap * 5 + ch], before[ch * 9 + tap]) << r;
    }
  }
  ASSERT_EQ(b.conv.weights.boosted_index.size(), b.torch_order.boosted_index.size());
  for (size_t e = 0; e + 1 < b.conv.weights.boosted_index.size(); ++e) {
    EXPECT_LT(b.conv.weights.boosted_index[e], b.conv.weights.boosted_index[e + 1]);
  }
}

TEST(PackedConv2d, EveryTargetMatchesReferenceAndDirectConvolution) {
  ThreadPool pool(3);
  uint32_t seed = 10;
  for (const ConvCase& c : Cases()) {
    const Built b = Build(c, seed++);
    const ConvGeometry& g = c.geometry;
    const float* bias = c.bias ? b.bias.data() : nullptr;
    const size_t outputs = static_cast<size_t>(c.n * g.out_channels * g.OutSide(c.height) * g.OutSide(c.width));
    std::vector<float> reference(outputs);
    PackedConv2dReference(b.conv, bias, b.x.data(), c.n, c.height, c.width, reference.data());
    std::vector<double> magnitude;
    const std::vector<double> exact = DirectConvolution(c, b, magnitude);
    // Each patch value is off by at most half a step of its patch's scale (max |x| <= 8 here, so 8 / 254).
    for (size_t k = 0; k < outputs; ++k) {
      ASSERT_NEAR(reference[k], exact[k], magnitude[k] * (8.0 / 254.0) * 1.01 + 1e-4) << Describe(c) << " at " << k;
    }
    for (const int64_t target : hwy::SupportedAndGeneratedTargets()) {
      hwy::SetSupportedTargetsForTest(target);
      for (int threads : {1, 3}) {
        ThreadPool single(1);
        std::vector<float> y(outputs, -1e30f);
        PackedConv2d(b.conv, bias, b.x.data(), c.n, c.height, c.width, y.data(), threads == 1 ? single : pool);
        for (size_t k = 0; k < outputs; ++k) {
          ASSERT_NEAR(y[k], reference[k], 2e-5 * (1.0 + std::fabs(reference[k])))
              << Describe(c) << " on " << hwy::TargetName(target) << ", " << threads << " threads, at " << k;
        }
      }
    }
    hwy::SetSupportedTargetsForTest(0);
  }
}

TEST(PackedConv2d, BadInputIsRefused) {
  const ConvCase c{QuantType::kTernary2, {4, 4, 3, 1, 0}, 2, 5, 5, false, false};
  Built b = Build(c, 3);
  std::vector<float> y(2 * 4 * 3 * 3);
  b.x[((1 * 5 + 3) * 5 + 1) * 4 + 2] = std::nanf("");  // channels-last: image 1, pixel (3, 1), channel 2
  try {
    PackedConv2d(b.conv, nullptr, b.x.data(), 2, 5, 5, y.data());
    FAIL() << "a NaN pixel was accepted";
  } catch (const Error& error) {
    EXPECT_NE(std::string(error.what()).find("image 1, channel 2, pixel (3, 1)"), std::string::npos) << error.what();
  }
  EXPECT_THROW(PackedConv2dReference(b.conv, nullptr, b.x.data(), 2, 5, 5, y.data()), Error);
  EXPECT_THROW(PackedConv2d(b.conv, nullptr, b.x.data(), 1, 2, 2, y.data()), Error);  // smaller than the kernel
  // Per-group scales and ggml blocks depend on the column: they keep the im2col path.
  PackedWeights grouped;
  grouped.layout = {QuantType::kTernary2, 4, 36, Granularity::kGroup, 8};
  std::vector<float> w(4 * 36, 0.5f);
  grouped.bytes = Quantize(grouped.layout, w.data());
  EXPECT_FALSE(ConvolutionRepacks(grouped.layout));
  EXPECT_THROW(ChannelsLastConvWeights(grouped, c.geometry), Error);
  EXPECT_FALSE(ConvolutionRepacks({QuantType::kQ8_0, 4, 64, Granularity::kTensor, 0}));
  EXPECT_FALSE(ConvolutionRepacks({QuantType::kF32, 4, 36, Granularity::kTensor, 0}));
}

}  // namespace
}  // namespace atq
