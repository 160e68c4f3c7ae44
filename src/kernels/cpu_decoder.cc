// The CPU decoder: the reference decoder's arithmetic (kernels/decoder.cc) on the SIMD kernels, with its memory
// allocated up front.
#include "kernels/cpu_decoder.h"

#include <algorithm>
#include <cmath>
#include <deque>
#include <limits>
#include <map>
#include <vector>

#include <fmt/format.h>

#include "kernels/float_ops.h"
#include "kernels/interleaved.h"
#include "kernels/matmul.h"
#include "util/error.h"

namespace atq {
namespace {

// Grows `buffer` to at least `size` values; never shrinks, so steady decoding reuses the memory.
float* Room(std::vector<float>& buffer, int64_t size) {
  if (static_cast<int64_t>(buffer.size()) < size) buffer.resize(static_cast<size_t>(size));
  return buffer.data();
}

class CpuDecoder final : public DecoderRunner {
 public:
  CpuDecoder(const DecoderSpec& spec, int64_t capacity, ThreadPool& pool)
      : s_(spec), capacity_(capacity), pool_(pool) {
    CheckDecoderSpec(s_);
    Require(capacity > 0, "decoder: a capacity of {} positions", capacity);
    keys_.resize(s_.layers.size());
    values_.resize(s_.layers.size());
    scores_.resize(static_cast<size_t>(std::max(1, pool_.threads())));
    // Q8_0 and Q4_0 matrices regrouped for the interleaved kernel, once per model: a copy beside the file's bytes
    // (which the rows past the last whole group, the embedding's lookups and the reference keep reading).
    const auto interleave = [&](const PackedWeights* weights) {
      if (weights == nullptr || views_.count(weights) > 0) return;
      PackedMatrix view = weights->view();
      std::vector<uint8_t> bytes = InterleaveRows(view);
      if (!bytes.empty()) {
        interleaved_.push_back(std::move(bytes));
        view.interleaved = interleaved_.back().data();
      }
      views_[weights] = view;
    };
    for (const DecoderLayer& l : s_.layers) {
      for (const DecoderLinear* linear : {&l.q, &l.k, &l.v, &l.qkv, &l.o, &l.gate, &l.up, &l.down}) {
        interleave(linear->weights);
      }
    }
    interleave(s_.head);
  }

  void Forward(const int64_t* ids, int64_t n, bool all_logits, std::vector<float>& logits) override {
    CheckDecoderCall(s_, ids, n, length_, capacity_);
    Reserve(length_ + n);
    const int64_t width = s_.hidden, q_width = s_.heads * s_.head_dim, kv_width = s_.kv_heads * s_.head_dim;
    float* x = Room(x_, n * width);
    float* normed = Room(normed_, n * width);
    float* q = Room(q_, n * q_width);
    float* k = Room(k_, n * kv_width);
    float* v = Room(v_, n * kv_width);
    float* mixed = Room(mixed_, n * q_width);
    float* out = Room(out_, n * width);
    float* up = Room(up_, n * s_.intermediate);
    EmbedTokens(s_, ids, n, length_, x);
    for (size_t layer = 0; layer < s_.layers.size(); ++layer) {
      const DecoderLayer& l = s_.layers[layer];
      Norm(x, l.input_norm, n, normed);
      if (l.qkv.weights != nullptr) {
        // One product for the three, then each row's q, k and v parts to their own buffers.
        float* qkv = Room(qkv_, n * (q_width + 2 * kv_width));
        Linear(l.qkv, normed, n, qkv);
        SplitFusedQkv(s_, qkv, n, q, k, v);
      } else {
        Linear(l.q, normed, n, q);
        Linear(l.k, normed, n, k);
        Linear(l.v, normed, n, v);
      }
      if (!s_.inv_freq.empty()) {
        Rotary(q, n, s_.heads);
        Rotary(k, n, s_.kv_heads);
      }
      Store(layer, k, v, n);
      Attention(layer, q, n, mixed);
      Linear(l.o, mixed, n, out);
      if (s_.sandwich_norms) Norm(out, l.post_attention_norm, n, out);
      AddRows(out, x, n, width);
      Norm(x, s_.sandwich_norms ? l.pre_feedforward_norm : l.post_attention_norm, n, normed);
      Linear(l.up, normed, n, up);
      float* gate = nullptr;
      if (l.gate.weights != nullptr) {
        gate = Room(gate_, n * s_.intermediate);  // ungated models (GPT-2) never allocate it
        Linear(l.gate, normed, n, gate);
      }
      Activate(gate, up, n);
      Linear(l.down, gate != nullptr ? gate : up, n, out);
      if (s_.sandwich_norms) Norm(out, l.post_feedforward_norm, n, out);
      AddRows(out, x, n, width);
    }
    length_ += n;
    const int64_t first = all_logits ? 0 : n - 1, rows = n - first;
    Norm(x + first * width, s_.final_norm, rows, normed);
    logits.resize(static_cast<size_t>(rows * s_.vocab));
    MatMul(views_.at(s_.head), normed, rows, logits.data(), pool_);
    if (s_.final_softcap > 0) vec::Softcap(logits.data(), rows * s_.vocab, s_.final_softcap);
  }

  void Reset() override { length_ = 0; }
  int64_t length() const override { return length_; }
  int64_t capacity() const override { return capacity_; }
  std::string description() const override {
    return fmt::format("cpu ({}, {} threads)", KernelTargetName(), pool_.threads());
  }

 private:
  // body(begin, end) over rows [0, n) of `width` values each: a prompt's rows shared out over the pool, so the
  // float steps between the products do not stay serial beside them; a few rows (decode) on the caller.
  template <typename Body>
  void ForRows(int64_t n, int64_t width, const Body& body) {
    pool_.ParallelFor(n, ThreadPool::GrainFor(width, int64_t{1} << 15),
                      [&](int64_t begin, int64_t end, int) { body(begin, end); });
  }

  // gate = act(gate) * up, or up = act(up) where the model has no gate; row by row, so that every row splits into
  // vectors and a tail the same way on any number of threads.
  void Activate(float* gate, float* up, int64_t n) {
    const int64_t width = s_.intermediate;
    const bool silu = s_.activation == DecoderActivation::kSilu;
    ForRows(n, width, [&](int64_t begin, int64_t end) {
      for (int64_t r = begin; r < end; ++r) {
        float* u = up + r * width;
        if (gate == nullptr) {
          silu ? vec::Silu(u, width) : vec::GeluTanh(u, width);
        } else {
          silu ? vec::SiluGate(gate + r * width, u, width) : vec::GeluTanhGate(gate + r * width, u, width);
        }
      }
    });
  }

  // y += x over n rows of `width`.
  void AddRows(const float* x, float* y, int64_t n, int64_t width) {
    ForRows(n, width, [&](int64_t begin, int64_t end) {
      vec::Add(x + begin * width, y + begin * width, (end - begin) * width);
    });
  }

  void Norm(const float* x, const DecoderNorm& norm, int64_t rows, float* y) {
    const float* bias = norm.bias.empty() ? nullptr : norm.bias.data();
    ForRows(rows, s_.hidden, [&](int64_t begin, int64_t end) {
      for (int64_t r = begin; r < end; ++r) {
        if (s_.norm == DecoderNormKind::kRms) {
          vec::RmsNorm(x + r * s_.hidden, norm.scale.data(), s_.hidden, s_.norm_eps, y + r * s_.hidden);
        } else {
          vec::LayerNorm(x + r * s_.hidden, norm.scale.data(), bias, s_.hidden, s_.norm_eps, y + r * s_.hidden);
        }
      }
    });
  }

  void Linear(const DecoderLinear& linear, const float* x, int64_t n, float* y) {
    const int64_t out = linear.weights->layout.rows;
    MatMul(views_.at(linear.weights), x, n, y, pool_);
    if (linear.bias.empty()) return;
    ForRows(n, out, [&](int64_t begin, int64_t end) {
      for (int64_t r = begin; r < end; ++r) vec::Add(linear.bias.data(), y + r * out, out);
    });
  }

  void Rotary(float* x, int64_t n, int64_t heads) {
    ForRows(n, heads * s_.head_dim, [&](int64_t begin, int64_t end) { RotaryRows(x, begin, end, heads); });
  }

  void RotaryRows(float* x, int64_t begin, int64_t end, int64_t heads) const {
    const int64_t half = s_.head_dim / 2;
    for (int64_t t = begin; t < end; ++t) {
      const float* c = cos_.data() + (length_ + t) * half;
      const float* sn = sin_.data() + (length_ + t) * half;
      for (int64_t h = 0; h < heads; ++h) {
        float* head = x + (t * heads + h) * s_.head_dim;
        for (int64_t i = 0; i < half; ++i) {
          const float x1 = head[i], x2 = head[i + half];
          head[i] = x1 * c[i] + (-x2) * sn[i];
          head[i + half] = x2 * c[i] + x1 * sn[i];
        }
      }
    }
  }

  // Grows the cache, the rotary tables and the score buffers to `positions` (in steps of at least a quarter of
  // what is there, so a long generation reallocates a few times, not per token), never past the capacity: memory
  // follows the context in use, not the model's longest.
  void Reserve(int64_t positions) {
    if (positions <= reserved_) return;
    positions = std::min(capacity_, std::max(positions, reserved_ + std::max<int64_t>(64, reserved_ / 4)));
    const int64_t kv_width = s_.kv_heads * s_.head_dim, half = s_.head_dim / 2;
    for (size_t layer = 0; layer < s_.layers.size(); ++layer) {
      keys_[layer].resize(static_cast<size_t>(positions * kv_width));
      values_[layer].resize(static_cast<size_t>(positions * kv_width));
    }
    // The rotation of each position as the reference computes it (float position / divisor times the frequency,
    // then cos and sin), so both rotate by the very same values.
    const bool rotary = !s_.inv_freq.empty();
    cos_.resize(rotary ? static_cast<size_t>(positions * half) : 0);
    sin_.resize(cos_.size());
    for (int64_t p = rotary ? reserved_ : positions; p < positions; ++p) {
      const float position = static_cast<float>(p) / s_.rope_position_divisor;
      for (int64_t i = 0; i < half; ++i) {
        const float angle = position * s_.inv_freq[static_cast<size_t>(i)];
        cos_[static_cast<size_t>(p * half + i)] = std::cos(angle);
        sin_[static_cast<size_t>(p * half + i)] = std::sin(angle);
      }
    }
    for (std::vector<float>& scores : scores_) scores.resize(static_cast<size_t>(kQueryBlock * positions));
    reserved_ = positions;
  }

  // The cache of a layer: [positions, kv_heads, head_dim], so that it grows at the end; new positions from length_.
  void Store(size_t layer, const float* k, const float* v, int64_t n) {
    const int64_t kv_width = s_.kv_heads * s_.head_dim;
    std::copy_n(k, n * kv_width, keys_[layer].data() + length_ * kv_width);
    std::copy_n(v, n * kv_width, values_[layer].data() + length_ * kv_width);
  }

  // One task per block of up to kQueryBlock query positions and one head, shared out over the pool: the block's
  // scores against the union of its positions' key ranges (each key and value loaded once for the block), each
  // position's own range softmaxed and the rest of its row zeroed, then the weighted sum of the values. Each thread
  // scores into its own buffer.
  void Attention(size_t layer, const float* q, int64_t n, float* out) {
    const int64_t dim = s_.head_dim, heads = s_.heads, group = s_.heads / s_.kv_heads;
    const int64_t stride = s_.kv_heads * dim;  // from one position to the next in the cache
    const int64_t window = s_.layers[layer].window;
    const float scale = LayerScoreScale(s_, layer);
    const float* all_keys = keys_[layer].data();
    const float* all_values = values_[layer].data();
    const int64_t blocks = (n + kQueryBlock - 1) / kQueryBlock;
    const auto first_key = [&](int64_t position) {
      return window > 0 ? std::max<int64_t>(0, position - window + 1) : int64_t{0};
    };
    pool_.ParallelFor(blocks * heads, 1, [&](int64_t begin, int64_t end, int thread) {
      float* scores = scores_[static_cast<size_t>(thread)].data();
      for (int64_t task = begin; task < end; ++task) {
        const int64_t t0 = (task / heads) * kQueryBlock, h = task % heads;
        const int64_t rows = std::min(kQueryBlock, n - t0);
        const int64_t lo = first_key(length_ + t0), count = length_ + t0 + rows - lo;
        const float* keys = all_keys + lo * stride + (h / group) * dim;
        const float* values = all_values + lo * stride + (h / group) * dim;
        vec::ScoreRows(q + (t0 * heads + h) * dim, heads * dim, rows, keys, stride, count, dim, scale, scores, count);
        for (int64_t i = 0; i < rows; ++i) {
          const int64_t position = length_ + t0 + i;
          const int64_t from = first_key(position) - lo, to = position - lo + 1;  // this position's keys
          float* row = scores + i * count;
          if (s_.attention_softcap > 0) vec::Softcap(row + from, to - from, s_.attention_softcap);
          const float largest = *std::max_element(row + from, row + to);
          const float inverse = 1.0f / vec::ExpShifted(row + from, to - from, largest);
          for (int64_t j = from; j < to; ++j) row[j] *= inverse;
          std::fill(row, row + from, 0.0f);
          std::fill(row + to, row + count, 0.0f);
        }
        vec::WeightedRows(scores, count, rows, values, stride, count, dim, out + (t0 * heads + h) * dim, heads * dim);
      }
    });
  }

  static constexpr int64_t kQueryBlock = 4;

  DecoderSpec s_;
  int64_t capacity_;
  ThreadPool& pool_;
  int64_t length_ = 0;
  int64_t reserved_ = 0;  // positions the cache, tables and score buffers hold
  std::vector<std::vector<float>> keys_, values_, scores_;
  std::vector<float> cos_, sin_;
  std::vector<float> x_, normed_, qkv_, q_, k_, v_, mixed_, out_, gate_, up_;
  std::map<const PackedWeights*, PackedMatrix> views_;  // what MatMul reads for each weight of the spec
  std::deque<std::vector<uint8_t>> interleaved_;        // their interleaved bytes, where they have them
};

}  // namespace

std::unique_ptr<DecoderRunner> MakeCpuDecoder(const DecoderSpec& spec, int64_t capacity, ThreadPool& pool) {
  return std::make_unique<CpuDecoder>(spec, capacity, pool);
}

}  // namespace atq
