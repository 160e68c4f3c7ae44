// KV cache, shared attention, and the architecture factory.
#include "models/causal_lm.h"

#include <cmath>
#include <unordered_map>

#include <torch/torch.h>

#include "models/gpt2.h"
#include "models/llama.h"

namespace atq {

std::pair<torch::Tensor, torch::Tensor> KvCache::Append(size_t layer, const torch::Tensor& new_keys,
                                                        const torch::Tensor& new_values) {
  if (keys.size() <= layer) {
    keys.resize(layer + 1);
    values.resize(layer + 1);
  }
  keys[layer] = keys[layer].defined() ? torch::cat({keys[layer], new_keys}, 2) : new_keys;
  values[layer] = values[layer].defined() ? torch::cat({values[layer], new_values}, 2) : new_values;
  return {keys[layer], values[layer]};
}

torch::Tensor AtLeastFloat32(const torch::Tensor& x) {
  const auto type = x.scalar_type();
  return type == torch::kFloat32 || type == torch::kFloat64 ? x : x.to(torch::kFloat32);
}

torch::Tensor CausalAttention(const torch::Tensor& query, const torch::Tensor& keys, const torch::Tensor& values,
                              int64_t past, const AttentionOptions& options) {
  const int64_t heads = query.size(1), kv_heads = keys.size(1), steps = query.size(2), total = keys.size(2);
  torch::Tensor k = keys, v = values;
  if (heads != kv_heads) {  // grouped-query: KV head j serves query heads j*r .. j*r+r-1
    k = k.repeat_interleave(heads / kv_heads, 1);
    v = v.repeat_interleave(heads / kv_heads, 1);
  }
  const double scale = options.scale > 0 ? options.scale : 1.0 / std::sqrt(static_cast<double>(query.size(3)));
  torch::Tensor scores = AtLeastFloat32(torch::matmul(query, k.transpose(-2, -1))) * scale;  // [B, H, T, S]
  if (options.softcap > 0) scores = torch::tanh(scores / options.softcap) * options.softcap;
  if (steps > 1 || options.window > 0) {
    // Query t (absolute position past + t) sees keys past + t - window < j <= past + t.
    const auto long_options = torch::TensorOptions().dtype(torch::kInt64).device(query.device());
    const torch::Tensor query_position = torch::arange(past, past + steps, long_options).unsqueeze(1);  // [T, 1]
    const torch::Tensor key_position = torch::arange(total, long_options).unsqueeze(0);                 // [1, S]
    torch::Tensor hidden = key_position > query_position;
    if (options.window > 0) hidden = hidden.logical_or(key_position <= query_position - options.window);
    scores = scores.masked_fill(hidden, -std::numeric_limits<float>::infinity());
  }
  return torch::matmul(torch::softmax(scores, -1).to(v.scalar_type()), v);
}

std::vector<std::vector<std::string>> ParameterGroups(CausalLmImpl& model) {
  const int64_t blocks = model.config().num_layers;
  std::unordered_map<const c10::TensorImpl*, int64_t> block_of;
  for (int64_t b = 0; b < blocks; ++b) {
    for (const torch::Tensor& parameter : model.Block(static_cast<size_t>(b))->parameters()) {
      block_of.emplace(parameter.unsafeGetTensorImpl(), b);
    }
  }
  std::vector<std::vector<std::string>> groups(static_cast<size_t>(blocks) + 1);
  for (const auto& parameter : model.named_parameters()) {
    const auto it = block_of.find(parameter.value().unsafeGetTensorImpl());
    groups[it != block_of.end() ? static_cast<size_t>(it->second) : groups.size() - 1].push_back(parameter.key());
  }
  return groups;
}

std::vector<LmTensorData> GroupData(CausalLmImpl& model, const std::vector<std::string>& group,
                                    const std::map<std::string, PackedWeights>* packed) {
  const auto parameters = model.named_parameters();
  std::vector<LmTensorData> out;
  for (const std::string& name : group) {
    const PackedWeights* bytes = nullptr;
    if (packed != nullptr) {
      if (const auto it = packed->find(name); it != packed->end()) bytes = &it->second;
    }
    out.push_back({name, parameters[name], bytes});
  }
  return out;
}

std::shared_ptr<CausalLmImpl> MakeCausalLm(const LmConfig& config) {
  ValidateLmConfig(config, "model config");
  std::shared_ptr<CausalLmImpl> model;
  if (config.arch == LmArch::kGpt2) {
    model = std::make_shared<Gpt2Impl>(config);
  } else {
    model = std::make_shared<LlamaImpl>(config);
  }
  torch::NoGradGuard no_grad;
  for (const auto& module : model->modules()) {
    if (auto* embedding = module->as<torch::nn::Embedding>(); embedding && !PlaceholderLmWeights::active()) {
      embedding->weight.normal_(0, 0.02);
    }
  }
  return model;
}

}  // namespace atq
