// Choosing GGUF types for quantized layers and measuring what the re-quantization costs.
#include "quant/lm_gguf_export.h"

#include <torch/torch.h>

#include "quant/lm_calibration.h"
#include "util/error.h"

namespace atq {

QuantType GgufTypeForGrid(const WeightGrid& grid) {
  if (IsGgmlGrid(grid.kind)) return StorageType(grid);
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
    if (tensor.weight_error >= 0) row["requantization_error"] = tensor.weight_error;
    tensors.push_back(row);
  }
  return {{"file_bytes", report.file_bytes}, {"max_requantization_error", max_requantization_error}, {"tensors", tensors}};
}

LmGgufExport::LmGgufExport(LmGgufReport written) : report(std::move(written)) {
  for (const LmGgufTensorReport& tensor : report.tensors) {
    if (tensor.gguf_name.rfind("blk.", 0) == 0 && tensor.weight_error >= 0) {
      max_requantization_error = std::max(max_requantization_error, tensor.weight_error);
    }
  }
}

LmGgufOptions QuantizedGgufOptions(CausalLmImpl& model, const LmQuantizeOptions& options,
                                   std::optional<QuantType> linear_type, QuantType embedding_type) {
  LmGgufOptions gguf;
  gguf.embedding_type = embedding_type;
  gguf.linear_type = linear_type.value_or(GgufTypeForGrid(options.recipe.grid));
  if (options.recipe.keep && !linear_type) gguf.linear_type = QuantType::kF16;
  for (const std::string& layer : QuantizableLayers(model)) {
    const auto it = options.layers.find(layer);
    const LayerRecipe& recipe = it != options.layers.end() ? it->second : options.recipe;
    gguf.overrides[layer + ".weight"] = recipe.keep ? QuantType::kF16 : linear_type.value_or(GgufTypeForGrid(recipe.grid));
  }
  return gguf;
}

LmGgufExport ExportQuantizedGguf(CausalLmImpl& model, const LmQuantizeOptions& options, const LmQuantizeResult& result,
                                 const std::string& tokenizer_dir, std::optional<QuantType> linear_type,
                                 QuantType embedding_type, const std::string& path) {
  const LmGgufOptions gguf = QuantizedGgufOptions(model, options, linear_type, embedding_type);
  return LmGgufExport(WriteLmGguf(model, tokenizer_dir, gguf, path, &result.packed));
}

}  // namespace atq
