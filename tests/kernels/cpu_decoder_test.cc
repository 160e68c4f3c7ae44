// The CPU decoder (kernels/cpu_decoder.h) against the scalar reference decoder on the same packed weights, for the
// features of each family and each format (tests/kernels/decoder_compare.h); the same answer on one thread and on
// several; a prompt run in pieces gives what it gives at once; bad calls leave the cache as it was.
#include <deque>
#include <memory>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "decoder_compare.h"
#include "bench/synthetic_decoder.h"
#include "kernels/cpu_decoder.h"
#include "util/error.h"
#include "util/thread_pool.h"

namespace atq {
namespace {

TEST(CpuDecoder, FeaturesAndFormatsMatchTheReference) {
  const auto on_cpu = [](const DecoderSpec& spec, int64_t capacity) { return MakeDecoderRunner(Device::kCpu, spec, capacity); };
  for (const auto& [name, shape] : testutil::DecoderFeatureShapes()) testutil::CompareWithReference(shape, name, on_cpu);
  testutil::CompareWithReference(testutil::Gpt2FeatureShape(), "gpt2", on_cpu);
  SyntheticDecoderShape ternary = testutil::Gpt2FeatureShape();
  ternary.linear_type = QuantType::kTernary2;
  testutil::CompareWithReference(ternary, "gpt2 t2", on_cpu);
}

// The first `prompt` of `ids` at once (every position's logits), then the rest one at a time, on 1 and on 3
// threads: the logits must be the same bit for bit.
void ExpectSameOnOneAndThreeThreads(const SyntheticDecoderShape& shape, const std::vector<int64_t>& ids, size_t prompt,
                                    const std::string& what) {
  std::deque<PackedWeights> storage;
  const DecoderSpec spec = SyntheticDecoder(shape, storage);
  ThreadPool one(1), three(3);
  const int64_t capacity = static_cast<int64_t>(ids.size());
  auto single = MakeCpuDecoder(spec, capacity, one);
  auto several = MakeCpuDecoder(spec, capacity, three);
  std::vector<float> a, b;
  single->Forward(ids.data(), static_cast<int64_t>(prompt), true, a);
  several->Forward(ids.data(), static_cast<int64_t>(prompt), true, b);
  ASSERT_EQ(a.size(), prompt * static_cast<size_t>(shape.vocab)) << what;
  EXPECT_EQ(a, b) << what;
  for (size_t t = prompt; t < ids.size(); ++t) {
    single->Forward(&ids[t], 1, false, a);
    several->Forward(&ids[t], 1, false, b);
    EXPECT_EQ(a, b) << what << ", position " << t;
  }
}

std::vector<int64_t> Tokens(size_t count, int64_t step, int64_t vocab) {
  std::vector<int64_t> ids(count);
  for (size_t i = 0; i < count; ++i) ids[i] = static_cast<int64_t>((static_cast<int64_t>(i) * step + 1) % vocab);
  return ids;
}

// Threads split output rows and attention heads, never a sum, so the logits are the same bit for bit.
TEST(CpuDecoder, ThreadsDoNotChangeTheResult) {
  SyntheticDecoderShape shape;
  shape.gemma = true;
  shape.gemma2 = true;
  shape.window = 4;
  ExpectSameOnOneAndThreeThreads(shape, Tokens(17, 13, shape.vocab), 12, "gemma2");
}

// A long prompt, whose rows the norms, rotations, activations, biases and the activations' int8 quantization
// (and the 2-bit kernels' reordering of it) share out over the pool: the same logits on 1 and 3 threads, for a
// gated family and for GPT-2's ungated MLP with biases, in a 2-bit and a 1.6-bit format.
TEST(CpuDecoder, ThreadsDoNotChangeALongPrompt) {
  for (const bool gpt2 : {false, true}) {
    for (const QuantType type : {QuantType::kTQ2_0, QuantType::kTernary1_6}) {
      SyntheticDecoderShape shape = gpt2 ? testutil::Gpt2FeatureShape() : SyntheticDecoderShape{};
      shape.hidden = 256;
      shape.heads = 4;
      shape.kv_heads = gpt2 ? 4 : 2;
      shape.head_dim = 64;
      shape.intermediate = 512;
      shape.max_positions = 640;
      shape.linear_type = type;
      shape.granularity = type == QuantType::kTQ2_0 ? Granularity::kTensor : Granularity::kChannel;
      ExpectSameOnOneAndThreeThreads(shape, Tokens(603, 7, shape.vocab), 600,
                                     std::string(gpt2 ? "gpt2 " : "llama ") + std::string(TypeName(type)));
    }
  }
}

// The cache holds exactly what a prompt computed: a prompt run in three pieces gives the logits of its last
// positions that running it whole gives, within the int8 activations' rounding (pieces of other lengths quantize
// the same rows, so in practice exactly).
TEST(CpuDecoder, PromptInPiecesIsThePromptAtOnce) {
  SyntheticDecoderShape shape;
  shape.qkv_bias = true;
  std::deque<PackedWeights> storage;
  const DecoderSpec spec = SyntheticDecoder(shape, storage);
  auto whole = MakeDecoderRunner(Device::kCpu, spec, 24);
  auto pieces = MakeDecoderRunner(Device::kCpu, spec, 24);
  std::vector<int64_t> ids(20);
  for (size_t i = 0; i < ids.size(); ++i) ids[i] = static_cast<int64_t>((i * 29 + 3) % shape.vocab);
  std::vector<float> all, part;
  whole->Forward(ids.data(), 20, true, all);
  pieces->Forward(ids.data(), 7, false, part);
  pieces->Forward(ids.data() + 7, 9, false, part);
  pieces->Forward(ids.data() + 16, 4, true, part);
  const std::vector<float> last(all.end() - 4 * shape.vocab, all.end());
  testutil::ExpectLogitsClose(last, part, shape.vocab, "the last 4 positions");
}

TEST(CpuDecoder, BadCallsLeaveTheCacheAsItWas) {
  SyntheticDecoderShape shape;
  std::deque<PackedWeights> storage;
  const DecoderSpec spec = SyntheticDecoder(shape, storage);
  auto decoder = MakeDecoderRunner(Device::kCpu, spec, 4);
  EXPECT_NE(decoder->description().find("cpu"), std::string::npos);
  std::vector<float> logits;
  const int64_t outside = shape.vocab;
  EXPECT_THROW(decoder->Forward(&outside, 1, false, logits), Error);
  const std::vector<int64_t> five = {1, 2, 3, 4, 5};
  EXPECT_THROW(decoder->Forward(five.data(), 5, false, logits), Error);
  EXPECT_EQ(decoder->length(), 0);
  decoder->Forward(five.data(), 4, false, logits);
  EXPECT_EQ(decoder->length(), 4);
  EXPECT_EQ(logits.size(), static_cast<size_t>(shape.vocab));
  EXPECT_THROW(MakeCpuDecoder(spec, 0), Error);
}

}  // namespace
}  // namespace atq
