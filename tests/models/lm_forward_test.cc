// GPT-2 and Llama forward passes against a plain double-precision reference written here from the papers'
// equations (loops over vectors, no libtorch ops), plus KV-cache consistency.
#include <cmath>
#include <map>
#include <string>
#include <vector>

#include <gtest/gtest.h>
#include <torch/torch.h>

#include "models/causal_lm.h"
#include "util/error.h"

namespace atq {
namespace {

using Vec = std::vector<double>;
using Mat = std::vector<Vec>;  // [rows][cols]

// Plain reference over a parameter dictionary.
class ReferenceLm {
 public:
  ReferenceLm(const CausalLmImpl& model, const LmConfig& config) : c_(config) {
    for (const auto& p : model.named_parameters()) {
      const torch::Tensor t = p.value().detach().to(torch::kFloat64).contiguous();
      const double* data = t.data_ptr<double>();
      if (t.dim() == 1) {
        vectors_[p.key()] = Vec(data, data + t.numel());
      } else {
        Mat m(static_cast<size_t>(t.size(0)), Vec(static_cast<size_t>(t.size(1))));
        for (int64_t r = 0; r < t.size(0); ++r) std::copy(data + r * t.size(1), data + (r + 1) * t.size(1), m[r].begin());
        matrices_[p.key()] = m;
      }
    }
  }

  // logits [T][V] for one sequence
  Mat Forward(const std::vector<int64_t>& ids) const {
    const bool gpt2 = c_.arch == LmArch::kGpt2;
    const std::string p = gpt2 ? "transformer." : "model.";
    Mat x;
    for (size_t t = 0; t < ids.size(); ++t) {
      Vec row = M(p + (gpt2 ? "wte" : "embed_tokens") + ".weight")[ids[t]];
      if (gpt2) Add(row, M(p + "wpe.weight")[t]);
      x.push_back(row);
    }
    for (int64_t l = 0; l < c_.num_layers; ++l) {
      const std::string b = p + (gpt2 ? "h." : "layers.") + std::to_string(l) + ".";
      Mat normed;
      for (const Vec& row : x) {
        normed.push_back(gpt2 ? LayerNorm(row, V(b + "ln_1.weight"), V(b + "ln_1.bias"))
                              : RmsNorm(row, V(b + "input_layernorm.weight")));
      }
      const Mat attention = gpt2 ? Gpt2Attention(normed, b) : LlamaAttention(normed, b);
      for (size_t t = 0; t < x.size(); ++t) Add(x[t], attention[t]);
      for (Vec& row : x) {
        Vec mlp;
        if (gpt2) {
          Vec hidden = Linear(LayerNorm(row, V(b + "ln_2.weight"), V(b + "ln_2.bias")), b + "mlp.c_fc");
          for (double& h : hidden) h = 0.5 * h * (1 + std::tanh(std::sqrt(2 / M_PI) * (h + 0.044715 * h * h * h)));
          mlp = Linear(hidden, b + "mlp.c_proj");
        } else {
          const Vec n = RmsNorm(row, V(b + "post_attention_layernorm.weight"));
          Vec gate = Linear(n, b + "mlp.gate_proj");
          const Vec up = Linear(n, b + "mlp.up_proj");
          for (size_t i = 0; i < gate.size(); ++i) gate[i] = gate[i] / (1 + std::exp(-gate[i])) * up[i];
          mlp = Linear(gate, b + "mlp.down_proj");
        }
        Add(row, mlp);
      }
    }
    Mat logits;
    const Mat& head = c_.tied_embeddings ? M(p + (gpt2 ? "wte" : "embed_tokens") + ".weight") : M("lm_head.weight");
    for (const Vec& row : x) {
      const Vec n = gpt2 ? LayerNorm(row, V(p + "ln_f.weight"), V(p + "ln_f.bias")) : RmsNorm(row, V(p + "norm.weight"));
      logits.push_back(MatVec(head, n));
    }
    return logits;
  }

 private:
  const Mat& M(const std::string& name) const { return matrices_.at(name); }
  const Vec& V(const std::string& name) const { return vectors_.at(name); }
  static void Add(Vec& a, const Vec& b) {
    for (size_t i = 0; i < a.size(); ++i) a[i] += b[i];
  }
  static Vec MatVec(const Mat& w, const Vec& x) {
    Vec out(w.size(), 0.0);
    for (size_t r = 0; r < w.size(); ++r) {
      for (size_t i = 0; i < x.size(); ++i) out[r] += w[r][i] * x[i];
    }
    return out;
  }
  Vec Linear(const Vec& x, const std::string& name) const {
    Vec out = MatVec(M(name + ".weight"), x);
    if (vectors_.count(name + ".bias")) Add(out, V(name + ".bias"));
    return out;
  }
  Vec LayerNorm(const Vec& x, const Vec& w, const Vec& b) const {
    double mean = 0, var = 0;
    for (double v : x) mean += v / x.size();
    for (double v : x) var += (v - mean) * (v - mean) / x.size();
    Vec out(x.size());
    for (size_t i = 0; i < x.size(); ++i) out[i] = (x[i] - mean) / std::sqrt(var + c_.norm_eps) * w[i] + b[i];
    return out;
  }
  Vec RmsNorm(const Vec& x, const Vec& w) const {
    double ms = 0;
    for (double v : x) ms += v * v / x.size();
    Vec out(x.size());
    for (size_t i = 0; i < x.size(); ++i) out[i] = x[i] / std::sqrt(ms + c_.norm_eps) * w[i];
    return out;
  }
  // softmax(q.k / sqrt(d)) v over keys 0..t for each head; q/k/v rows per position, heads of d consecutive values.
  Mat Attend(const Mat& q, const Mat& k, const Mat& v) const {
    const int64_t d = c_.head_dim, group = c_.num_heads / c_.num_kv_heads;
    Mat out(q.size(), Vec(static_cast<size_t>(c_.num_heads * d), 0.0));
    for (size_t t = 0; t < q.size(); ++t) {
      for (int64_t h = 0; h < c_.num_heads; ++h) {
        const int64_t kvh = h / group;
        Vec scores(t + 1);
        double max_score = -1e300;
        for (size_t s = 0; s <= t; ++s) {
          double dot = 0;
          for (int64_t i = 0; i < d; ++i) dot += q[t][h * d + i] * k[s][kvh * d + i];
          scores[s] = dot / std::sqrt(static_cast<double>(d));
          max_score = std::max(max_score, scores[s]);
        }
        double total = 0;
        for (double& s : scores) total += (s = std::exp(s - max_score));
        for (size_t s = 0; s <= t; ++s) {
          for (int64_t i = 0; i < d; ++i) out[t][h * d + i] += scores[s] / total * v[s][kvh * d + i];
        }
      }
    }
    return out;
  }
  Mat Gpt2Attention(const Mat& x, const std::string& b) const {
    Mat q, k, v;
    const size_t width = static_cast<size_t>(c_.hidden_size);
    for (const Vec& row : x) {
      const Vec qkv = Linear(row, b + "attn.c_attn");
      q.emplace_back(qkv.begin(), qkv.begin() + width);
      k.emplace_back(qkv.begin() + width, qkv.begin() + 2 * width);
      v.emplace_back(qkv.begin() + 2 * width, qkv.end());
    }
    Mat out;
    for (const Vec& row : Attend(q, k, v)) out.push_back(Linear(row, b + "attn.c_proj"));
    return out;
  }
  // Rotate-half RoPE: pairs (i, i + d/2) of each head turn by position * theta^(-2i/d).
  void Rotate(Vec& row, int64_t heads, size_t position) const {
    const int64_t d = c_.head_dim;
    for (int64_t h = 0; h < heads; ++h) {
      for (int64_t i = 0; i < d / 2; ++i) {
        const double angle = position * std::pow(c_.rope_theta, -2.0 * i / d);
        const double a = row[h * d + i], b = row[h * d + i + d / 2];
        row[h * d + i] = a * std::cos(angle) - b * std::sin(angle);
        row[h * d + i + d / 2] = b * std::cos(angle) + a * std::sin(angle);
      }
    }
  }
  Mat LlamaAttention(const Mat& x, const std::string& b) const {
    Mat q, k, v;
    for (size_t t = 0; t < x.size(); ++t) {
      q.push_back(Linear(x[t], b + "self_attn.q_proj"));
      k.push_back(Linear(x[t], b + "self_attn.k_proj"));
      v.push_back(Linear(x[t], b + "self_attn.v_proj"));
      Rotate(q.back(), c_.num_heads, t);
      Rotate(k.back(), c_.num_kv_heads, t);
    }
    Mat out;
    for (const Vec& row : Attend(q, k, v)) out.push_back(Linear(row, b + "self_attn.o_proj"));
    return out;
  }

  LmConfig c_;
  std::map<std::string, Mat> matrices_;
  std::map<std::string, Vec> vectors_;
};

LmConfig TinyConfig(LmArch arch, int64_t kv_heads, bool tied) {
  LmConfig c;
  c.arch = arch;
  c.vocab_size = 37;
  c.hidden_size = 16;
  c.num_layers = 2;
  c.num_heads = 4;
  c.num_kv_heads = arch == LmArch::kGpt2 ? 4 : kv_heads;
  c.head_dim = 4;
  c.intermediate_size = 24;
  c.max_positions = 32;
  c.rope_theta = 500;
  c.tied_embeddings = tied;
  c.attention_bias = c.mlp_bias = arch == LmArch::kGpt2;
  return c;
}

// Random weights at a scale where every nonlinearity matters (norm weights and biases not at their init values).
std::shared_ptr<CausalLmImpl> RandomModel(const LmConfig& config) {
  torch::manual_seed(7);
  auto model = MakeCausalLm(config);
  torch::NoGradGuard no_grad;
  for (auto& p : model->parameters()) p.normal_(p.dim() == 1 ? 0.5 : 0.0, 0.4);
  model->to(torch::kFloat64);
  return model;
}

void ExpectMatchesReference(const LmConfig& config) {
  auto model = RandomModel(config);
  const std::vector<int64_t> ids = {3, 0, 36, 7, 7, 19, 2, 30, 11};
  const torch::Tensor logits = model->forward(torch::tensor(ids).unsqueeze(0))[0];  // [T, V]
  const Mat expected = ReferenceLm(*model, config).Forward(ids);
  for (size_t t = 0; t < ids.size(); ++t) {
    for (int64_t v = 0; v < config.vocab_size; ++v) {
      ASSERT_NEAR(logits[t][v].item<double>(), expected[t][v], 1e-9) << "position " << t << " token " << v;
    }
  }
}

TEST(LmForward, Gpt2MatchesPlainReference) { ExpectMatchesReference(TinyConfig(LmArch::kGpt2, 4, true)); }
TEST(LmForward, Gpt2UntiedHeadMatchesPlainReference) { ExpectMatchesReference(TinyConfig(LmArch::kGpt2, 4, false)); }
TEST(LmForward, LlamaGroupedQueryMatchesPlainReference) { ExpectMatchesReference(TinyConfig(LmArch::kLlama, 2, false)); }
TEST(LmForward, LlamaMultiQueryTiedMatchesPlainReference) { ExpectMatchesReference(TinyConfig(LmArch::kLlama, 1, true)); }
TEST(LmForward, LlamaMultiHeadWithBiasesMatchesPlainReference) {
  LmConfig config = TinyConfig(LmArch::kLlama, 4, false);
  config.attention_bias = config.mlp_bias = true;
  ExpectMatchesReference(config);
}

// Feeding a sequence in pieces through the KV cache gives the logits of one full pass, for batch 2.
TEST(LmForward, KvCacheMatchesFullPass) {
  for (const LmConfig& config : {TinyConfig(LmArch::kGpt2, 4, true), TinyConfig(LmArch::kLlama, 2, false)}) {
    auto model = RandomModel(config);
    const torch::Tensor ids = torch::randint(0, config.vocab_size, {2, 11}, torch::kInt64);
    const torch::Tensor full = model->forward(ids);
    KvCache cache;
    std::vector<torch::Tensor> pieces;
    for (const auto& [begin, end] : std::vector<std::pair<int64_t, int64_t>>{{0, 5}, {5, 6}, {6, 11}}) {
      pieces.push_back(model->forward(ids.slice(1, begin, end), &cache));
    }
    EXPECT_EQ(cache.length, 11);
    EXPECT_TRUE(torch::allclose(torch::cat(pieces, 1), full, 1e-10, 1e-10)) << LmArchName(config.arch);
    // The last position's logits alone, whole and through the cache (the head skips the other positions).
    EXPECT_TRUE(torch::allclose(model->LastLogits(ids), full.select(1, -1), 1e-10, 1e-10)) << LmArchName(config.arch);
    KvCache last_cache;
    model->LastLogits(ids.slice(1, 0, 7), &last_cache);
    const torch::Tensor last = model->LastLogits(ids.slice(1, 7, 11), &last_cache);
    EXPECT_EQ(last_cache.length, 11);
    EXPECT_EQ(last.sizes(), (std::vector<int64_t>{2, config.vocab_size}));
    EXPECT_TRUE(torch::allclose(last, full.select(1, -1), 1e-10, 1e-10)) << LmArchName(config.arch);
  }
}

TEST(LmForward, Gpt2RefusesPositionsBeyondItsTable) {
  auto model = RandomModel(TinyConfig(LmArch::kGpt2, 4, true));
  EXPECT_THROW(model->forward(torch::zeros({1, 33}, torch::kInt64)), Error);
}

}  // namespace
}  // namespace atq
