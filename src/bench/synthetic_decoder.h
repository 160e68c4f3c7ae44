// Decoders with random weights of a given shape and features, packed in a given format: the GPU decoder's tests
// compare backends on them, and its benchmark runs a model of a real model's dimensions (tinyllama-1.1b) without a
// checkpoint on the GPU machine. The weights follow a trained model's scales loosely (each linear's outputs about
// as large as its inputs, norms near 1, an embedding of unit rows), enough to keep activations and softmax in
// their normal range; their values carry no meaning.
#pragma once

#include <cstdint>
#include <deque>
#include <string>

#include "formats/quant_type.h"
#include "kernels/decoder.h"

namespace atq {

struct SyntheticDecoderShape {
  int64_t layers = 2, hidden = 64, heads = 4, kv_heads = 2, head_dim = 16, intermediate = 160, vocab = 96;
  int64_t max_positions = 256;
  QuantType linear_type = QuantType::kTernary2;
  Granularity granularity = Granularity::kChannel;  // atq's own formats
  int64_t group_size = 0;
  QuantType embedding_type = QuantType::kQ8_0;
  bool tied_head = true;
  // Features of the families: Qwen2's q/k/v biases; Gemma's GELU, embedding scale and 1 + w norms; Gemma 2's
  // sandwich norms, soft-capping and sliding windows on even layers; Llama 3's scaled frequencies; GPT-2's
  // LayerNorms with biases, learned positions, fused qkv with biases, ungated GELU MLP with biases and scores
  // scaled by the inverse layer number.
  bool qkv_bias = false;
  bool gemma = false;
  bool gemma2 = false;
  bool gpt2 = false;
  int64_t window = 0;
  float rope_position_divisor = 1;
  // Every layer its own random weights (tests), or the layers sharing one set of host bytes (a benchmark of a
  // large model: the backend still copies each layer to its own memory).
  bool distinct_layers = true;
  uint64_t seed = 1;
};

// The spec points into `storage`, which must outlive it (a deque: pointers stay valid as it grows).
DecoderSpec SyntheticDecoder(const SyntheticDecoderShape& shape, std::deque<PackedWeights>& storage);

// tinyllama-1.1b's dimensions (22 layers, 2048 wide, 32 heads of 64 with 4 KV heads, 5632 intermediate, 32000
// tokens, 2048 positions, an untied head), in `type`.
SyntheticDecoderShape TinyLlamaShape(QuantType type);

}  // namespace atq
