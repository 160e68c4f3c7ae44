// Random decoders for tests and benchmarks.
#include "bench/synthetic_decoder.h"

#include <algorithm>
#include <cmath>
#include <random>
#include <thread>
#include <vector>

namespace atq {
namespace {

class Weights {
 public:
  Weights(const SyntheticDecoderShape& shape, std::deque<PackedWeights>& storage)
      : shape_(shape), storage_(storage), rng_(shape.seed) {}

  // A [rows, cols] matrix of normal(0, gain / sqrt(cols)) values in `type`.
  // Drawn on every core in blocks of rows, each block from its own engine seeded from this one (a large model's
  // tens of millions of normal draws take seconds on one core).
  const PackedWeights* Matrix(int64_t rows, int64_t cols, QuantType type, double gain = 1.0) {
    const float spread = static_cast<float>(gain / std::sqrt(static_cast<double>(cols)));
    std::vector<float> values(static_cast<size_t>(rows * cols));
    const int64_t workers = std::max<int64_t>(1, std::min<int64_t>(std::thread::hardware_concurrency(), rows / 64));
    const int64_t block = (rows + workers - 1) / workers;
    std::vector<std::thread> threads;
    for (int64_t first = 0; first < rows; first += block) {
      threads.emplace_back([&values, first, cols, spread, seed = rng_(), last = std::min(rows, first + block)] {
        std::mt19937_64 engine(seed);
        std::normal_distribution<float> normal(0.0f, spread);
        for (int64_t i = first * cols; i < last * cols; ++i) values[static_cast<size_t>(i)] = normal(engine);
      });
    }
    for (std::thread& thread : threads) thread.join();
    PackedWeights& packed = storage_.emplace_back();
    const bool own_format = Traits(type).family != TypeFamily::kGgmlBlock;
    packed.layout = {type, rows, cols, own_format ? shape_.granularity : Granularity::kTensor,
                     own_format ? shape_.group_size : 0};
    packed.bytes = Quantize(packed.layout, values.data());
    return &packed;
  }

  std::vector<float> Vector(int64_t size, float mean, float spread) {
    std::normal_distribution<float> normal(mean, spread);
    std::vector<float> values(static_cast<size_t>(size));
    for (float& value : values) value = normal(rng_);
    return values;
  }

 private:
  const SyntheticDecoderShape& shape_;
  std::deque<PackedWeights>& storage_;
  std::mt19937_64 rng_;
};

}  // namespace

DecoderSpec SyntheticDecoder(const SyntheticDecoderShape& shape, std::deque<PackedWeights>& storage) {
  Weights random(shape, storage);
  DecoderSpec s;
  s.hidden = shape.hidden;
  s.heads = shape.heads;
  s.kv_heads = shape.kv_heads;
  s.head_dim = shape.head_dim;
  s.intermediate = shape.intermediate;
  s.vocab = shape.vocab;
  s.max_positions = shape.max_positions;
  s.norm_eps = 1e-6f;
  s.activation = shape.gemma || shape.gpt2 ? DecoderActivation::kGeluTanh : DecoderActivation::kSilu;
  s.norm = shape.gpt2 ? DecoderNormKind::kLayer : DecoderNormKind::kRms;
  s.sandwich_norms = shape.gemma2;
  s.attention_scale = 1.0f / std::sqrt(static_cast<float>(shape.head_dim));
  s.attention_softcap = shape.gemma2 ? 5.0f : 0.0f;  // low enough to bend these random scores
  s.final_softcap = shape.gemma2 ? 3.0f : 0.0f;
  s.embedding_scale = shape.gemma ? std::sqrt(static_cast<float>(shape.hidden)) : 0.0f;
  for (int64_t i = 0; !shape.gpt2 && i < shape.head_dim / 2; ++i) {
    s.inv_freq.push_back(static_cast<float>(1.0 / std::pow(10000.0, 2.0 * static_cast<double>(i) /
                                                                     static_cast<double>(shape.head_dim))));
  }
  s.rope_position_divisor = shape.rope_position_divisor;
  if (shape.gpt2) s.position_embedding = random.Vector(shape.max_positions * shape.hidden, 0.0f, 0.3f);
  // Gemma's embedding is scaled up by sqrt(hidden) afterwards; the others' rows are about unit length.
  const double embedding_gain = shape.gemma ? 1.0 / std::sqrt(static_cast<double>(shape.hidden)) : 1.0;
  s.embedding = random.Matrix(shape.vocab, shape.hidden, shape.embedding_type, embedding_gain);
  s.head = shape.tied_head ? s.embedding : random.Matrix(shape.vocab, shape.hidden, shape.linear_type);
  const int64_t q_width = shape.heads * shape.head_dim, kv_width = shape.kv_heads * shape.head_dim;
  const float norm_mean = shape.gemma ? 0.0f : 1.0f;  // Gemma stores w and scales by 1 + w; the spec holds 1 + w
  const auto norm = [&] {
    DecoderNorm values{random.Vector(shape.hidden, norm_mean, 0.1f), {}};
    if (shape.gemma) {
      for (float& value : values.scale) value += 1.0f;
    }
    if (shape.gpt2) values.bias = random.Vector(shape.hidden, 0.0f, 0.1f);
    return values;
  };
  for (int64_t layer = 0; layer < shape.layers; ++layer) {
    DecoderLayer l;
    if (layer == 0 || shape.distinct_layers) {
      l.input_norm = norm();
      l.post_attention_norm = norm();
      if (shape.gemma2) {
        l.pre_feedforward_norm = norm();
        l.post_feedforward_norm = norm();
      }
      // q and k a little larger, so that attention is not uniform
      if (shape.gpt2) {
        l.qkv = {random.Matrix(q_width + 2 * kv_width, shape.hidden, shape.linear_type, 2.0),
                 random.Vector(q_width + 2 * kv_width, 0.0f, 0.1f)};
      } else {
        l.q = {random.Matrix(q_width, shape.hidden, shape.linear_type, 2.0), {}};
        l.k = {random.Matrix(kv_width, shape.hidden, shape.linear_type, 2.0), {}};
        l.v = {random.Matrix(kv_width, shape.hidden, shape.linear_type), {}};
        l.gate = {random.Matrix(shape.intermediate, shape.hidden, shape.linear_type), {}};
      }
      l.o = {random.Matrix(shape.hidden, q_width, shape.linear_type, 0.5), {}};
      l.up = {random.Matrix(shape.intermediate, shape.hidden, shape.linear_type), {}};
      l.down = {random.Matrix(shape.hidden, shape.intermediate, shape.linear_type, 0.5), {}};
      if (shape.gpt2) {
        l.o.bias = random.Vector(shape.hidden, 0.0f, 0.1f);
        l.up.bias = random.Vector(shape.intermediate, 0.0f, 0.1f);
        l.down.bias = random.Vector(shape.hidden, 0.0f, 0.1f);
      }
      if (shape.qkv_bias) {
        l.q.bias = random.Vector(q_width, 0.0f, 0.1f);
        l.k.bias = random.Vector(kv_width, 0.0f, 0.1f);
        l.v.bias = random.Vector(kv_width, 0.0f, 0.1f);
      }
    } else {
      l = s.layers.front();
    }
    l.window = shape.gemma2 ? (layer % 2 == 0 ? shape.window : 0) : shape.window;
    if (shape.gpt2) l.attention_scale = s.attention_scale / static_cast<float>(layer + 1);
    s.layers.push_back(std::move(l));
  }
  s.final_norm = norm();
  CheckDecoderSpec(s);
  return s;
}

SyntheticDecoderShape TinyLlamaShape(QuantType type) {
  SyntheticDecoderShape shape;
  shape.layers = 22;
  shape.hidden = 2048;
  shape.heads = 32;
  shape.kv_heads = 4;
  shape.head_dim = 64;
  shape.intermediate = 5632;
  shape.vocab = 32000;
  shape.max_positions = 2048;
  shape.linear_type = type;
  shape.embedding_type = QuantType::kQ8_0;
  shape.tied_head = false;
  shape.distinct_layers = false;
  return shape;
}

}  // namespace atq
