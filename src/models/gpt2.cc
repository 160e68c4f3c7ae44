// GPT-2's forward pass.
#include "models/gpt2.h"

#include <cmath>

#include <regex>

#include <torch/torch.h>

#include "models/packed_product.h"
#include "util/error.h"

namespace atq {
namespace {

torch::nn::LayerNorm MakeLayerNorm(const LmConfig& config) {
  return torch::nn::LayerNorm(torch::nn::LayerNormOptions({config.hidden_size}).eps(config.norm_eps));
}

}  // namespace

bool IsGpt2Conv1dWeight(const std::string& name) {
  static const std::regex conv1d(R"(\.(attn\.c_attn|attn\.c_proj|mlp\.c_fc|mlp\.c_proj)\.weight$)");
  return std::regex_search(name, conv1d);
}

Gpt2AttentionImpl::Gpt2AttentionImpl(const LmConfig& config)
    : heads(config.num_heads), scale_by_inverse_layer(config.scale_attn_by_inverse_layer_idx) {
  c_attn = register_module("c_attn", LmLinear(config.hidden_size, 3 * config.hidden_size, true));
  c_proj = register_module("c_proj", LmLinear(config.hidden_size, config.hidden_size, true));
}

torch::Tensor Gpt2AttentionImpl::forward(const torch::Tensor& x, KvCache* cache, size_t layer) {
  const int64_t batch = x.size(0), steps = x.size(1), width = x.size(2);
  // [B, T, 3C] -> three [B, H, T, D]
  const auto split = c_attn(x).view({batch, steps, 3, heads, width / heads}).permute({2, 0, 3, 1, 4});
  torch::Tensor keys = split[1], values = split[2];
  const int64_t past = cache ? cache->length : 0;
  if (cache) std::tie(keys, values) = cache->Append(layer, keys, values);
  AttentionOptions options;
  // scale_attn_by_inverse_layer_idx: scores also divided by the 1-based layer number.
  if (scale_by_inverse_layer) options.scale = 1.0 / std::sqrt(static_cast<double>(width / heads)) / (layer + 1.0);
  const torch::Tensor mixed = CausalAttention(split[0], keys, values, past, options);  // [B, H, T, D]
  return c_proj(mixed.transpose(1, 2).reshape({batch, steps, width}));
}

Gpt2MlpImpl::Gpt2MlpImpl(const LmConfig& config) {
  c_fc = register_module("c_fc", LmLinear(config.hidden_size, config.intermediate_size, true));
  c_proj = register_module("c_proj", LmLinear(config.intermediate_size, config.hidden_size, true));
}

torch::Tensor Gpt2MlpImpl::forward(const torch::Tensor& x) {
  return c_proj(torch::gelu(c_fc(x), "tanh"));  // gelu_new is GELU's tanh approximation
}

Gpt2BlockImpl::Gpt2BlockImpl(const LmConfig& config) {
  ln_1 = register_module("ln_1", MakeLayerNorm(config));
  attn = register_module("attn", Gpt2Attention(config));
  ln_2 = register_module("ln_2", MakeLayerNorm(config));
  mlp = register_module("mlp", Gpt2Mlp(config));
}

torch::Tensor Gpt2BlockImpl::forward(const torch::Tensor& x, KvCache* cache, size_t layer) {
  const torch::Tensor h = x + attn->forward(ln_1(x), cache, layer);
  return h + mlp(ln_2(h));
}

Gpt2BackboneImpl::Gpt2BackboneImpl(const LmConfig& config) {
  wte = register_module("wte", MakeLmEmbedding(config.vocab_size, config.hidden_size));
  wpe = register_module("wpe", MakeLmEmbedding(config.max_positions, config.hidden_size));
  h = register_module("h", torch::nn::ModuleList());
  for (int64_t i = 0; i < config.num_layers; ++i) h->push_back(Gpt2Block(config));
  ln_f = register_module("ln_f", MakeLayerNorm(config));
}

Gpt2Impl::Gpt2Impl(const LmConfig& config) : CausalLmImpl(config) {
  transformer_ = register_module("transformer", Gpt2Backbone(config));
  if (!config.tied_embeddings) {
    lm_head_ = register_module("lm_head", LmLinear(config.hidden_size, config.vocab_size, false));
  }
}

torch::Tensor Gpt2Impl::forward(const torch::Tensor& ids, KvCache* cache) { return Head(Hidden(ids, cache)); }

torch::Tensor Gpt2Impl::LastLogits(const torch::Tensor& ids, KvCache* cache) {
  return Head(Hidden(ids, cache).narrow(1, ids.size(1) - 1, 1)).select(1, 0);
}

torch::Tensor Gpt2Impl::Hidden(const torch::Tensor& ids, KvCache* cache) {
  const int64_t past = cache ? cache->length : 0, steps = ids.size(1);
  Require(past + steps <= config_.max_positions,
          "GPT-2 has {} learned positions; positions {}..{} do not exist (use a shorter context)",
          config_.max_positions, past, past + steps - 1);
  const torch::Tensor positions = torch::arange(past, past + steps, ids.options());
  torch::Tensor x = TokenEmbedding(ids) + transformer_->wpe(positions);  // [B, T, C]
  for (size_t layer = 0; layer < transformer_->h->size(); ++layer) {
    x = transformer_->h[layer]->as<Gpt2Block>()->forward(x, cache, layer);
  }
  if (cache) cache->length += steps;
  return x;
}

torch::Tensor Gpt2Impl::TokenEmbedding(const torch::Tensor& ids) {
  return packed_embedding ? PackedRows(ids, *packed_embedding) : transformer_->wte(ids);
}

torch::Tensor Gpt2Impl::Embed(const torch::Tensor& ids) {
  return TokenEmbedding(ids) + transformer_->wpe(torch::arange(ids.size(1), ids.options()));
}

torch::Tensor Gpt2Impl::ForwardBlock(size_t layer, const torch::Tensor& x) {
  return transformer_->h[layer]->as<Gpt2Block>()->forward(x, nullptr, layer);
}

torch::Tensor Gpt2Impl::Head(const torch::Tensor& x) {
  const torch::Tensor normalized = transformer_->ln_f(x);
  if (lm_head_) return lm_head_(normalized);  // [B, T, V]
  return packed_embedding ? PackedProduct(normalized, *packed_embedding)
                          : torch::matmul(normalized, transformer_->wte->weight.t());
}

std::shared_ptr<torch::nn::Module> Gpt2Impl::Block(size_t layer) { return transformer_->h[layer]; }

}  // namespace atq
