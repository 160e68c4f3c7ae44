// The scalar reference decoder (kernels/decoder.h) on known properties: a prompt run at once gives every position
// the logits that running it token by token through the key/value cache gives (the model is causal and the cache
// holds exactly what the prompt computed); a reset starts over; a sliding window longer than the context changes
// nothing and a short one does; bad specs and bad calls are errors naming the problem. The CPU and GPU decoders
// are checked against it (tests/kernels/cpu_decoder_test.cc, tests/kernels/cuda/cuda_decoder_test.cc), and the CPU
// decoder against the libtorch model on the fixtures (tests/runtime/device_model_test.cc).
#include <algorithm>
#include <cmath>
#include <deque>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "bench/synthetic_decoder.h"
#include "kernels/decoder.h"
#include "util/error.h"

namespace atq {
namespace {

std::vector<int64_t> Tokens(int64_t count, int64_t vocab) {
  std::vector<int64_t> ids(static_cast<size_t>(count));
  for (size_t i = 0; i < ids.size(); ++i) ids[i] = static_cast<int64_t>((i * 31 + 7) % vocab);
  return ids;
}

float MaxDifference(const std::vector<float>& a, const std::vector<float>& b) {
  float worst = 0;
  for (size_t i = 0; i < a.size(); ++i) worst = std::max(worst, std::fabs(a[i] - b[i]));
  return worst;
}

void ExpectPrefillMatchesDecode(const SyntheticDecoderShape& shape) {
  std::deque<PackedWeights> storage;
  const DecoderSpec spec = SyntheticDecoder(shape, storage);
  const std::vector<int64_t> ids = Tokens(11, shape.vocab);
  auto decoder = MakeReferenceDecoder(spec, 16);
  std::vector<float> all, one;
  decoder->Forward(ids.data(), 11, true, all);
  ASSERT_EQ(all.size(), static_cast<size_t>(11 * shape.vocab));
  EXPECT_EQ(decoder->length(), 11);
  decoder->Reset();
  for (int64_t t = 0; t < 11; ++t) {
    decoder->Forward(&ids[static_cast<size_t>(t)], 1, false, one);
    const std::vector<float> row(all.begin() + t * shape.vocab, all.begin() + (t + 1) * shape.vocab);
    // each position's activations are quantized alone in both runs, so the sums are the same ones
    EXPECT_LE(MaxDifference(row, one), 1e-5f) << "position " << t;
  }
}

TEST(DecoderReference, PrefillEqualsTokenByToken) {
  ExpectPrefillMatchesDecode({});
  SyntheticDecoderShape gemma2;
  gemma2.gemma = gemma2.gemma2 = true;
  gemma2.window = 4;
  gemma2.qkv_bias = true;
  ExpectPrefillMatchesDecode(gemma2);
}

TEST(DecoderReference, WindowMattersOnlyWhenShorterThanTheContext) {
  SyntheticDecoderShape shape;
  std::deque<PackedWeights> storage;
  const std::vector<int64_t> ids = Tokens(12, shape.vocab);
  std::vector<float> full, long_window, short_window;
  MakeReferenceDecoder(SyntheticDecoder(shape, storage), 12)->Forward(ids.data(), 12, true, full);
  shape.window = 12;
  MakeReferenceDecoder(SyntheticDecoder(shape, storage), 12)->Forward(ids.data(), 12, true, long_window);
  shape.window = 3;
  MakeReferenceDecoder(SyntheticDecoder(shape, storage), 12)->Forward(ids.data(), 12, true, short_window);
  EXPECT_EQ(MaxDifference(full, long_window), 0.0f);
  // the first three positions see all their keys either way; later ones lose some
  const size_t vocab = static_cast<size_t>(shape.vocab);
  EXPECT_EQ(MaxDifference({full.begin(), full.begin() + 3 * vocab}, {short_window.begin(), short_window.begin() + 3 * vocab}), 0.0f);
  EXPECT_GT(MaxDifference(full, short_window), 1e-3f);
}

TEST(DecoderReference, BadCallsAreErrors) {
  SyntheticDecoderShape shape;
  std::deque<PackedWeights> storage;
  auto decoder = MakeReferenceDecoder(SyntheticDecoder(shape, storage), 3);
  std::vector<float> logits;
  const std::vector<int64_t> ids = {1, 2, 3, 4};
  EXPECT_THROW(decoder->Forward(ids.data(), 4, false, logits), Error);  // past the capacity
  const int64_t outside = -1;
  EXPECT_THROW(decoder->Forward(&outside, 1, false, logits), Error);
  EXPECT_EQ(decoder->length(), 0);
}

TEST(DecoderReference, BadSpecsNameTheProblem) {
  SyntheticDecoderShape shape;
  std::deque<PackedWeights> storage;
  const DecoderSpec good = SyntheticDecoder(shape, storage);
  const auto message = [](const DecoderSpec& spec) {
    try {
      CheckDecoderSpec(spec);
    } catch (const Error& error) {
      return std::string(error.what());
    }
    return std::string("no error");
  };
  DecoderSpec spec = good;
  spec.layers[1].q.weights = good.layers[1].k.weights;
  EXPECT_NE(message(spec).find("layer 1 q is 32x64, not 64x64"), std::string::npos) << message(spec);
  spec = good;
  spec.heads = 3;
  EXPECT_NE(message(spec).find("not a multiple"), std::string::npos) << message(spec);
  spec = good;
  spec.layers[0].input_norm.scale.pop_back();
  EXPECT_NE(message(spec).find("layer 0 input norm has 63 values"), std::string::npos) << message(spec);
  spec = good;
  spec.inv_freq.pop_back();
  EXPECT_NE(message(spec).find("rotary frequencies"), std::string::npos) << message(spec);
  spec.inv_freq.clear();
  EXPECT_NE(message(spec).find("neither rotary nor learned positions"), std::string::npos) << message(spec);
  spec = good;
  spec.layers[0].input_norm.bias.assign(64, 0.0f);
  EXPECT_NE(message(spec).find("which RMSNorm has not"), std::string::npos) << message(spec);
  spec = good;
  spec.layers[1].qkv = spec.layers[1].q;
  EXPECT_NE(message(spec).find("both a fused qkv and separate"), std::string::npos) << message(spec);
}

// GPT-2's learned positions end at max_positions: a call past them is an error naming the limit, not a read past
// the table.
TEST(DecoderReference, LearnedPositionsEndAtTheirTable) {
  SyntheticDecoderShape shape;
  shape.gpt2 = true;
  shape.max_positions = 6;
  std::deque<PackedWeights> storage;
  auto decoder = MakeReferenceDecoder(SyntheticDecoder(shape, storage), 10);
  std::vector<float> logits;
  const std::vector<int64_t> ids = Tokens(7, shape.vocab);
  decoder->Forward(ids.data(), 6, false, logits);
  try {
    decoder->Forward(ids.data() + 6, 1, false, logits);
    ADD_FAILURE() << "a seventh position accepted";
  } catch (const Error& error) {
    EXPECT_NE(std::string(error.what()).find("6 learned positions"), std::string::npos) << error.what();
  }
  EXPECT_EQ(decoder->length(), 6);
}

}  // namespace
}  // namespace atq
