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

HWY_BEFORE_NAMESPACE();
namespace atq {
namespace HWY_NAMESPACE {
namespace hn = hwy::HWY_NAMESPACE;

// Image [c, h, w] -> [h, w, c], and each pixel's max |x| over its channels. False if a value is not finite.
bool ChannelsLastImage(const float* image, int64_t channels, int64_t pixels, float* out, float* pixel_max) {
  constexpr int64_t kPixelBlock = 64;  // pixels per pass: the reads of every channel stay in L1
  for (int64_t p0 = 0; p0 < pixels; p0 += kPixelBlock) {
    const int64_t p1 = std::min(pixels, p0 + kPixelBlock);
    for (int64_t c = 0; c < channels; ++c) {
      const float* from = image + c * pixels;
      for (int64_t p = p0; p < p1; ++p) out[p * channels + c] = from[p];
    }
  }
  const hn::ScalableTag<float> df;
  const int64_t lanes = static_cast<int64_t>(hn::Lanes(df));
  bool finite = true;
  for (int64_t p = 0; p < pixels; ++p) {
    const float* in = out + p * channels;
    auto max_abs = hn::Zero(df);
    auto ok = hn::FirstN(df, lanes);
    int64_t c = 0;
    for (; c + lanes <= channels; c += lanes) {
      const auto v = hn::LoadU(df, in + c);
      ok = hn::And(ok, hn::IsFinite(v));
      max_abs = hn::Max(max_abs, hn::Abs(v));
    }
    float largest = hn::GetLane(hn::MaxOfLanes(df, max_abs));
    finite = finite && hn::AllTrue(df, ok);
    for (; c < channels; ++c) {
      finite = finite && std::isfinite(in[c]);
      largest = std::max(largest, std::fabs(in[c]));
    }
    pixel_max[p] = largest;
  }
  return finite;
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

HWY_EXPORT(ChannelsLastImage);
HWY_EXPORT(QuantizePatches);

namespace {

void CheckConvolution(const PackedConvWeights& conv, int64_t n, int64_t height, int64_t width) {
  const ConvGeometry& g = conv.geometry;
  const Layout& layout = conv.weights.layout;
  Require(layout.rows == g.out_channels && layout.cols == g.PatchSize(),
          "packed convolution: weights {}x{} do not fit {} -> {} channels with a {}x{} kernel", layout.rows,
          layout.cols, g.in_channels, g.out_channels, g.kernel, g.kernel);
  Require(n >= 0 && height + 2 * g.padding >= g.kernel && width + 2 * g.padding >= g.kernel,
          "packed convolution: a {}x{} image with padding {} is smaller than the {}x{} kernel", height, width,
          g.padding, g.kernel, g.kernel);
}

// Names the first value of x that is not finite.
[[noreturn]] void FailNonFinite(const float* x, int64_t n, int64_t channels, int64_t height, int64_t width) {
  const int64_t count = n * channels * height * width;
  const int64_t at = std::find_if(x, x + count, [](float v) { return !std::isfinite(v); }) - x;
  const int64_t pixel = at % (height * width);
  Fail("packed convolution: input image {}, channel {}, pixel ({}, {}) is {}", at / (channels * height * width),
       at / (height * width) % channels, pixel / width, pixel % width, x[std::min(at, count - 1)]);
}

// Adds the corrections of the weights kept exactly to y [n, out, oh, ow] from x [n, in, h, w].
void AddBoostedConvolution(const PackedConvWeights& conv, const float* x, int64_t n, int64_t height, int64_t width,
                           float* y, ThreadPool& pool) {
  const PackedWeights& w = conv.weights;
  if (w.boosted_index.empty()) return;
  const ConvGeometry& g = conv.geometry;
  const int64_t cols = w.layout.cols, out_h = g.OutSide(height), out_w = g.OutSide(width);
  // Entries are sorted by flat index, so by output channel: row_start[r] .. row_start[r + 1].
  std::vector<size_t> row_start(static_cast<size_t>(g.out_channels + 1), 0);
  for (const int64_t index : w.boosted_index) ++row_start[static_cast<size_t>(index / cols + 1)];
  std::partial_sum(row_start.begin(), row_start.end(), row_start.begin());
  pool.ParallelFor(n * g.out_channels, 1, [&](int64_t begin, int64_t end, int) {
    for (int64_t task = begin; task < end; ++task) {
      const int64_t b = task / g.out_channels, r = task % g.out_channels;
      float* plane = y + task * out_h * out_w;
      for (size_t e = row_start[static_cast<size_t>(r)]; e < row_start[static_cast<size_t>(r + 1)]; ++e) {
        const int64_t col = w.boosted_index[e] % cols;
        const int64_t tap = col / g.in_channels, c = col % g.in_channels;
        const int64_t i = tap / g.kernel, j = tap % g.kernel;
        const float delta = w.boosted_delta[e];
        const float* channel = x + (b * g.in_channels + c) * height * width;
        for (int64_t oh = 0; oh < out_h; ++oh) {
          const int64_t ih = oh * g.stride - g.padding + i;
          if (ih < 0 || ih >= height) continue;
          const float* in_row = channel + ih * width;
          float* out_row = plane + oh * out_w;
          for (int64_t ow = 0; ow < out_w; ++ow) {
            const int64_t iw = ow * g.stride - g.padding + j;
            if (iw >= 0 && iw < width) out_row[ow] += delta * in_row[iw];
          }
        }
      }
    }
  });
}

// out [positions, out] of one image (+ bias) into its planes of y [out, positions].
void StoreOutputs(const float* rows, int64_t count, int64_t out_channels, const float* bias, int64_t positions,
                  int64_t first, float* image_y) {
  for (int64_t o = 0; o < out_channels; ++o) {
    const float add = bias == nullptr ? 0.0f : bias[o];
    float* plane = image_y + o * positions + first;
    for (int64_t p = 0; p < count; ++p) plane[p] = rows[p * out_channels + o] + add;
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
  Require(layout.rows == geometry.out_channels && layout.cols == geometry.PatchSize(),
          "packed convolution: weights {}x{} do not fit {} -> {} channels with a {}x{} kernel", layout.rows,
          layout.cols, channels, geometry.out_channels, geometry.kernel, geometry.kernel);
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
  const int64_t patch = g.PatchSize();
  for (int64_t v = 0; v < n * g.in_channels * height * width; ++v) {
    if (!std::isfinite(x[v])) FailNonFinite(x, n, g.in_channels, height, width);
  }
  std::vector<float> patches(static_cast<size_t>(positions * patch)), rows(static_cast<size_t>(positions * g.out_channels));
  for (int64_t b = 0; b < n; ++b) {
    const float* image = x + b * g.in_channels * height * width;
    for (int64_t p = 0; p < positions; ++p) {
      for (int64_t i = 0; i < g.kernel; ++i) {
        for (int64_t j = 0; j < g.kernel; ++j) {
          const int64_t ih = p / out_w * g.stride - g.padding + i, iw = p % out_w * g.stride - g.padding + j;
          const bool inside = ih >= 0 && ih < height && iw >= 0 && iw < width;
          for (int64_t c = 0; c < g.in_channels; ++c) {
            patches[static_cast<size_t>(p * patch + (i * g.kernel + j) * g.in_channels + c)] =
                inside ? image[(c * height + ih) * width + iw] : 0.0f;
          }
        }
      }
    }
    MatMulReference(conv.weights.view(), patches.data(), positions, rows.data());
    AddBoosted(conv.weights, patches.data(), positions, rows.data());
    StoreOutputs(rows.data(), positions, g.out_channels, bias, positions, 0,
                 y + b * g.out_channels * positions);
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

  // Images a chunk at a time, so that their channels-last copies stay a few MB (heap memory reused from call to
  // call rather than fresh pages from the kernel, which a buffer of the whole batch would be).
  constexpr int64_t kChunkBytes = int64_t{2} << 20;
  const int64_t chunk = std::clamp<int64_t>(kChunkBytes / (pixels * channels * 4), 1, n);
  thread_local std::vector<float> image_buffer, maxima_buffer;  // the caller's; workers see them through pointers
  image_buffer.resize(static_cast<size_t>(chunk * pixels * channels));
  maxima_buffer.resize(static_cast<size_t>(chunk * pixels));
  float* const images = image_buffer.data();
  float* const maxima = maxima_buffer.data();
  std::vector<char> finite(static_cast<size_t>(chunk));
  // Blocks of positions whose int8 patches stay in L2 (about 128 KB), smaller while that leaves threads idle.
  constexpr int64_t kBlockBytes = 128 << 10, kMinBlock = 16;
  const int64_t threads = pool.threads();
  int64_t block = std::clamp<int64_t>(kBlockBytes / patch / 4 * 4, kMinBlock, std::max<int64_t>(positions, 4));
  while (block > kMinBlock && chunk * ((positions + block - 1) / block) < 2 * threads) {
    block = std::max(kMinBlock, block / 2);
  }
  const int64_t blocks_per_image = (positions + block - 1) / block;
  for (int64_t b0 = 0; b0 < n; b0 += chunk) {
    const int64_t count_images = std::min(chunk, n - b0);
    const float* chunk_x = x + b0 * channels * pixels;
    float* chunk_y = y + b0 * g.out_channels * positions;
    pool.ParallelFor(count_images, 1, [&](int64_t begin, int64_t end, int) {
      for (int64_t b = begin; b < end; ++b) {
        finite[static_cast<size_t>(b)] = HWY_DYNAMIC_DISPATCH(ChannelsLastImage)(
            chunk_x + b * channels * pixels, channels, pixels, images + b * pixels * channels,
            maxima + b * pixels);
      }
    });
    if (std::find(finite.begin(), finite.begin() + count_images, 0) != finite.begin() + count_images) {
      FailNonFinite(x, n, channels, height, width);
    }
    const int64_t tasks = count_images * blocks_per_image;
    const auto run_block = [&](int64_t task, ThreadPool& product_pool) {
      thread_local Int8Activations acts;
      thread_local std::vector<float> rows;
      const int64_t b = task / blocks_per_image, first = task % blocks_per_image * block;
      const int64_t count = std::min(block, positions - first);
      if (acts.rows != count || acts.cols != patch || acts.segment != segment) {
        ShapeActivations(count, patch, segment, acts);
      }
      rows.resize(static_cast<size_t>(count * g.out_channels));
      HWY_DYNAMIC_DISPATCH(QuantizePatches)(g, images + b * pixels * channels, maxima + b * pixels,
                                            height, width, first, count, acts);
      MatMulQuantized(weights, acts, rows.data(), product_pool);
      StoreOutputs(rows.data(), count, g.out_channels, bias, positions, first, chunk_y + b * g.out_channels * positions);
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
  AddBoostedConvolution(conv, x, n, height, width, y, pool);
}

}  // namespace atq
#endif  // HWY_ONCE
