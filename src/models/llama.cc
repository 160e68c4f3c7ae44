// The Llama forward pass.
#include "models/llama.h"

#include <cmath>

#include <torch/torch.h>

#include "models/packed_product.h"

namespace atq {

RmsNormImpl::RmsNormImpl(int64_t width, double eps, double weight_offset) : eps(eps), weight_offset(weight_offset) {
  // A fresh norm scales by 1: w = 1, or w = 0 where the scale is (1 + w) (Gemma initializes its norms to zeros).
  weight = register_parameter("weight", weight_offset != 0 ? torch::zeros({width}) : torch::ones({width}));
}

torch::Tensor RmsNormImpl::forward(const torch::Tensor& x) {
  const torch::Tensor x32 = AtLeastFloat32(x);
  const torch::Tensor normalized = x32 * torch::rsqrt(x32.pow(2).mean(-1, /*keepdim=*/true) + eps);
  if (weight_offset != 0) return ((weight_offset + AtLeastFloat32(weight)) * normalized).to(x.scalar_type());
  return weight * normalized.to(x.scalar_type());
}

namespace {

// Llama 3's scaling of the inverse frequencies (transformers' _compute_llama3_parameters): wavelengths longer
// than original_context / low_freq_factor slowed by the factor, shorter than original_context / high_freq_factor
// kept, a linear blend in between.
torch::Tensor Llama3Frequencies(const LmConfig& c, const torch::Tensor& inv_freq) {
  const double context = static_cast<double>(c.rope_original_max_positions);
  const double low_wavelength = context / c.rope_low_freq_factor, high_wavelength = context / c.rope_high_freq_factor;
  const torch::Tensor wavelength = 2 * M_PI / inv_freq;
  const torch::Tensor slowed = torch::where(wavelength > low_wavelength, inv_freq / c.rope_factor, inv_freq);
  const torch::Tensor smooth =
      (context / wavelength - c.rope_low_freq_factor) / (c.rope_high_freq_factor - c.rope_low_freq_factor);
  const torch::Tensor blended = (1 - smooth) * slowed / c.rope_factor + smooth * slowed;
  const torch::Tensor medium = (wavelength >= high_wavelength).logical_and(wavelength <= low_wavelength);
  return torch::where(medium, blended, slowed);
}

}  // namespace

std::vector<double> RopeFrequencyDivisors(const LmConfig& config) {
  if (!config.rope_freq_factors.empty()) return config.rope_freq_factors;
  if (config.rope_scaling != RopeScaling::kLlama3) return {};
  const auto options = torch::TensorOptions().dtype(torch::kFloat64);
  const torch::Tensor inv_freq =
      1.0 / torch::pow(config.rope_theta, torch::arange(0, config.head_dim, 2, options) / config.head_dim);
  const torch::Tensor divisors = (inv_freq / Llama3Frequencies(config, inv_freq)).contiguous();
  return std::vector<double>(divisors.data_ptr<double>(), divisors.data_ptr<double>() + divisors.numel());
}

torch::Tensor RotaryInverseFrequencies(const LmConfig& config, torch::Dtype dtype, torch::Device device) {
  const auto float_options = torch::TensorOptions().dtype(dtype).device(device);
  torch::Tensor inv_freq =
      1.0 / torch::pow(config.rope_theta, torch::arange(0, config.head_dim, 2, float_options) / config.head_dim);
  if (!config.rope_freq_factors.empty()) {
    inv_freq = inv_freq / torch::tensor(config.rope_freq_factors, float_options);
  } else if (config.rope_scaling == RopeScaling::kLlama3) {
    inv_freq = Llama3Frequencies(config, inv_freq);
  }
  return inv_freq;
}

std::pair<torch::Tensor, torch::Tensor> RotaryTables(const LmConfig& config, const torch::Tensor& positions,
                                                     torch::Dtype dtype) {
  const torch::Tensor inv_freq = RotaryInverseFrequencies(config, dtype, positions.device());
  const torch::Tensor angles = torch::outer(positions.to(dtype) / config.rope_linear_factor, inv_freq);
  const torch::Tensor table = torch::cat({angles, angles}, -1);  // [T, D]
  return {table.cos(), table.sin()};
}

torch::Tensor ApplyRotary(const torch::Tensor& x, const torch::Tensor& cos, const torch::Tensor& sin) {
  const int64_t half = x.size(-1) / 2;
  const torch::Tensor rotated = torch::cat({-x.narrow(-1, half, half), x.narrow(-1, 0, half)}, -1);
  return (x * cos.to(x.scalar_type()) + rotated * sin.to(x.scalar_type()));
}

LlamaAttentionImpl::LlamaAttentionImpl(const LmConfig& config, int64_t layer)
    : heads(config.num_heads), kv_heads(config.num_kv_heads), head_dim(config.head_dim) {
  const int64_t width = config.hidden_size;
  const bool qkv_bias = config.attention_bias || config.qkv_bias;
  q_proj = register_module("q_proj", LmLinear(width, heads * head_dim, qkv_bias));
  k_proj = register_module("k_proj", LmLinear(width, kv_heads * head_dim, qkv_bias));
  v_proj = register_module("v_proj", LmLinear(width, kv_heads * head_dim, qkv_bias));
  o_proj = register_module("o_proj", LmLinear(heads * head_dim, width, config.attention_bias));
  options.scale = config.attention_scale;
  options.softcap = config.attention_softcap;
  if (!config.window_on_even_layers || layer % 2 == 0) options.window = config.sliding_window;
}

torch::Tensor LlamaAttentionImpl::forward(const torch::Tensor& x, const torch::Tensor& cos, const torch::Tensor& sin,
                                          KvCache* cache, size_t layer) {
  const int64_t batch = x.size(0), steps = x.size(1);
  const torch::Tensor query =
      ApplyRotary(q_proj(x).view({batch, steps, heads, head_dim}).transpose(1, 2), cos, sin);  // [B, H, T, D]
  torch::Tensor keys = ApplyRotary(k_proj(x).view({batch, steps, kv_heads, head_dim}).transpose(1, 2), cos, sin);
  torch::Tensor values = v_proj(x).view({batch, steps, kv_heads, head_dim}).transpose(1, 2);  // [B, KV, T, D]
  const int64_t past = cache ? cache->length : 0;
  if (cache) std::tie(keys, values) = cache->Append(layer, keys, values);
  const torch::Tensor mixed = CausalAttention(query, keys, values, past, options);
  return o_proj(mixed.transpose(1, 2).reshape({batch, steps, heads * head_dim}));
}

LlamaMlpImpl::LlamaMlpImpl(const LmConfig& config) : activation(config.activation) {
  gate_proj = register_module("gate_proj", LmLinear(config.hidden_size, config.intermediate_size, config.mlp_bias));
  up_proj = register_module("up_proj", LmLinear(config.hidden_size, config.intermediate_size, config.mlp_bias));
  down_proj = register_module("down_proj", LmLinear(config.intermediate_size, config.hidden_size, config.mlp_bias));
}

torch::Tensor LlamaMlpImpl::forward(const torch::Tensor& x) {
  const torch::Tensor gate = gate_proj(x);
  const torch::Tensor activated =
      activation == LmActivation::kSilu ? torch::silu(gate) : torch::gelu(gate, /*approximate=*/"tanh");
  return down_proj(activated * up_proj(x));
}

LlamaBlockImpl::LlamaBlockImpl(const LmConfig& config, int64_t layer) {
  const auto norm = [&] { return RmsNorm(config.hidden_size, config.norm_eps, config.norm_weight_offset); };
  input_layernorm = register_module("input_layernorm", norm());
  self_attn = register_module("self_attn", LlamaAttention(config, layer));
  post_attention_layernorm = register_module("post_attention_layernorm", norm());
  if (config.sandwich_norms) {
    pre_feedforward_layernorm = register_module("pre_feedforward_layernorm", norm());
    post_feedforward_layernorm = register_module("post_feedforward_layernorm", norm());
  }
  mlp = register_module("mlp", LlamaMlp(config));
}

torch::Tensor LlamaBlockImpl::forward(const torch::Tensor& x, const torch::Tensor& cos, const torch::Tensor& sin,
                                      KvCache* cache, size_t layer) {
  if (pre_feedforward_layernorm) {  // x += post(attn(pre(x))); x += post_ff(mlp(pre_ff(x)))
    const torch::Tensor h =
        x + post_attention_layernorm(self_attn->forward(input_layernorm(x), cos, sin, cache, layer));
    return h + post_feedforward_layernorm(mlp(pre_feedforward_layernorm(h)));
  }
  const torch::Tensor h = x + self_attn->forward(input_layernorm(x), cos, sin, cache, layer);
  return h + mlp(post_attention_layernorm(h));
}

LlamaBackboneImpl::LlamaBackboneImpl(const LmConfig& config) {
  embed_tokens = register_module("embed_tokens", MakeLmEmbedding(config.vocab_size, config.hidden_size));
  layers = register_module("layers", torch::nn::ModuleList());
  for (int64_t i = 0; i < config.num_layers; ++i) layers->push_back(LlamaBlock(config, i));
  norm = register_module("norm", RmsNorm(config.hidden_size, config.norm_eps, config.norm_weight_offset));
}

LlamaImpl::LlamaImpl(const LmConfig& config) : CausalLmImpl(config) {
  model_ = register_module("model", LlamaBackbone(config));
  if (!config.tied_embeddings) lm_head_ = register_module("lm_head", LmLinear(config.hidden_size, config.vocab_size, false));
}

torch::Tensor LlamaImpl::forward(const torch::Tensor& ids, KvCache* cache) { return Head(Hidden(ids, cache)); }

torch::Tensor LlamaImpl::LastLogits(const torch::Tensor& ids, KvCache* cache) {
  return Head(Hidden(ids, cache).narrow(1, ids.size(1) - 1, 1)).select(1, 0);
}

torch::Tensor LlamaImpl::Hidden(const torch::Tensor& ids, KvCache* cache) {
  const int64_t past = cache ? cache->length : 0, steps = ids.size(1);
  torch::Tensor x = Embed(ids);  // [B, T, C]
  const auto [cos, sin] = RotaryTables(config_, torch::arange(past, past + steps, ids.options()),
                                       x.scalar_type() == torch::kFloat64 ? torch::kFloat64 : torch::kFloat32);
  for (size_t layer = 0; layer < model_->layers->size(); ++layer) {
    x = model_->layers[layer]->as<LlamaBlock>()->forward(x, cos, sin, cache, layer);
  }
  if (cache) cache->length += steps;
  return x;
}

torch::Tensor LlamaImpl::Embed(const torch::Tensor& ids) {
  const torch::Tensor x = packed_embedding ? PackedRows(ids, *packed_embedding) : model_->embed_tokens(ids);
  if (!config_.scale_embeddings) return x;
  // Gemma: times sqrt(hidden_size) rounded to the activations' dtype, as transformers does.
  return x * torch::tensor(std::sqrt(static_cast<double>(config_.hidden_size)), x.options());
}

torch::Tensor LlamaImpl::ForwardBlock(size_t layer, const torch::Tensor& x) {
  const auto [cos, sin] = RotaryTables(config_, torch::arange(x.size(1), torch::TensorOptions().device(x.device())),
                                       x.scalar_type() == torch::kFloat64 ? torch::kFloat64 : torch::kFloat32);
  return model_->layers[layer]->as<LlamaBlock>()->forward(x, cos, sin, nullptr, layer);
}

torch::Tensor LlamaImpl::Head(const torch::Tensor& x) {
  const torch::Tensor normalized = model_->norm(x);
  torch::Tensor logits;  // [B, T, V]
  if (lm_head_) {
    logits = lm_head_(normalized);
  } else {
    logits = packed_embedding ? PackedProduct(normalized, *packed_embedding)
                              : torch::matmul(normalized, model_->embed_tokens->weight.t());
  }
  if (config_.final_softcap > 0) logits = torch::tanh(logits / config_.final_softcap) * config_.final_softcap;
  return logits;
}

std::shared_ptr<torch::nn::Module> LlamaImpl::Block(size_t layer) { return model_->layers[layer]; }

}  // namespace atq
