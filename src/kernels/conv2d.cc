// PackedConv2d: images to channels-last, patches quantized to int8 in place of an im2col matrix, the packed product
// per block of positions (kernels/matmul.cc), the output back to torch's layout, RPB corrections in float.
#include "kernels/conv2d.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <numeric>
#include <utility>
#include <vector>

#include "formats/atq_packed.h"
#include "kernels/int8_activations.h"
#include "kernels/matmul.h"
#include "util/error.h"

#undef HWY_TARGET_INCLUDE
#define HWY_TARGET_INCLUDE "kernels/conv2d.cc"
#include <hwy/foreach_target.h>  // IWYU pragma: keep
#include <hwy/highway.h>

#include "kernels/lane_sums-inl.h"

HWY_BEFORE_NAMESPACE();
namespace atq {
namespace HWY_NAMESPACE {
namespace hn = hwy::HWY_NAMESPACE;

// Each pixel's max |x| over its channels, for pixels [h * w, channels] of a channels-last image. False if a
// value is not finite.
bool PixelMaxima(const float* image, int64_t channels, int64_t pixels, float* pixel_max) {
  const hn::ScalableTag<float> df;
  bool finite = true;
  for (int64_t p = 0; p < pixels; ++p) {
    bool ok = false;
    pixel_max[p] = MaxAbsIfFinite(df, image + p * channels, channels, &ok);
    finite = finite && ok;
  }
  return finite;
}

// rows [count, out] += bias.
void AddBias(const float* bias, int64_t count, int64_t out, float* rows) {
  const hn::ScalableTag<float> df;
  const int64_t lanes = static_cast<int64_t>(hn::Lanes(df));
  for (int64_t p = 0; p < count; ++p) {
    float* row = rows + p * out;
    int64_t o = 0;
    for (; o + lanes <= out; o += lanes) hn::StoreU(hn::Add(hn::LoadU(df, row + o), hn::LoadU(df, bias + o)), df, row + o);
    for (; o < out; ++o) row[o] += bias[o];
  }
}

// q[j] = the int8 level of in[j] at `inverse` (as ActivationLevel), j < count; returns the sum of the levels.
HWY_INLINE int32_t QuantizeRun(const float* in, int64_t count, float inverse, int8_t* q) {
  const hn::ScalableTag<float> df;
  const hn::Rebind<int32_t, decltype(df)> di32;
  const hn::Rebind<int8_t, decltype(df)> di8;
  const int64_t lanes = static_cast<int64_t>(hn::Lanes(df));
  const auto scale = hn::Set(df, inverse), high = hn::Set(df, 127.0f), low = hn::Set(df, -127.0f);
  auto sums = hn::Zero(di32);
  int64_t j = 0;
  for (; j + lanes <= count; j += lanes) {
    const auto level = hn::Min(high, hn::Max(low, hn::Round(hn::Mul(hn::LoadU(df, in + j), scale))));
    const auto levels = hn::ConvertTo(di32, level);
    sums = hn::Add(sums, levels);
    hn::StoreU(hn::DemoteTo(di8, levels), di8, q + j);
  }
  int32_t sum = hn::GetLane(hn::SumOfLanes(di32, sums));
  for (; j < count; ++j) {
    q[j] = ActivationLevel(in[j], inverse);
    sum += q[j];
  }
  return sum;
}

// Rows [0, count) of `out` (already shaped: one segment per row) = the patches of output positions first ..
// first + count - 1 of one channels-last image, each quantized with its own scale.
void QuantizePatches(const ConvGeometry& g, const float* image, const float* pixel_max, int64_t height,
                     int64_t width, int64_t first, int64_t count, Int8Activations& out) {
  const int64_t out_width = g.OutSide(width), channels = g.in_channels, k = g.kernel;
  for (int64_t row = 0; row < count; ++row) {
    const int64_t position = first + row;
    const int64_t top = position / out_width * g.stride - g.padding;
    const int64_t left = position % out_width * g.stride - g.padding;
    // The kernel's rows and columns that fall inside the image.
    const int64_t i0 = std::max<int64_t>(0, -top), i1 = std::min(k, height - top);
    const int64_t j0 = std::max<int64_t>(0, -left), j1 = std::min(k, width - left);
    float largest = 0.0f;
    for (int64_t i = i0; i < i1; ++i) {
      const float* maxima = pixel_max + (top + i) * width + left;
      for (int64_t j = j0; j < j1; ++j) largest = std::max(largest, maxima[j]);
    }
    const float scale = largest / 127.0f;
    const float inverse = scale > 0.0f ? 1.0f / scale : 0.0f;
    int8_t* q = out.values.data() + row * out.stride;
    int32_t sum = 0;
    for (int64_t i = 0; i < k; ++i) {
      int8_t* tap_row = q + i * k * channels;
      if (i < i0 || i >= i1 || j0 >= j1) {
        std::memset(tap_row, 0, static_cast<size_t>(k * channels));
        continue;
      }
      std::memset(tap_row, 0, static_cast<size_t>(j0 * channels));
      // Columns j0 .. j1 - 1 of this kernel row are consecutive pixels: one run of (j1 - j0) * channels values.
      sum += QuantizeRun(image + ((top + i) * width + left + j0) * channels, (j1 - j0) * channels, inverse,
                         tap_row + j0 * channels);
      std::memset(tap_row + j1 * channels, 0, static_cast<size_t>((k - j1) * channels));
    }
    out.scales[row] = scale;
    out.sums[row] = sum;
  }
}

}  // namespace HWY_NAMESPACE
}  // namespace atq
HWY_AFTER_NAMESPACE();

#if HWY_ONCE
namespace atq {

HWY_EXPORT(PixelMaxima);
HWY_EXPORT(AddBias);
HWY_EXPORT(QuantizePatches);

namespace {

void CheckWeightsFit(const Layout& layout, const ConvGeometry& g) {
  Require(layout.rows == g.out_channels && layout.cols == g.PatchSize(),
          "packed convolution: weights {}x{} do not fit {} -> {} channels with a {}x{} kernel", layout.rows,
          layout.cols, g.in_channels, g.out_channels, g.kernel, g.kernel);
}

void CheckConvolution(const PackedConvWeights& conv, int64_t n, int64_t height, int64_t width) {
  const ConvGeometry& g = conv.geometry;
  CheckWeightsFit(conv.weights.layout, g);
  Require(n >= 0 && height + 2 * g.padding >= g.kernel && width + 2 * g.padding >= g.kernel,
          "packed convolution: a {}x{} image with padding {} is smaller than the {}x{} kernel", height, width,
          g.padding, g.kernel, g.kernel);
}

// Names the first value of x [n, height, width, channels] that is not finite.
[[noreturn]] void FailNonFinite(const float* x, int64_t n, int64_t channels, int64_t height, int64_t width) {
  const int64_t count = n * channels * height * width;
  const int64_t at = std::find_if(x, x + count, [](float v) { return !std::isfinite(v); }) - x;
  const int64_t pixel = at / channels % (height * width);
  Fail("packed convolution: input image {}, channel {}, pixel ({}, {}) is {}", at / (channels * height * width),
       at % channels, pixel / width, pixel % width, x[std::min(at, count - 1)]);
}

// The weights kept exactly, as the corrections a product adds per output position: output channel, the input value's
// offset from the patch's first pixel (channels-last), the kernel row and column it sits under, the correction.
struct BoostedTap {
  int32_t out;
  int32_t offset;
  int32_t i, j;
  float delta;
};

std::vector<BoostedTap> BoostedTaps(const PackedConvWeights& conv, int64_t width) {
  const PackedWeights& w = conv.weights;
  const ConvGeometry& g = conv.geometry;
  const int64_t cols = w.layout.cols;
  std::vector<BoostedTap> taps;
  taps.reserve(w.boosted_index.size());
  for (size_t e = 0; e < w.boosted_index.size(); ++e) {
    const int64_t col = w.boosted_index[e] % cols, tap = col / g.in_channels, c = col % g.in_channels;
    const int64_t i = tap / g.kernel, j = tap % g.kernel;
    taps.push_back({static_cast<int32_t>(w.boosted_index[e] / cols),
                    static_cast<int32_t>((i * width + j) * g.in_channels + c), static_cast<int32_t>(i),
                    static_cast<int32_t>(j), w.boosted_delta[e]});
  }
  return taps;
}

// rows [count, out] (output positions first .. first + count - 1 of one image) += the boosted corrections, read
// from the image [height, width, in] while both are in cache. A few per cent of the weights at most, one scalar
// multiply-add each per position; positions whose patch lies inside the image skip the bounds checks.
void AddBoostedRows(const std::vector<BoostedTap>& taps, const ConvGeometry& g, const float* image, int64_t height,
                    int64_t width, int64_t first, int64_t count, float* rows) {
  const int64_t out_w = g.OutSide(width);
  for (int64_t row = 0; row < count; ++row) {
    const int64_t position = first + row;
    const int64_t top = position / out_w * g.stride - g.padding, left = position % out_w * g.stride - g.padding;
    float* out = rows + row * g.out_channels;
    if (top >= 0 && left >= 0 && top + g.kernel <= height && left + g.kernel <= width) {
      const float* patch = image + (top * width + left) * g.in_channels;
      for (const BoostedTap& t : taps) out[t.out] += t.delta * patch[t.offset];
      continue;
    }
    for (const BoostedTap& t : taps) {
      const int64_t ih = top + t.i, iw = left + t.j;
      if (ih >= 0 && ih < height && iw >= 0 && iw < width) {
        out[t.out] += t.delta * image[(top * width + left) * g.in_channels + t.offset];
      }
    }
  }
}

}  // namespace

bool ConvolutionRepacks(const Layout& layout) {
  const TypeFamily family = Traits(layout.type).family;
  return (family == TypeFamily::kTernary || family == TypeFamily::kUniform) &&
         layout.granularity != Granularity::kGroup && KernelSegment(layout) >= layout.cols;
}

PackedConvWeights ChannelsLastConvWeights(const PackedWeights& torch_order, const ConvGeometry& geometry) {
  const Layout& layout = torch_order.layout;
  const int64_t k2 = geometry.kernel * geometry.kernel, channels = geometry.in_channels;
  CheckWeightsFit(layout, geometry);
  Require(ConvolutionRepacks(layout), "packed convolution: {} weights ({}) cannot be reordered channels-last",
          TypeName(layout.type), GranularityString(layout));
  // Column (c, i, j) of torch's order is column (i, j, c) here: new = tap * channels + c, old = c * k2 + tap.
  const auto moved = [&](int64_t old) { return (old % k2) * channels + old / k2; };
  AtqCodes codes = UnpackAtq(layout, torch_order.data());
  std::vector<uint8_t> reordered(codes.codes.size());
  for (int64_t r = 0; r < layout.rows; ++r) {
    const uint8_t* from = codes.codes.data() + r * layout.cols;
    uint8_t* to = reordered.data() + r * layout.cols;
    for (int64_t col = 0; col < layout.cols; ++col) to[moved(col)] = from[col];
  }
  codes.codes = std::move(reordered);
  PackedConvWeights conv;
  conv.geometry = geometry;
  conv.weights.layout = layout;
  conv.weights.bytes.resize(static_cast<size_t>(PackedBytes(layout)));
  PackAtq(layout, codes, conv.weights.bytes.data());
  std::vector<std::pair<int64_t, float>> boosted;
  for (size_t e = 0; e < torch_order.boosted_index.size(); ++e) {
    const int64_t index = torch_order.boosted_index[e];
    boosted.emplace_back(index / layout.cols * layout.cols + moved(index % layout.cols),
                         torch_order.boosted_value[e]);
  }
  std::sort(boosted.begin(), boosted.end());
  std::vector<int64_t> index(boosted.size());
  std::vector<float> value(boosted.size());
  for (size_t e = 0; e < boosted.size(); ++e) std::tie(index[e], value[e]) = boosted[e];
  SetBoosted(conv.weights, std::move(index), std::move(value), "packed convolution");
  return conv;
}

void PackedConv2dReference(const PackedConvWeights& conv, const float* bias, const float* x, int64_t n,
                           int64_t height, int64_t width, float* y) {
  CheckConvolution(conv, n, height, width);
  const ConvGeometry& g = conv.geometry;
  const int64_t out_h = g.OutSide(height), out_w = g.OutSide(width), positions = out_h * out_w;
  const int64_t patch = g.PatchSize(), channels = g.in_channels;
  for (int64_t v = 0; v < n * channels * height * width; ++v) {
    if (!std::isfinite(x[v])) FailNonFinite(x, n, channels, height, width);
  }
  std::vector<float> patches(static_cast<size_t>(positions * patch));
  for (int64_t b = 0; b < n; ++b) {
    const float* image = x + b * height * width * channels;
    for (int64_t p = 0; p < positions; ++p) {
      for (int64_t i = 0; i < g.kernel; ++i) {
        for (int64_t j = 0; j < g.kernel; ++j) {
          const int64_t ih = p / out_w * g.stride - g.padding + i, iw = p % out_w * g.stride - g.padding + j;
          const bool inside = ih >= 0 && ih < height && iw >= 0 && iw < width;
          for (int64_t c = 0; c < channels; ++c) {
            patches[static_cast<size_t>(p * patch + (i * g.kernel + j) * channels + c)] =
                inside ? image[(ih * width + iw) * channels + c] : 0.0f;
          }
        }
      }
    }
    float* rows = y + b * positions * g.out_channels;
    MatMulReference(conv.weights.view(), patches.data(), positions, rows);
    AddBoosted(conv.weights, patches.data(), positions, rows);
    for (int64_t p = 0; p < positions && bias != nullptr; ++p) {
      for (int64_t o = 0; o < g.out_channels; ++o) rows[p * g.out_channels + o] += bias[o];
    }
  }
}

void PackedConv2d(const PackedConvWeights& conv, const float* bias, const float* x, int64_t n, int64_t height,
                  int64_t width, float* y, ThreadPool& pool) {
  CheckConvolution(conv, n, height, width);
  if (n == 0) return;
  const ConvGeometry& g = conv.geometry;
  const PackedMatrix weights = conv.weights.view();
  const int64_t pixels = height * width, channels = g.in_channels, patch = g.PatchSize();
  const int64_t out_h = g.OutSide(height), out_w = g.OutSide(width), positions = out_h * out_w;
  const int64_t segment = KernelSegment(weights.layout);
  Require(ConvolutionRepacks(weights.layout), "packed convolution: {} weights ({}) are not a channels-last layout",
          TypeName(weights.layout.type), GranularityString(weights.layout));

  std::vector<float> maxima(static_cast<size_t>(n * pixels));
  std::vector<char> finite(static_cast<size_t>(n));
  pool.ParallelFor(n, 1, [&](int64_t begin, int64_t end, int) {
    for (int64_t b = begin; b < end; ++b) {
      finite[static_cast<size_t>(b)] = HWY_DYNAMIC_DISPATCH(PixelMaxima)(x + b * pixels * channels, channels,
                                                                         pixels, maxima.data() + b * pixels);
    }
  });
  if (std::find(finite.begin(), finite.end(), 0) != finite.end()) FailNonFinite(x, n, channels, height, width);

  // Blocks of positions whose int8 patches stay in L2 (about 128 KB), smaller while that leaves threads idle.
  constexpr int64_t kBlockBytes = 128 << 10, kMinBlock = 16;
  const int64_t threads = pool.threads();
  int64_t block = std::clamp<int64_t>(kBlockBytes / patch / 4 * 4, kMinBlock, std::max<int64_t>(positions, 4));
  while (block > kMinBlock && n * ((positions + block - 1) / block) < 2 * threads) {
    block = std::max(kMinBlock, block / 2);
  }
  const int64_t blocks_per_image = (positions + block - 1) / block, tasks = n * blocks_per_image;
  const std::vector<BoostedTap> boosted = BoostedTaps(conv, width);
  const auto run_block = [&](int64_t task, ThreadPool& product_pool) {
    thread_local Int8Activations acts;
    const int64_t b = task / blocks_per_image, first = task % blocks_per_image * block;
    const int64_t count = std::min(block, positions - first);
    if (acts.rows != count || acts.cols != patch || acts.segment != segment) {
      ShapeActivations(count, patch, segment, acts);
    }
    HWY_DYNAMIC_DISPATCH(QuantizePatches)(g, x + b * pixels * channels, maxima.data() + b * pixels, height, width,
                                          first, count, acts);
    float* rows = y + (b * positions + first) * g.out_channels;  // channels-last: the product's rows in place
    MatMulQuantized(weights, acts, rows, product_pool);
    if (bias != nullptr) HWY_DYNAMIC_DISPATCH(AddBias)(bias, count, g.out_channels, rows);
    if (!boosted.empty()) AddBoostedRows(boosted, g, x + b * pixels * channels, height, width, first, count, rows);
  };
  if (tasks >= threads) {
    pool.ParallelFor(tasks, 1, [&](int64_t begin, int64_t end, int) {
      thread_local ThreadPool serial(1);
      for (int64_t task = begin; task < end; ++task) run_block(task, serial);
    });
  } else {
    for (int64_t task = 0; task < tasks; ++task) run_block(task, pool);  // too few blocks: threads split the rows
  }
}

}  // namespace atq
#endif  // HWY_ONCE
