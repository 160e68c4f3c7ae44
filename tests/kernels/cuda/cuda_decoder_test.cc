// The decoder on the GPU against the scalar reference decoder (kernels/decoder.h) on the same packed weights:
// prefill logits of every position, then token-by-token decode through the key/value cache, for the features of
// each family (grouped and multi-query heads, Qwen2's biases, Gemma's GELU, embedding scale and 1 + w norms,
// Gemma 2's sandwich norms, soft-capping and sliding windows, linear RoPE scaling) and each packed format.
// Skipped with a message where no CUDA device is visible.
#include <algorithm>
#include <cmath>
#include <deque>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "../decoder_compare.h"
#include "bench/synthetic_decoder.h"
#include "kernels/cuda/cuda_backend.h"
#include "kernels/decoder.h"
#include "util/error.h"

namespace atq {
namespace {

#define ATQ_REQUIRE_CUDA() \
  if (!cuda::Available()) GTEST_SKIP() << "no CUDA device visible: " << cuda::DeviceSummary()

std::unique_ptr<DecoderRunner> OnGpu(const DecoderSpec& spec, int64_t capacity) {
  return MakeDecoderRunner(Device::kCuda, spec, capacity);
}

TEST(CudaDecoder, FeaturesAndFormatsMatchTheReference) {
  ATQ_REQUIRE_CUDA();
  for (const auto& [name, shape] : testutil::DecoderFeatureShapes()) testutil::CompareWithReference(shape, name, OnGpu);
}

TEST(CudaDecoder, BadInputIsAnError) {
  ATQ_REQUIRE_CUDA();
  SyntheticDecoderShape shape;
  std::deque<PackedWeights> storage;
  const DecoderSpec spec = SyntheticDecoder(shape, storage);
  auto gpu = MakeDecoderRunner(Device::kCuda, spec, 4);
  std::vector<float> logits;
  const int64_t outside = shape.vocab;
  EXPECT_THROW(gpu->Forward(&outside, 1, false, logits), Error);
  const std::vector<int64_t> five = {1, 2, 3, 4, 5};
  EXPECT_THROW(gpu->Forward(five.data(), 5, false, logits), Error);
  EXPECT_EQ(gpu->length(), 0);
  gpu->Forward(five.data(), 4, false, logits);
  EXPECT_EQ(gpu->length(), 4);
}

}  // namespace
}  // namespace atq
