// GPT-2 (Hugging Face GPT2LMHeadModel): learned positions, pre-LayerNorm blocks, fused QKV, gelu_new MLP, head
// tied to the token embedding unless the config says otherwise.
#pragma once

#include <torch/nn/modules/container/modulelist.h>
#include <torch/nn/modules/embedding.h>
#include <torch/nn/modules/normalization.h>

#include "models/causal_lm.h"
#include "models/lm_linear.h"

namespace atq {

struct Gpt2AttentionImpl : torch::nn::Module {
  explicit Gpt2AttentionImpl(const LmConfig& config);
  torch::Tensor forward(const torch::Tensor& x, KvCache* cache, size_t layer);  // x: [B, T, C]
  int64_t heads;
  bool scale_by_inverse_layer;
  LmLinear c_attn{nullptr}, c_proj{nullptr};
};
TORCH_MODULE(Gpt2Attention);

struct Gpt2MlpImpl : torch::nn::Module {
  explicit Gpt2MlpImpl(const LmConfig& config);
  torch::Tensor forward(const torch::Tensor& x);
  LmLinear c_fc{nullptr}, c_proj{nullptr};
};
TORCH_MODULE(Gpt2Mlp);

struct Gpt2BlockImpl : torch::nn::Module {
  explicit Gpt2BlockImpl(const LmConfig& config);
  torch::Tensor forward(const torch::Tensor& x, KvCache* cache, size_t layer);
  torch::nn::LayerNorm ln_1{nullptr}, ln_2{nullptr};
  Gpt2Attention attn{nullptr};
  Gpt2Mlp mlp{nullptr};
};
TORCH_MODULE(Gpt2Block);

// transformer.{wte, wpe, h, ln_f}
struct Gpt2BackboneImpl : torch::nn::Module {
  explicit Gpt2BackboneImpl(const LmConfig& config);
  torch::nn::Embedding wte{nullptr}, wpe{nullptr};
  torch::nn::ModuleList h{nullptr};
  torch::nn::LayerNorm ln_f{nullptr};
};
TORCH_MODULE(Gpt2Backbone);

// Whether a Hugging Face GPT-2 tensor is a Conv1D weight, stored [in, out] where atq's Linear holds [out, in].
bool IsGpt2Conv1dWeight(const std::string& name);

class Gpt2Impl : public CausalLmImpl {
 public:
  explicit Gpt2Impl(const LmConfig& config);
  torch::Tensor forward(const torch::Tensor& ids, KvCache* cache = nullptr) override;
  torch::Tensor LastLogits(const torch::Tensor& ids, KvCache* cache = nullptr) override;
  torch::Tensor Embed(const torch::Tensor& ids) override;
  torch::Tensor ForwardBlock(size_t layer, const torch::Tensor& x) override;
  torch::Tensor Head(const torch::Tensor& x) override;
  std::shared_ptr<torch::nn::Module> Block(size_t layer) override;

 private:
  torch::Tensor Hidden(const torch::Tensor& ids, KvCache* cache);  // the last block's output [B, T, C]
  torch::Tensor TokenEmbedding(const torch::Tensor& ids);  // wte, or its packed rows
  Gpt2Backbone transformer_{nullptr};
  LmLinear lm_head_{nullptr};  // only when the head is not tied
};

}  // namespace atq
