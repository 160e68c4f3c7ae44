// The rotary decoder every family but GPT-2 runs (Llama, Mistral, Qwen2, Gemma, Gemma 2, Phi-3; the family table
// in models/lm_family.h sets its switches): RMSNorm (Gemma: scaled by 1 + w), rotary positions (rotate-half
// layout; linear and Llama 3 scaling), grouped- or multi-query attention with optional sliding windows and
// soft-capping, gated MLP (SiLU or tanh GELU), optional sandwich norms, tied or separate head.
#pragma once

#include <torch/nn/modules/container/modulelist.h>
#include <torch/nn/modules/embedding.h>

#include "models/causal_lm.h"
#include "models/lm_linear.h"

namespace atq {

struct RmsNormImpl : torch::nn::Module {
  RmsNormImpl(int64_t width, double eps, double weight_offset = 0);
  torch::Tensor forward(const torch::Tensor& x);  // normalized in float32, then scaled by (offset + w), in x's dtype
  torch::Tensor weight;
  double eps, weight_offset;
};
TORCH_MODULE(RmsNorm);

// cos and sin of the rotary angles for `positions` ([T] int64): each [T, head_dim], the half-width frequency
// table repeated twice (Hugging Face's rotate-half layout), computed in `dtype` (float32 as transformers does;
// float64 for float64 models).
// The divisor of each rotary frequency (head_dim / 2 of them) that the config's scaling amounts to, as llama.cpp's
// rope_freqs.weight holds it; empty where the config has no frequency-dependent scaling.
std::vector<double> RopeFrequencyDivisors(const LmConfig& config);

// The head_dim / 2 rotary inverse frequencies with the config's frequency-dependent scaling applied (the angle of
// frequency i at position p is p / rope_linear_factor * inv_freq[i]).
torch::Tensor RotaryInverseFrequencies(const LmConfig& config, torch::Dtype dtype, torch::Device device);

std::pair<torch::Tensor, torch::Tensor> RotaryTables(const LmConfig& config, const torch::Tensor& positions,
                                                     torch::Dtype dtype);
// x: [B, H, T, D] rotated by the tables of its positions.
torch::Tensor ApplyRotary(const torch::Tensor& x, const torch::Tensor& cos, const torch::Tensor& sin);

struct LlamaAttentionImpl : torch::nn::Module {
  LlamaAttentionImpl(const LmConfig& config, int64_t layer);
  // x: [B, T, C]; cos/sin: [T, D]
  torch::Tensor forward(const torch::Tensor& x, const torch::Tensor& cos, const torch::Tensor& sin, KvCache* cache,
                        size_t layer);
  int64_t heads, kv_heads, head_dim;
  AttentionOptions options;  // this layer's scale, soft-capping and window
  LmLinear q_proj{nullptr}, k_proj{nullptr}, v_proj{nullptr}, o_proj{nullptr};
};
TORCH_MODULE(LlamaAttention);

struct LlamaMlpImpl : torch::nn::Module {
  explicit LlamaMlpImpl(const LmConfig& config);
  torch::Tensor forward(const torch::Tensor& x);  // down(act(gate(x)) * up(x))
  LmActivation activation;
  LmLinear gate_proj{nullptr}, up_proj{nullptr}, down_proj{nullptr};
};
TORCH_MODULE(LlamaMlp);

struct LlamaBlockImpl : torch::nn::Module {
  LlamaBlockImpl(const LmConfig& config, int64_t layer);
  torch::Tensor forward(const torch::Tensor& x, const torch::Tensor& cos, const torch::Tensor& sin, KvCache* cache,
                        size_t layer);
  RmsNorm input_layernorm{nullptr}, post_attention_layernorm{nullptr};
  // Gemma 2's sandwich: post_attention_layernorm normalizes the attention's output, and these wrap the MLP.
  RmsNorm pre_feedforward_layernorm{nullptr}, post_feedforward_layernorm{nullptr};
  LlamaAttention self_attn{nullptr};
  LlamaMlp mlp{nullptr};
};
TORCH_MODULE(LlamaBlock);

// model.{embed_tokens, layers, norm}
struct LlamaBackboneImpl : torch::nn::Module {
  explicit LlamaBackboneImpl(const LmConfig& config);
  torch::nn::Embedding embed_tokens{nullptr};
  torch::nn::ModuleList layers{nullptr};
  RmsNorm norm{nullptr};
};
TORCH_MODULE(LlamaBackbone);

class LlamaImpl : public CausalLmImpl {
 public:
  explicit LlamaImpl(const LmConfig& config);
  torch::Tensor forward(const torch::Tensor& ids, KvCache* cache = nullptr) override;
  torch::Tensor LastLogits(const torch::Tensor& ids, KvCache* cache = nullptr) override;
  torch::Tensor Embed(const torch::Tensor& ids) override;
  torch::Tensor ForwardBlock(size_t layer, const torch::Tensor& x) override;
  torch::Tensor Head(const torch::Tensor& x) override;
  std::shared_ptr<torch::nn::Module> Block(size_t layer) override;

 private:
  torch::Tensor Hidden(const torch::Tensor& ids, KvCache* cache);  // the last block's output [B, T, C]
  LlamaBackbone model_{nullptr};
  LmLinear lm_head_{nullptr};  // only when the head is not tied
};

}  // namespace atq
