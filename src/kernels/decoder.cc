// The decoder description's checks, its scalar reference backend and the choice of backend.
#include "kernels/decoder.h"

#include <algorithm>
#include <cmath>
#include <limits>

#include <fmt/format.h>

#include "kernels/matmul.h"
#include "util/error.h"

#ifndef ATQ_SCALAR_CPU
#include "kernels/cpu_decoder.h"
#endif
#ifdef ATQ_WITH_CUDA
#include "kernels/cuda/cuda_decoder.h"
#endif

namespace atq {
namespace {

void CheckVector(const std::vector<float>& values, int64_t size, const std::string& what) {
  Require(static_cast<int64_t>(values.size()) == size, "decoder: {} has {} values, not {}", what, values.size(), size);
}

void CheckLinear(const DecoderLinear& linear, int64_t out, int64_t in, const std::string& what) {
  Require(linear.weights != nullptr, "decoder: {} has no weights", what);
  const Layout& layout = linear.weights->layout;
  Require(layout.rows == out && layout.cols == in, "decoder: {} is {}x{}, not {}x{}", what, layout.rows, layout.cols,
          out, in);
  Require(linear.weights->boosted_index.empty(),
          "decoder: {} keeps residual-precision weights (RPB), which the decoder backends do not add", what);
  if (!linear.bias.empty()) CheckVector(linear.bias, out, what + " bias");
}

void CheckNorm(const DecoderSpec& s, const DecoderNorm& norm, const std::string& what) {
  CheckVector(norm.scale, s.hidden, what);
  if (s.norm == DecoderNormKind::kRms) {
    Require(norm.bias.empty(), "decoder: {} has a bias, which RMSNorm has not", what);
  } else if (!norm.bias.empty()) {
    CheckVector(norm.bias, s.hidden, what + " bias");
  }
}

}  // namespace

void CheckDecoderSpec(const DecoderSpec& s) {
  Require(s.hidden > 0 && s.heads > 0 && s.kv_heads > 0 && s.head_dim > 0 && s.intermediate > 0 && s.vocab > 0,
          "decoder: sizes must be positive (hidden {}, heads {}, kv heads {}, head dim {}, intermediate {}, vocab {})",
          s.hidden, s.heads, s.kv_heads, s.head_dim, s.intermediate, s.vocab);
  Require(s.heads % s.kv_heads == 0, "decoder: {} heads are not a multiple of {} KV heads", s.heads, s.kv_heads);
  Require(s.head_dim <= 256, "decoder: head dim {} is over 256", s.head_dim);
  const bool rotary = !s.inv_freq.empty();
  Require(rotary || !s.position_embedding.empty(), "decoder: neither rotary nor learned positions");
  if (rotary) {
    Require(s.head_dim % 2 == 0, "decoder: rotary head dim {} is odd", s.head_dim);
    CheckVector(s.inv_freq, s.head_dim / 2, "the rotary frequencies");
  }
  if (!s.position_embedding.empty()) {
    Require(s.max_positions > 0, "decoder: learned positions need the number of positions");
    CheckVector(s.position_embedding, s.max_positions * s.hidden, "the position embedding");
  }
  CheckNorm(s, s.final_norm, "the final norm");
  Require(s.embedding != nullptr && s.head != nullptr, "decoder: the token embedding or the head is missing");
  Require(s.embedding->layout.rows == s.vocab && s.embedding->layout.cols == s.hidden,
          "decoder: the token embedding is {}x{}, not {}x{}", s.embedding->layout.rows, s.embedding->layout.cols,
          s.vocab, s.hidden);
  CheckLinear({s.head, {}}, s.vocab, s.hidden, "the head");
  Require(!s.layers.empty(), "decoder: no layers");
  const int64_t q_width = s.heads * s.head_dim, kv_width = s.kv_heads * s.head_dim;
  for (size_t i = 0; i < s.layers.size(); ++i) {
    const DecoderLayer& l = s.layers[i];
    const std::string name = fmt::format("layer {}", i);
    CheckNorm(s, l.input_norm, name + " input norm");
    CheckNorm(s, l.post_attention_norm, name + " post-attention norm");
    if (s.sandwich_norms) {
      CheckNorm(s, l.pre_feedforward_norm, name + " pre-feedforward norm");
      CheckNorm(s, l.post_feedforward_norm, name + " post-feedforward norm");
    }
    if (l.qkv.weights != nullptr) {
      Require(l.q.weights == nullptr && l.k.weights == nullptr && l.v.weights == nullptr,
              "decoder: {} has both a fused qkv and separate q, k, v", name);
      CheckLinear(l.qkv, q_width + 2 * kv_width, s.hidden, name + " qkv");
    } else {
      CheckLinear(l.q, q_width, s.hidden, name + " q");
      CheckLinear(l.k, kv_width, s.hidden, name + " k");
      CheckLinear(l.v, kv_width, s.hidden, name + " v");
    }
    CheckLinear(l.o, s.hidden, q_width, name + " o");
    if (l.gate.weights != nullptr) CheckLinear(l.gate, s.intermediate, s.hidden, name + " gate");
    CheckLinear(l.up, s.intermediate, s.hidden, name + " up");
    CheckLinear(l.down, s.hidden, s.intermediate, name + " down");
    Require(l.window >= 0, "decoder: {} has a negative window", name);
    Require(std::isfinite(l.attention_scale) && l.attention_scale >= 0, "decoder: {} has a score scale of {}", name,
            l.attention_scale);
  }
}

bool UsesGpt2Parts(const DecoderSpec& s) {
  if (s.norm != DecoderNormKind::kRms || !s.position_embedding.empty() || s.inv_freq.empty()) return true;
  return std::any_of(s.layers.begin(), s.layers.end(), [](const DecoderLayer& l) {
    return l.qkv.weights != nullptr || l.gate.weights == nullptr || l.attention_scale != 0;
  });
}

void CheckDecoderCall(const DecoderSpec& spec, const int64_t* ids, int64_t n, int64_t length, int64_t capacity) {
  Require(n > 0, "decoder: no tokens to run");
  Require(length + n <= capacity, "decoder: {} cached positions and {} new ones exceed the capacity of {}", length, n,
          capacity);
  Require(spec.position_embedding.empty() || length + n <= spec.max_positions,
          "the model has {} learned positions; positions {}..{} do not exist (use a shorter context)",
          spec.max_positions, length, length + n - 1);
  for (int64_t t = 0; t < n; ++t) {
    Require(ids[t] >= 0 && ids[t] < spec.vocab, "token id {} is outside the vocabulary of {}", ids[t], spec.vocab);
  }
}

void EmbedTokens(const DecoderSpec& spec, const int64_t* ids, int64_t n, int64_t first, float* x) {
  for (int64_t t = 0; t < n; ++t) {
    float* row = x + t * spec.hidden;
    DequantizeRow(spec.embedding->view(), ids[t], row);
    if (spec.embedding_scale != 0) {
      for (int64_t c = 0; c < spec.hidden; ++c) row[c] *= spec.embedding_scale;
    }
    if (!spec.position_embedding.empty()) {
      const float* position = spec.position_embedding.data() + (first + t) * spec.hidden;
      for (int64_t c = 0; c < spec.hidden; ++c) row[c] += position[c];
    }
  }
}

void SplitFusedQkv(const DecoderSpec& spec, const float* qkv, int64_t n, float* q, float* k, float* v) {
  const int64_t q_width = spec.heads * spec.head_dim, kv_width = spec.kv_heads * spec.head_dim;
  const int64_t fused = q_width + 2 * kv_width;
  for (int64_t t = 0; t < n; ++t) {
    std::copy_n(qkv + t * fused, q_width, q + t * q_width);
    std::copy_n(qkv + t * fused + q_width, kv_width, k + t * kv_width);
    std::copy_n(qkv + t * fused + q_width + kv_width, kv_width, v + t * kv_width);
  }
}

float LayerScoreScale(const DecoderSpec& spec, size_t layer) {
  const float own = spec.layers[layer].attention_scale;
  return own > 0 ? own : spec.attention_scale;
}

namespace {

// Row by row, RMSNorm: y = x * rsqrt(mean(x^2) + eps) * scale; LayerNorm: y = (x - mean(x)) * rsqrt(var(x) + eps)
// * scale + bias, with the biased variance (torch's layer_norm).
void Norm(const float* x, const DecoderNorm& norm, const DecoderSpec& s, int64_t rows, float* y) {
  const int64_t cols = s.hidden;
  for (int64_t r = 0; r < rows; ++r) {
    const float* in = x + r * cols;
    float mean = 0;
    if (s.norm == DecoderNormKind::kLayer) {
      for (int64_t c = 0; c < cols; ++c) mean += in[c];
      mean /= static_cast<float>(cols);
    }
    float sum = 0;
    for (int64_t c = 0; c < cols; ++c) sum += (in[c] - mean) * (in[c] - mean);
    const float inverse = 1.0f / std::sqrt(sum / static_cast<float>(cols) + s.norm_eps);
    for (int64_t c = 0; c < cols; ++c) {
      const float bias = norm.bias.empty() ? 0.0f : norm.bias[static_cast<size_t>(c)];
      y[r * cols + c] = (in[c] - mean) * inverse * norm.scale[static_cast<size_t>(c)] + bias;
    }
  }
}

void Linear(const DecoderLinear& linear, const float* x, int64_t n, std::vector<float>& y) {
  const int64_t out = linear.weights->layout.rows;
  y.resize(static_cast<size_t>(n * out));
  MatMulReference(linear.weights->view(), x, n, y.data());
  if (linear.bias.empty()) return;
  for (int64_t r = 0; r < n; ++r) {
    for (int64_t c = 0; c < out; ++c) y[static_cast<size_t>(r * out + c)] += linear.bias[static_cast<size_t>(c)];
  }
}

void Rotary(std::vector<float>& x, int64_t n, int64_t heads, const DecoderSpec& s, int64_t first_position) {
  const int64_t half = s.head_dim / 2;
  for (int64_t t = 0; t < n; ++t) {
    const float position = static_cast<float>(first_position + t) / s.rope_position_divisor;
    for (int64_t h = 0; h < heads; ++h) {
      float* head = x.data() + (t * heads + h) * s.head_dim;
      for (int64_t i = 0; i < half; ++i) {
        const float angle = position * s.inv_freq[static_cast<size_t>(i)];
        const float c = std::cos(angle), sn = std::sin(angle), x1 = head[i], x2 = head[i + half];
        head[i] = x1 * c + (-x2) * sn;
        head[i + half] = x2 * c + x1 * sn;
      }
    }
  }
}

class ReferenceDecoder final : public DecoderRunner {
 public:
  ReferenceDecoder(const DecoderSpec& spec, int64_t capacity) : s_(spec), capacity_(capacity) {
    CheckDecoderSpec(s_);
    Require(capacity > 0, "decoder: a capacity of {} positions", capacity);
    const size_t per_layer = static_cast<size_t>(s_.kv_heads * capacity * s_.head_dim);
    keys_.assign(s_.layers.size(), std::vector<float>(per_layer));
    values_.assign(s_.layers.size(), std::vector<float>(per_layer));
  }

  void Forward(const int64_t* ids, int64_t n, bool all_logits, std::vector<float>& logits) override {
    CheckDecoderCall(s_, ids, n, length_, capacity_);
    const int64_t width = s_.hidden;
    std::vector<float> x(static_cast<size_t>(n * width));
    EmbedTokens(s_, ids, n, length_, x.data());
    const int64_t q_width = s_.heads * s_.head_dim, kv_width = s_.kv_heads * s_.head_dim;
    std::vector<float> normed(x.size()), qkv, q, k, v, mixed, o, gate, up, down;
    for (size_t layer = 0; layer < s_.layers.size(); ++layer) {
      const DecoderLayer& l = s_.layers[layer];
      Norm(x.data(), l.input_norm, s_, n, normed.data());
      if (l.qkv.weights != nullptr) {
        Linear(l.qkv, normed.data(), n, qkv);
        q.resize(static_cast<size_t>(n * q_width));
        k.resize(static_cast<size_t>(n * kv_width));
        v.resize(static_cast<size_t>(n * kv_width));
        SplitFusedQkv(s_, qkv.data(), n, q.data(), k.data(), v.data());
      } else {
        Linear(l.q, normed.data(), n, q);
        Linear(l.k, normed.data(), n, k);
        Linear(l.v, normed.data(), n, v);
      }
      if (!s_.inv_freq.empty()) {
        Rotary(q, n, s_.heads, s_, length_);
        Rotary(k, n, s_.kv_heads, s_, length_);
      }
      Store(layer, k, v, n);
      Attention(layer, q, n, mixed);
      Linear(l.o, mixed.data(), n, o);
      if (s_.sandwich_norms) Norm(o.data(), l.post_attention_norm, s_, n, o.data());
      for (size_t i = 0; i < x.size(); ++i) x[i] += o[i];
      Norm(x.data(), s_.sandwich_norms ? l.pre_feedforward_norm : l.post_attention_norm, s_, n, normed.data());
      Linear(l.up, normed.data(), n, up);
      const bool gated = l.gate.weights != nullptr;
      if (gated) Linear(l.gate, normed.data(), n, gate);
      for (size_t i = 0; i < up.size(); ++i) {
        const float g = gated ? gate[i] : up[i];
        const float activated = s_.activation == DecoderActivation::kSilu
                                    ? g / (1.0f + std::exp(-g))
                                    : 0.5f * g * (1.0f + std::tanh(0.7978845608028654f * (g + 0.044715f * g * g * g)));
        up[i] = gated ? activated * up[i] : activated;
      }
      Linear(l.down, up.data(), n, down);
      if (s_.sandwich_norms) Norm(down.data(), l.post_feedforward_norm, s_, n, down.data());
      for (size_t i = 0; i < x.size(); ++i) x[i] += down[i];
    }
    length_ += n;
    const int64_t first = all_logits ? 0 : n - 1, rows = n - first;
    Norm(x.data() + first * width, s_.final_norm, s_, rows, normed.data());
    logits.resize(static_cast<size_t>(rows * s_.vocab));
    MatMulReference(s_.head->view(), normed.data(), rows, logits.data());
    if (s_.final_softcap > 0) {
      for (float& value : logits) value = std::tanh(value / s_.final_softcap) * s_.final_softcap;
    }
  }

  void Reset() override { length_ = 0; }
  int64_t length() const override { return length_; }
  int64_t capacity() const override { return capacity_; }
  std::string description() const override { return "cpu (scalar reference)"; }

 private:
  // The cache of a layer: [kv_heads, capacity, head_dim]
  void Store(size_t layer, const std::vector<float>& k, const std::vector<float>& v, int64_t n) {
    for (int64_t t = 0; t < n; ++t) {
      for (int64_t h = 0; h < s_.kv_heads; ++h) {
        const size_t to = static_cast<size_t>((h * capacity_ + length_ + t) * s_.head_dim);
        const size_t from = static_cast<size_t>((t * s_.kv_heads + h) * s_.head_dim);
        std::copy_n(k.begin() + static_cast<std::ptrdiff_t>(from), s_.head_dim,
                    keys_[layer].begin() + static_cast<std::ptrdiff_t>(to));
        std::copy_n(v.begin() + static_cast<std::ptrdiff_t>(from), s_.head_dim,
                    values_[layer].begin() + static_cast<std::ptrdiff_t>(to));
      }
    }
  }

  void Attention(size_t layer, const std::vector<float>& q, int64_t n, std::vector<float>& out) {
    const int64_t dim = s_.head_dim, group = s_.heads / s_.kv_heads;
    const int64_t window = s_.layers[layer].window;
    const float scale = LayerScoreScale(s_, layer);
    out.assign(static_cast<size_t>(n * s_.heads * dim), 0.0f);
    std::vector<float> scores;
    for (int64_t t = 0; t < n; ++t) {
      const int64_t position = length_ + t;
      const int64_t first = window > 0 ? std::max<int64_t>(0, position - window + 1) : 0;
      for (int64_t h = 0; h < s_.heads; ++h) {
        const float* query = q.data() + (t * s_.heads + h) * dim;
        const float* keys = keys_[layer].data() + (h / group) * capacity_ * dim;
        const float* values = values_[layer].data() + (h / group) * capacity_ * dim;
        scores.assign(static_cast<size_t>(position - first + 1), 0.0f);
        float largest = -std::numeric_limits<float>::infinity();
        for (int64_t j = first; j <= position; ++j) {
          float dot = 0;
          for (int64_t d = 0; d < dim; ++d) dot += query[d] * keys[j * dim + d];
          float score = dot * scale;
          if (s_.attention_softcap > 0) score = std::tanh(score / s_.attention_softcap) * s_.attention_softcap;
          scores[static_cast<size_t>(j - first)] = score;
          largest = std::max(largest, score);
        }
        float total = 0;
        for (float& score : scores) total += (score = std::exp(score - largest));
        float* result = out.data() + (t * s_.heads + h) * dim;
        for (int64_t j = first; j <= position; ++j) {
          const float weight = scores[static_cast<size_t>(j - first)] / total;
          for (int64_t d = 0; d < dim; ++d) result[d] += weight * values[j * dim + d];
        }
      }
    }
  }

  DecoderSpec s_;
  int64_t capacity_;
  int64_t length_ = 0;
  std::vector<std::vector<float>> keys_, values_;
};

}  // namespace

std::unique_ptr<DecoderRunner> MakeReferenceDecoder(const DecoderSpec& spec, int64_t capacity) {
  return std::make_unique<ReferenceDecoder>(spec, capacity);
}

std::unique_ptr<DecoderRunner> MakeDecoderRunner(Device device, const DecoderSpec& spec, int64_t capacity) {
  switch (device) {
    case Device::kCpu:
#ifdef ATQ_SCALAR_CPU
      return MakeReferenceDecoder(spec, capacity);
#else
      return MakeCpuDecoder(spec, capacity);
#endif
    case Device::kCuda:
#ifdef ATQ_WITH_CUDA
      return cuda::MakeCudaDecoder(spec, capacity);
#else
      Fail("this build of atq has no CUDA backend (configure with -DATQ_CUDA=ON where nvcc is installed)");
#endif
  }
  Fail("decoder: unknown device");
}

}  // namespace atq
