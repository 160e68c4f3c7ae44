// Writing atq's packed language-model folder.
#include "quant/packed_lm.h"

#include <filesystem>

#include <torch/torch.h>

#include "io/atomic_file.h"
#include "io/safetensors.h"
#include "io/tensor_file.h"
#include "models/lm_hf_writer.h"
#include "models/lm_loader.h"
#include "torch/tensor_bridge.h"
#include "util/error.h"

namespace atq {
namespace fs = std::filesystem;
PackedLmSizes SavePackedLm(const CausalLmImpl& model, const std::map<std::string, PackedTensor>& packed,
                           const std::string& dir, const PackedLmOptions& options) {
  Require(options.float_type == QuantType::kF16 || options.float_type == QuantType::kBF16 ||
              options.float_type == QuantType::kF32,
          "{}: unquantized tensors are stored as f16, bf16 or f32, not {}", dir, TypeName(options.float_type));
  const auto tensors = HuggingFaceTensors(model);
  std::map<std::string, std::string> metadata = {{"format", "pt"},
                                                 {"atq.format", std::string(kPackedLmFormat)},
                                                 {"atq.recipe", options.recipe.dump()},
                                                 {"atq.report", options.report.dump()}};
  std::vector<std::vector<uint8_t>> float_bytes;  // owned here until written
  float_bytes.reserve(tensors.size());
  std::vector<TensorToWrite> to_write;
  PackedLmSizes sizes;
  for (const auto& [name, value] : tensors) {
    const auto it = packed.find(name);
    if (it != packed.end()) {
      const PackedTensor& tensor = it->second;
      Require(tensor.layout.rows * tensor.layout.cols == value.numel(),
              "{}: packed tensor '{}' holds {}x{} weights, the model's has {}", dir, name, tensor.layout.rows,
              tensor.layout.cols, value.numel());
      const nlohmann::json description = {{"type", std::string(TypeName(tensor.layout.type))},
                                          {"shape", {tensor.layout.rows, tensor.layout.cols}},
                                          {"granularity", GranularityString(tensor.layout)}};
      metadata[std::string(kPackedKeyPrefix) + name] = description.dump();
      to_write.push_back({name, QuantType::kU8, {static_cast<int64_t>(tensor.bytes.size())}, tensor.bytes.data(),
                          tensor.bytes.size()});
      sizes.packed_bytes += static_cast<int64_t>(tensor.bytes.size());
      continue;
    }
    float_bytes.push_back(FromTorch(value, options.float_type));
    to_write.push_back({name, options.float_type, value.sizes().vec(), float_bytes.back().data(),
                        float_bytes.back().size()});
    sizes.float_bytes += static_cast<int64_t>(float_bytes.back().size());
  }
  for (const auto& [name, tensor] : packed) {
    Require(std::any_of(tensors.begin(), tensors.end(), [&](const auto& t) { return t.first == name; }),
            "{}: packed tensor '{}' is not a parameter of the model", dir, name);
  }
  fs::create_directories(dir);
  const std::string weights = (fs::path(dir) / "model.safetensors").string();
  WriteSafetensors(weights, to_write, metadata);
  WriteFileAtomically((fs::path(dir) / "config.json").string(), HfConfigJson(model.config()).dump(2) + "\n");
  if (!options.tokenizer_dir.empty()) CopyTokenizerFiles(options.tokenizer_dir, dir);
  sizes.file_bytes = static_cast<int64_t>(fs::file_size(weights));
  return sizes;
}

}  // namespace atq
