// Attaching packed weights to a language model's linear layers and token embedding.
#include "runtime/packed_runtime.h"

#include <torch/torch.h>

#include <vector>

#include "formats/quant_type.h"
#include "models/lm_linear.h"
#include "util/error.h"

namespace atq {
namespace {

bool IsTokenEmbedding(const std::string& name) {
  return name == "model.embed_tokens" || name == "transformer.wte";
}

PackedWeights QuantizeWeight(const torch::Tensor& weight, QuantType type, Granularity granularity) {
  const torch::Tensor source = weight.detach().to(torch::kCPU).to(torch::kFloat32).contiguous();
  PackedWeights packed;
  packed.layout = {type, source.size(0), source.size(1), granularity, 0};
  packed.bytes = Quantize(packed.layout, source.data_ptr<float>());
  return packed;
}

void Release(torch::Tensor& weight) { weight.set_data(torch::empty({0}, weight.options())); }

}  // namespace

PackedRuntimeSizes RuntimeSizes(const CausalLmImpl& model) {
  PackedRuntimeSizes sizes;
  for (const auto& parameter : model.parameters()) sizes.float_bytes += parameter.numel() * parameter.element_size();
  if (model.packed_embedding) sizes.packed_bytes += static_cast<int64_t>(model.packed_embedding->size());
  for (const auto& item : model.named_modules()) {
    if (const auto* linear = item.value()->as<LmLinearImpl>(); linear && linear->packed) {
      // RPB's weights as stored: an int32 index and a float16 value each.
      sizes.packed_bytes += static_cast<int64_t>(linear->packed->size() + linear->packed->boosted_index.size() * 6);
    }
  }
  return sizes;
}

PackedRuntimeSizes PackForRuntime(CausalLmImpl& model, const PackedRuntimeOptions& options) {
  torch::NoGradGuard no_grad;
  for (const auto& item : model.named_modules()) {
    if (auto* linear = item.value()->as<LmLinearImpl>()) {
      if (linear->packed) continue;
      try {
        linear->packed = std::make_shared<PackedWeights>(QuantizeWeight(linear->weight, options.linear_type,
                                                                        options.granularity));
      } catch (const Error& error) {
        Fail("{}: {}", item.key(), error.what());
      }
      Release(linear->weight);
    } else if (auto* embedding = item.value()->as<torch::nn::EmbeddingImpl>();
               embedding && IsTokenEmbedding(item.key())) {
      model.packed_embedding = std::make_shared<PackedWeights>(
          QuantizeWeight(embedding->weight, options.embedding_type, options.granularity));
      Release(embedding->weight);
    }
  }
  return RuntimeSizes(model);
}

PackedRuntimeSizes AttachPackedWeights(CausalLmImpl& model, std::map<std::string, PackedWeights> weights) {
  for (const auto& item : model.named_modules()) {
    const std::string name = item.key() + ".weight";
    const auto found = weights.find(name);
    if (found == weights.end()) continue;
    PackedWeights& packed = found->second;
    CheckPackedMatrix(packed.view(), static_cast<int64_t>(packed.size()), name);
    if (auto* linear = item.value()->as<LmLinearImpl>()) {
      Require(packed.layout.rows == linear->weight.size(0) && packed.layout.cols == linear->weight.size(1),
              "{}: packed {}x{} does not match the layer's {}x{}", name, packed.layout.rows, packed.layout.cols,
              linear->weight.size(0), linear->weight.size(1));
      linear->packed = std::make_shared<PackedWeights>(std::move(packed));
      Release(linear->weight);
    } else if (auto* embedding = item.value()->as<torch::nn::EmbeddingImpl>(); embedding && IsTokenEmbedding(item.key())) {
      model.packed_embedding = std::make_shared<PackedWeights>(std::move(packed));
      Release(embedding->weight);
    } else if (auto* table = item.value()->as<torch::nn::EmbeddingImpl>(); table && IsFloatWeight(packed.layout.type)) {
      // Another table stored in f16/bf16 (GPT-2's positions): small, looked up by libtorch, so made float32.
      std::vector<float> values(static_cast<size_t>(packed.layout.rows * packed.layout.cols));
      for (int64_t row = 0; row < packed.layout.rows; ++row) {
        DequantizeRow(packed.view(), row, values.data() + row * packed.layout.cols);
      }
      table->weight.set_data(torch::from_blob(values.data(), {packed.layout.rows, packed.layout.cols}).clone());
    } else {
      Fail("{}: not a linear layer or token embedding, so it cannot run packed", name);
    }
    weights.erase(found);
  }
  Require(weights.empty(), "{}: no such layer in the model", weights.empty() ? "" : weights.begin()->first);
  return RuntimeSizes(model);
}

}  // namespace atq
