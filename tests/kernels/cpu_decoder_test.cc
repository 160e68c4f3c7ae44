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

// Threads split output rows and attention heads, never a sum, so the logits are the same bit for bit.
TEST(CpuDecoder, ThreadsDoNotChangeTheResult) {
  SyntheticDecoderShape shape;
  shape.gemma = true;
  shape.gemma2 = true;
  shape.window = 4;
  std::deque<PackedWeights> storage;
  const DecoderSpec spec = SyntheticDecoder(shape, storage);
  ThreadPool one(1), three(3);
  auto single = MakeCpuDecoder(spec, 32, one);
  auto several = MakeCpuDecoder(spec, 32, three);
  std::vector<int64_t> ids(17);
  for (size_t i = 0; i < ids.size(); ++i) ids[i] = static_cast<int64_t>((i * 13 + 1) % shape.vocab);
  std::vector<float> a, b;
  single->Forward(ids.data(), 12, true, a);
  several->Forward(ids.data(), 12, true, b);
  EXPECT_EQ(a, b);
  for (size_t t = 12; t < ids.size(); ++t) {
    single->Forward(&ids[t], 1, false, a);
    several->Forward(&ids[t], 1, false, b);
    EXPECT_EQ(a, b) << t;
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
