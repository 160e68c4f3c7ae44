// Choosing GGUF types for quantized layers and measuring what the re-quantization costs.
#include "quant/lm_gguf_export.h"

#include <torch/torch.h>

#include "models/lm_loader.h"
#include "quant/lm_calibration.h"
#include "util/error.h"

namespace atq {

QuantType GgufTypeForGrid(const WeightGrid& grid) {
  if (grid.kind == GridKind::kQ8_0 || grid.kind == GridKind::kQ4_0) return StorageType(grid);
  if (grid.kind == GridKind::kTernary) return grid.base3_packing ? QuantType::kTQ1_0 : QuantType::kTQ2_0;
  return grid.bits <= 4 ? QuantType::kQ4_0 : QuantType::kQ8_0;
}

nlohmann::json LmGgufExport::ToJson() const {
  nlohmann::json tensors = nlohmann::json::array();
  for (const LmGgufTensorReport& tensor : report.tensors) {
    nlohmann::json row = {{"name", tensor.hf_name},
                          {"gguf_name", tensor.gguf_name},
                          {"requested", std::string(TypeName(tensor.requested))},
                          {"written", std::string(TypeName(tensor.written))},
                          {"bytes", tensor.bytes}};
    if (!tensor.fallback_reason.empty()) row["fallback"] = tensor.fallback_reason;
    for (const auto& [name, error] : requantization_error) {
      if (name == tensor.hf_name) row["requantization_error"] = error;
    }
    tensors.push_back(row);
  }
  return {{"file_bytes", report.file_bytes}, {"max_requantization_error", max_requantization_error}, {"tensors", tensors}};
}

LmGgufExport ExportQuantizedGguf(CausalLmImpl& model, const LmQuantizeOptions& options, const LmQuantizeResult& result,
                                 const std::string& tokenizer_dir, std::optional<QuantType> linear_type,
                                 QuantType embedding_type, const std::string& path) {
  LmGgufOptions gguf;
  gguf.embedding_type = embedding_type;
  gguf.linear_type = linear_type.value_or(GgufTypeForGrid(options.recipe.grid));
  if (options.recipe.keep && !linear_type) gguf.linear_type = QuantType::kF16;
  std::vector<std::string> quantized;
  for (const std::string& layer : QuantizableLayers(model)) {
    const auto it = options.layers.find(layer);
    const LayerRecipe& recipe = it != options.layers.end() ? it->second : options.recipe;
    if (recipe.keep) {
      gguf.overrides[layer + ".weight"] = QuantType::kF16;
      continue;
    }
    const std::string name = layer + ".weight";
    const QuantType type = linear_type.value_or(GgufTypeForGrid(recipe.grid));
    gguf.overrides[name] = type;
    const auto packed = result.packed.find(name);
    if (packed != result.packed.end() && packed->second.layout.type == type) {
      gguf.prepacked[name] = {type, packed->second.bytes};
    }
    quantized.push_back(name);
  }
  LmGgufExport out;
  out.report = WriteLmGguf(model, tokenizer_dir, gguf, path);
  LmLoadOptions load;
  load.tokenizer = path;
  const LanguageModel written = LoadLanguageModel(path, load);
  const auto ours = model.named_parameters();
  const auto theirs = written.model->named_parameters();
  torch::NoGradGuard no_grad;
  for (const std::string& name : quantized) {
    const torch::Tensor expected = ours[name].to(torch::kCPU, torch::kFloat64);
    const torch::Tensor got = theirs[name].to(torch::kFloat64);
    const double error = ((got - expected).pow(2).sum() / expected.pow(2).sum().clamp_min(1e-300)).item<double>();
    out.requantization_error.emplace_back(name, error);
    out.max_requantization_error = std::max(out.max_requantization_error, error);
  }
  return out;
}

}  // namespace atq
