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

#include "bench/synthetic_decoder.h"
#include "kernels/cuda/cuda_backend.h"
#include "kernels/decoder.h"
#include "util/error.h"

namespace atq {
namespace {

#define ATQ_REQUIRE_CUDA() \
  if (!cuda::Available()) GTEST_SKIP() << "no CUDA device visible: " << cuda::DeviceSummary()

// Both decoders quantize activations to int8 per segment; a sum rounded differently can move one activation by a
// level, and the difference grows through the layers, so logits agree to a share of their range, not to float
// rounding. 2% of the largest logit, with the same top token for nearly every position, catches any wrong kernel
// (a wrong position, head, mask or norm moves logits by their whole range).
void ExpectClose(const std::vector<float>& expected, const std::vector<float>& actual, int64_t vocab,
                 const std::string& what) {
  ASSERT_EQ(expected.size(), actual.size()) << what;
  float largest = 0, worst = 0;
  for (size_t i = 0; i < expected.size(); ++i) {
    largest = std::max(largest, std::fabs(expected[i]));
    worst = std::max(worst, std::fabs(expected[i] - actual[i]));
  }
  EXPECT_LE(worst, 0.02f * largest + 1e-4f) << what << ": largest logit " << largest;
  const size_t rows = expected.size() / static_cast<size_t>(vocab);
  size_t same = 0;
  for (size_t r = 0; r < rows; ++r) {
    const auto row = [&](const std::vector<float>& v) { return v.begin() + static_cast<std::ptrdiff_t>(r * vocab); };
    same += std::max_element(row(expected), row(expected) + vocab) - row(expected) ==
            std::max_element(row(actual), row(actual) + vocab) - row(actual);
  }
  EXPECT_GE(same * 10, rows * 9) << what << ": top tokens agree on " << same << " of " << rows << " positions";
}

void Compare(const SyntheticDecoderShape& shape, const std::string& name) {
  std::deque<PackedWeights> storage;
  const DecoderSpec spec = SyntheticDecoder(shape, storage);
  const int64_t capacity = 40;
  auto reference = MakeDecoderRunner(Device::kCpu, spec, capacity);
  auto gpu = MakeDecoderRunner(Device::kCuda, spec, capacity);
  std::vector<int64_t> ids(19);
  for (size_t i = 0; i < ids.size(); ++i) ids[i] = static_cast<int64_t>((i * 37 + 5) % shape.vocab);
  std::vector<float> expected, actual;
  // a prompt of 13 tokens with every position's logits, then 6 tokens one at a time
  reference->Forward(ids.data(), 13, true, expected);
  gpu->Forward(ids.data(), 13, true, actual);
  ExpectClose(expected, actual, shape.vocab, name + " prefill");
  for (size_t t = 13; t < ids.size(); ++t) {
    reference->Forward(&ids[t], 1, false, expected);
    gpu->Forward(&ids[t], 1, false, actual);
    ExpectClose(expected, actual, shape.vocab, name + " decode at " + std::to_string(t));
  }
  EXPECT_EQ(gpu->length(), 19);
  // After a reset the cache starts over: the same prompt gives the same logits again.
  gpu->Reset();
  std::vector<float> again;
  gpu->Forward(ids.data(), 13, true, again);
  reference->Reset();
  reference->Forward(ids.data(), 13, true, expected);
  ExpectClose(expected, again, shape.vocab, name + " after reset");
}

TEST(CudaDecoder, LlamaGroupedQueryT2) {
  ATQ_REQUIRE_CUDA();
  SyntheticDecoderShape shape;
  Compare(shape, "llama t2");
}

TEST(CudaDecoder, EveryFormat) {
  ATQ_REQUIRE_CUDA();
  for (const QuantType type : {QuantType::kQ8_0, QuantType::kQ4_0, QuantType::kTQ2_0, QuantType::kTQ1_0,
                               QuantType::kUniform4Sym, QuantType::kUniform4Asym}) {
    SyntheticDecoderShape shape;
    shape.hidden = 256;  // TQ2_0/TQ1_0 take rows of whole 256-weight blocks
    shape.heads = 4;
    shape.kv_heads = 1;  // multi-query
    shape.head_dim = 64;
    shape.intermediate = 512;
    shape.linear_type = type;
    shape.embedding_type = type;
    shape.tied_head = type != QuantType::kQ8_0;
    if (Traits(type).family != TypeFamily::kGgmlBlock) {
      shape.granularity = Granularity::kGroup;
      shape.group_size = 64;
    }
    Compare(shape, std::string(TypeName(type)));
  }
}

TEST(CudaDecoder, Qwen2BiasesAndLinearRope) {
  ATQ_REQUIRE_CUDA();
  SyntheticDecoderShape shape;
  shape.qkv_bias = true;
  shape.rope_position_divisor = 4;
  shape.head_dim = 32;
  Compare(shape, "qwen2");
}

TEST(CudaDecoder, Gemma2SandwichSoftcapWindow) {
  ATQ_REQUIRE_CUDA();
  SyntheticDecoderShape shape;
  shape.gemma = true;
  shape.gemma2 = true;
  shape.window = 5;  // shorter than the prompt: the even layers' masks matter
  shape.layers = 3;
  shape.head_dim = 128;
  shape.hidden = 128;
  Compare(shape, "gemma2");
}

TEST(CudaDecoder, LargeHeadDim) {
  ATQ_REQUIRE_CUDA();
  SyntheticDecoderShape shape;
  shape.gemma = true;
  shape.head_dim = 256;
  shape.heads = 2;
  shape.kv_heads = 2;
  Compare(shape, "gemma head_dim 256");
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
