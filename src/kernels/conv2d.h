// 2-D convolutions through the packed kernels without an im2col copy in float.
//
// Images and outputs are channels-last, [n, h, w, c] (how torch stores a [n, c, h, w] tensor in its channels_last
// memory format, which the layers between convolutions keep), cross-correlation, zero padding, groups = 1. An
// output position's patch is then k runs of k * in contiguous values (kernel row i, kernel column j, channel c:
// the column order of the weights here), and its outputs one contiguous row. Every patch is quantized to int8
// straight from the image with one scale, max |patch| / 127 (the levels QuantizeActivations gives the patch as a
// row), and multiplied by the packed weights with MatMulQuantized, which writes the output rows in place: the
// integer arithmetic of MatMul on the patches, without the float patch matrix, which for a 3x3 convolution is 9
// times the image and cost more than the product (the libtorch-unfold path this replaces ran a packed ternary CNN
// at a quarter of libtorch's float speed).
//
// Weights kept exactly (RPB, PackedWeights::boosted_index over the (i, j, c) columns) add their correction in
// float, per output position.
#pragma once

#include <cstdint>

#include "kernels/packed_matrix.h"
#include "util/thread_pool.h"

namespace atq {

struct ConvGeometry {
  int64_t in_channels = 0, out_channels = 0;
  int64_t kernel = 1, stride = 1, padding = 0;  // square kernel, same stride and padding both ways
  int64_t OutSide(int64_t side) const { return (side + 2 * padding - kernel) / stride + 1; }
  int64_t PatchSize() const { return kernel * kernel * in_channels; }
};

// A convolution's packed weights [out, k * k * in] with columns in (i, j, c) order, and its geometry.
struct PackedConvWeights {
  ConvGeometry geometry;
  PackedWeights weights;
};

// Whether PackedConvWeights can hold a packed weight of this layout: atq's integer types per tensor or per
// channel (their scales do not depend on the column, so the columns can be reordered) with one activation segment
// per row.
bool ConvolutionRepacks(const Layout& layout);

// Rearranges a packed weight [out, in * k * k] in torch's (c, i, j) column order, with its boosted weights, into
// the (i, j, c) order. Throws atq::Error when the layout does not fit the geometry or !ConvolutionRepacks.
PackedConvWeights ChannelsLastConvWeights(const PackedWeights& torch_order, const ConvGeometry& geometry);

// y [n, oh, ow, out] for x [n, height, width, in], both float32, plus bias [out] unless null. The reference builds every patch
// as a float row and takes MatMulReference; PackedConv2d is the fast path above, equal to it within float
// rounding of the per-patch sums. Both throw atq::Error for a value of x that is not finite (naming the image,
// channel and pixel) or an image smaller than the kernel.
void PackedConv2dReference(const PackedConvWeights& conv, const float* bias, const float* x, int64_t n,
                           int64_t height, int64_t width, float* y);
void PackedConv2d(const PackedConvWeights& conv, const float* bias, const float* x, int64_t n, int64_t height,
                  int64_t width, float* y, ThreadPool& pool = KernelThreadPool());

}  // namespace atq
