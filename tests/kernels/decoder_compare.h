// A decoder backend against the scalar reference decoder (kernels/decoder.h) on the same packed weights: prefill
// logits of every position, then token-by-token decode through the key/value cache, then a reset, over synthetic
// decoders with the features of each family. Shared by the CPU and the GPU decoders' tests.
#pragma once

#include <algorithm>
#include <cmath>
#include <deque>
#include <functional>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include <gtest/gtest.h>

#include "bench/synthetic_decoder.h"
#include "kernels/decoder.h"

namespace atq::testutil {

using DecoderFactory = std::function<std::unique_ptr<DecoderRunner>(const DecoderSpec& spec, int64_t capacity)>;

// Both decoders quantize activations to int8 per segment, and float sums in another order differ in their last
// bits, so logits agree to a share of their range, not to float rounding: the reference decoder against itself
// with its RMSNorm's sum taken in vector lanes instead of in sequence (a 1-ulp change of each normalized row) moves
// the q8_0 decoder's logits by 2.3% of the largest (measured). 5% of the largest logit, with the same top token
// for nearly every position, still catches any wrong kernel: a wrong position, head, mask or norm moves logits by
// their whole range.
inline void ExpectLogitsClose(const std::vector<float>& expected, const std::vector<float>& actual, int64_t vocab,
                              const std::string& what) {
  ASSERT_EQ(expected.size(), actual.size()) << what;
  float largest = 0, worst = 0;
  for (size_t i = 0; i < expected.size(); ++i) {
    largest = std::max(largest, std::fabs(expected[i]));
    worst = std::max(worst, std::fabs(expected[i] - actual[i]));
  }
  EXPECT_LE(worst, 0.05f * largest + 1e-4f) << what << ": largest logit " << largest;
  const size_t rows = expected.size() / static_cast<size_t>(vocab);
  size_t same = 0;
  for (size_t r = 0; r < rows; ++r) {
    const auto row = [&](const std::vector<float>& v) { return v.begin() + static_cast<std::ptrdiff_t>(r * vocab); };
    same += std::max_element(row(expected), row(expected) + vocab) - row(expected) ==
            std::max_element(row(actual), row(actual) + vocab) - row(actual);
  }
  EXPECT_GE(same * 10, rows * 9) << what << ": top tokens agree on " << same << " of " << rows << " positions";
}

// A prompt of 13 tokens with every position's logits, then 6 tokens one at a time, then the prompt again after a
// reset, on the backend `make` builds and on the reference.
inline void CompareWithReference(const SyntheticDecoderShape& shape, const std::string& name,
                                 const DecoderFactory& make) {
  std::deque<PackedWeights> storage;
  const DecoderSpec spec = SyntheticDecoder(shape, storage);
  const int64_t capacity = 40;
  auto reference = MakeReferenceDecoder(spec, capacity);
  auto backend = make(spec, capacity);
  std::vector<int64_t> ids(19);
  for (size_t i = 0; i < ids.size(); ++i) ids[i] = static_cast<int64_t>((i * 37 + 5) % shape.vocab);
  std::vector<float> expected, actual;
  reference->Forward(ids.data(), 13, true, expected);
  backend->Forward(ids.data(), 13, true, actual);
  ExpectLogitsClose(expected, actual, shape.vocab, name + " prefill");
  for (size_t t = 13; t < ids.size(); ++t) {
    reference->Forward(&ids[t], 1, false, expected);
    backend->Forward(&ids[t], 1, false, actual);
    ExpectLogitsClose(expected, actual, shape.vocab, name + " decode at " + std::to_string(t));
  }
  EXPECT_EQ(backend->length(), 19);
  backend->Reset();
  std::vector<float> again;
  backend->Forward(ids.data(), 13, true, again);
  reference->Reset();
  reference->Forward(ids.data(), 13, true, expected);
  ExpectLogitsClose(expected, again, shape.vocab, name + " after reset");
}

// The synthetic decoders every backend is compared on: grouped-query t2; each format (multi-query, 256 wide for
// TQ2_0/TQ1_0's blocks); Qwen2's biases with linear RoPE; Gemma 2's sandwich norms, soft-capping and short
// windows; Gemma's head_dim of 256.
inline std::vector<std::pair<std::string, SyntheticDecoderShape>> DecoderFeatureShapes() {
  std::vector<std::pair<std::string, SyntheticDecoderShape>> shapes;
  shapes.emplace_back("llama t2", SyntheticDecoderShape{});
  for (const QuantType type : {QuantType::kQ8_0, QuantType::kQ4_0, QuantType::kTQ2_0, QuantType::kTQ1_0,
                               QuantType::kUniform4Sym, QuantType::kUniform4Asym}) {
    SyntheticDecoderShape shape;
    shape.hidden = 256;
    shape.heads = 4;
    shape.kv_heads = 1;
    shape.head_dim = 64;
    shape.intermediate = 512;
    shape.linear_type = type;
    shape.embedding_type = type;
    shape.tied_head = type != QuantType::kQ8_0;
    if (Traits(type).family != TypeFamily::kGgmlBlock) {
      shape.granularity = Granularity::kGroup;
      shape.group_size = 64;
    }
    shapes.emplace_back(std::string(TypeName(type)), shape);
  }
  SyntheticDecoderShape qwen2;
  qwen2.qkv_bias = true;
  qwen2.rope_position_divisor = 4;
  qwen2.head_dim = 32;
  shapes.emplace_back("qwen2", qwen2);
  SyntheticDecoderShape gemma2;
  gemma2.gemma = true;
  gemma2.gemma2 = true;
  gemma2.window = 5;  // shorter than the prompt: the even layers' masks matter
  gemma2.layers = 3;
  gemma2.head_dim = 128;
  gemma2.hidden = 128;
  shapes.emplace_back("gemma2", gemma2);
  SyntheticDecoderShape wide_heads;
  wide_heads.gemma = true;
  wide_heads.head_dim = 256;
  wide_heads.heads = 2;
  wide_heads.kv_heads = 2;
  shapes.emplace_back("gemma head_dim 256", wide_heads);
  return shapes;
}

// GPT-2's parts (LayerNorm, learned positions, fused qkv, ungated MLP, biases everywhere, per-layer score scales),
// which the CPU backends run and the CUDA decoder refuses.
inline SyntheticDecoderShape Gpt2FeatureShape() {
  SyntheticDecoderShape gpt2;
  gpt2.gpt2 = true;
  gpt2.layers = 3;
  gpt2.kv_heads = gpt2.heads;
  gpt2.linear_type = QuantType::kQ8_0;
  return gpt2;
}

}  // namespace atq::testutil
