// CountClassifierWork and RecipeBits.
#include "eval/classifier_work.h"

#include <torch/torch.h>

#include <map>
#include <string>

#include "models/quant_layers.h"
#include "util/error.h"
#include "util/strings.h"

namespace atq {
namespace {

int64_t Product(const std::vector<int64_t>& shape) {
  int64_t n = 1;
  for (const int64_t d : shape) n *= d;
  return n;
}

}  // namespace

std::vector<LayerWork> CountClassifierWork(ClassifierModule& model, int64_t channels, int64_t image_size) {
  return CountModuleWork(model, model.QuantLayers(),
                         [&] { model.forward(torch::zeros({1, channels, image_size, image_size})); });
}

std::vector<LayerWork> CountModuleWork(torch::nn::Module& model, const NamedQuantLayers& layers,
                                       const std::function<void()>& forward) {
  const bool training = model.is_training();
  model.eval();
  {
    torch::NoGradGuard no_grad;
    forward();
  }
  model.train(training);
  std::vector<LayerWork> work;
  for (const auto& [name, interface] : layers) {
    auto* layer = dynamic_cast<QuantWeightLayer*>(interface);
    Require(layer != nullptr, "energy: layer '{}' is not a QuantWeightLayer", name);
    const std::vector<int64_t>& input = layer->input_quant->last_shape();
    Require(!input.empty(), "energy: layer '{}' saw no input in a forward pass", name);
    LayerWork row{name, 0, layer->weight.numel(), Product(input), 0, MacOperands::kWeightTimesActivation};
    const int64_t out = layer->weight.size(0), fan_in = layer->weight.numel() / out;
    if (auto* conv = dynamic_cast<QuantConv2dImpl*>(layer)) {  // input [1, in, H, W]
      const auto side = [&](int64_t size) { return (size + 2 * conv->padding() - conv->kernel_size()) / conv->stride() + 1; };
      row.outputs = out * side(input[2]) * side(input[3]);
    } else {  // input [..., in]
      row.outputs = row.inputs / input.back() * out;
    }
    row.macs = row.outputs * fan_in;
    work.push_back(row);
  }
  for (const auto& item : model.named_modules(/*name_prefix=*/"", /*include_self=*/false)) {
    auto* query = item.value()->as<ActivationQuantizerImpl>();
    if (query == nullptr || !EndsWith(item.key(), ".query_quant") || query->last_shape().size() != 4) continue;
    const std::string attention = item.key().substr(0, item.key().size() - std::string(".query_quant").size());
    const std::vector<int64_t>& shape = query->last_shape();  // [1, heads, T, head_dim]
    const int64_t heads = shape[1], tokens = shape[2], head_dim = shape[3];
    const int64_t scores = heads * tokens * tokens, vectors = heads * tokens * head_dim;
    work.push_back({attention + ".scores", scores * head_dim, 0, 2 * vectors, scores,
                    MacOperands::kActivationTimesActivation});
    work.push_back({attention + ".context", scores * head_dim, 0, scores + vectors, vectors,
                    MacOperands::kActivationTimesActivation});
  }
  return work;
}

std::vector<LayerBits> RecipeBits(const std::vector<LayerWork>& work, const VisionPtqReport& report,
                                  int attention_bits) {
  std::map<std::string, LayerBitWidths> by_name;
  for (const VisionLayerReport& layer : report.layers) by_name[layer.name] = layer.bits;
  std::vector<LayerBits> bits;
  for (const LayerWork& layer : work) {
    if (layer.operands == MacOperands::kActivationTimesActivation) {
      bits.push_back({kFloatBits, attention_bits});
      continue;
    }
    const auto found = by_name.find(layer.name);
    Require(found != by_name.end(), "energy: weight layer '{}' is missing from the quantization report", layer.name);
    bits.push_back({found->second.ternary ? 2 : found->second.weights, found->second.activations});
  }
  return bits;
}

}  // namespace atq
