// WritePackedModule and ReadPackedModule through the format table's t2 / t1.6 rows.
#include "models/packed_module.h"

#include <memory>
#include <set>
#include <vector>

#include <nlohmann/json.hpp>
#include <torch/torch.h>

#include "formats/atq_packed.h"
#include "grid/fake_quant.h"
#include "io/strict_json.h"
#include "models/quant_layers.h"
#include "torch/tensor_bridge.h"
#include "util/error.h"

namespace atq {
namespace {

constexpr const char* kPackedKeyPrefix = "atq.packed.";

// Owns the bytes of every tensor until the file is written.
struct PendingTensors {
  std::vector<std::vector<uint8_t>> buffers;
  std::vector<TensorToWrite> tensors;

  void Add(const std::string& name, QuantType type, std::vector<int64_t> shape, std::vector<uint8_t> bytes) {
    buffers.push_back(std::move(bytes));
    tensors.push_back({name, type, std::move(shape), buffers.back().data(), buffers.back().size()});
  }
  void AddTensor(const std::string& name, const torch::Tensor& tensor, QuantType type) {
    Add(name, type, std::vector<int64_t>(tensor.sizes().begin(), tensor.sizes().end()), FromTorch(tensor, type));
  }
};

// The sparse [rows, cols] correction that turns the packed values at `index` (flat positions) into `value`.
torch::Tensor BoostedResidual(const PackedWeights& packed, const torch::Tensor& index, const torch::Tensor& value) {
  const int64_t cols = packed.layout.cols;
  const torch::Tensor rows = index.div(cols, "floor").contiguous(), columns = index.remainder(cols).contiguous();
  torch::Tensor delta = value.to(torch::kFloat32).contiguous().clone();
  std::vector<float> row_values(static_cast<size_t>(cols));
  int64_t decoded = -1;
  for (int64_t i = 0; i < index.numel(); ++i) {  // (export writes the positions in order: each row decoded once)
    const int64_t row = rows.data_ptr<int64_t>()[i];
    if (row != decoded) DequantizeRow(packed.view(), decoded = row, row_values.data());
    delta.data_ptr<float>()[i] -= row_values[static_cast<size_t>(columns.data_ptr<int64_t>()[i])];
  }
  return torch::sparse_coo_tensor(torch::stack({rows, columns}), delta, {packed.layout.rows, cols}).coalesce();
}

}  // namespace

int64_t WritePackedModule(torch::nn::Module& module, const NamedQuantLayers& layers, QuantType type,
                          const std::map<std::string, std::string>& metadata_in, const std::string& path) {
  Require(type == QuantType::kTernary2 || type == QuantType::kTernary1_6,
          "{}: packed models are ternary: use t2 or t1.6, not {}", path, TypeName(type));
  Require(metadata_in.count(kPackedFormatKey) == 1, "{}: packed file without a format name", path);
  std::map<std::string, std::string> metadata = metadata_in;
  torch::NoGradGuard no_grad;
  PendingTensors pending;
  std::set<std::string> packed_names;
  for (const auto& [name, layer] : layers) {
    const LayerQuantConfig& config = layer->quant_config();
    if (config.mode() != WeightMode::kTernary) continue;
    const torch::Tensor weight = layer->FloatWeight().to(torch::kCPU).to(torch::kFloat32).contiguous();
    // The layer's own quantization, stored in the requested ternary packing: the codes and scales it trained with.
    LayerQuantConfig storage = config;
    storage.grid.base3_packing = type == QuantType::kTernary1_6;
    const LayerQuantization ternary = QuantizeLayer(weight, storage);
    std::vector<uint8_t> packed = PackQuantized(ternary.packed);
    const std::string weight_name = name + ".weight";
    const int64_t packed_size = static_cast<int64_t>(packed.size());
    pending.Add(weight_name, QuantType::kU8, {packed_size}, std::move(packed));
    metadata[kPackedKeyPrefix + weight_name] =
        nlohmann::json{{"type", TypeName(type)},
                       {"shape", std::vector<int64_t>(weight.sizes().begin(), weight.sizes().end())},
                       {"granularity", GranularityString(ternary.packed.layout)}}
            .dump();
    const torch::Tensor boosted_index = ternary.boosted.reshape({-1}).nonzero().reshape({-1});
    if (boosted_index.numel() > 0) {
      pending.AddTensor(weight_name + ".rpb_index", boosted_index.to(torch::kInt32), QuantType::kI32);
      pending.AddTensor(weight_name + ".rpb_value", weight.reshape({-1}).index_select(0, boosted_index),
                        QuantType::kF16);
    }
    packed_names.insert(weight_name);
  }
  Require(!packed_names.empty(), "{}: the model has no ternary layers to pack (train with --mode ternary)", path);
  for (const auto& parameter : module.named_parameters()) {
    if (packed_names.count(parameter.key()) == 0) {
      pending.AddTensor(parameter.key(), parameter.value().detach().to(torch::kFloat32), QuantType::kF32);
    }
  }
  for (const auto& buffer : module.named_buffers()) {
    pending.AddTensor(buffer.key(), buffer.value().to(torch::kFloat32), QuantType::kF32);
  }
  WriteSafetensors(path, pending.tensors, metadata);
  return static_cast<int64_t>(SafetensorsFile::Open(path).file_size());
}

std::string PackedFormatOf(const std::string& path) {
  try {
    const SafetensorsFile file = SafetensorsFile::Open(path);
    const auto format = file.metadata().find(kPackedFormatKey);
    return format != file.metadata().end() ? format->second : std::string();
  } catch (const Error&) {
    return {};
  }
}

int64_t WritePackedModel(torch::nn::Module& module, const NamedQuantLayers& layers, QuantType type,
                         const std::string& format, nlohmann::json config, const nlohmann::json& extra,
                         const std::string& path) {
  if (extra.is_object()) {
    for (const auto& [key, value] : extra.items()) config[key] = value;
  }
  return WritePackedModule(module, layers, type, {{kPackedFormatKey, format}, {kPackedConfigKey, config.dump()}},
                           path);
}

nlohmann::json ReadPackedConfig(const SafetensorsFile& file, const std::string& path, const std::string& format) {
  const auto& metadata = file.metadata();
  const auto name = metadata.find(kPackedFormatKey);
  Require(name != metadata.end() && name->second == format, "{}: not a packed file of format \"{}\" ({} is {})", path,
          format, kPackedFormatKey, name == metadata.end() ? std::string("missing") : "\"" + name->second + "\"");
  const auto config = metadata.find(kPackedConfigKey);
  Require(config != metadata.end(), "{}: metadata '{}' missing", path, kPackedConfigKey);
  return ParseStrictJson(config->second, fmt::format("{}: metadata '{}'", path, kPackedConfigKey));
}

void ReadPackedModule(const SafetensorsFile& file, const std::string& path, torch::nn::Module& module,
                      const NamedQuantLayers& named_layers, PackedRun run) {
  const auto& metadata = file.metadata();
  torch::NoGradGuard no_grad;
  std::map<std::string, QuantizableLayer*> layers;
  for (const auto& [name, layer] : named_layers) layers[name + ".weight"] = layer;

  const auto tensor_of = [&](const std::string& name) -> torch::Tensor {
    const TensorInfo* info = file.Find(name);
    Require(info != nullptr, "{}: tensor '{}' missing", path, name);
    return ToTorch(*info, file.Data(*info));
  };
  const auto assign = [&](torch::Tensor& target, const torch::Tensor& value, const std::string& name) {
    Require(target.sizes() == value.sizes(), "{}: tensor '{}' has shape {}, the model needs {}", path, name,
            ShapeString(std::vector<int64_t>(value.sizes().begin(), value.sizes().end())),
            ShapeString(std::vector<int64_t>(target.sizes().begin(), target.sizes().end())));
    target.copy_(value.to(target.dtype()));
  };
  for (auto& parameter : module.named_parameters()) {
    const std::string& name = parameter.key();
    const auto packed_entry = metadata.find(kPackedKeyPrefix + name);
    if (packed_entry == metadata.end()) {
      assign(parameter.value(), tensor_of(name), name);
      continue;
    }
    const nlohmann::json description =
        ParseStrictJson(packed_entry->second, fmt::format("{}: metadata '{}{}'", path, kPackedKeyPrefix, name));
    Require(description.is_object() && description.contains("type") && description.contains("shape") &&
                description.contains("granularity"),
            "{}: metadata for '{}' must be an object with type, shape and granularity", path, name);
    const auto type = ParseQuantType(description["type"].get<std::string>());
    Require(type && (*type == QuantType::kTernary2 || *type == QuantType::kTernary1_6),
            "{}: tensor '{}' has packed type {}, expected t2 or t1.6", path, name, description["type"].dump());
    const std::vector<int64_t> shape = description["shape"].get<std::vector<int64_t>>();
    CheckedElementCount(shape, path + " " + name);
    Layout layout = LayoutForShape(*type, shape);
    layout.granularity = description["granularity"] == "channel" ? Granularity::kChannel : Granularity::kTensor;
    const TensorInfo* info = file.Find(name);
    Require(info != nullptr, "{}: tensor '{}' missing", path, name);
    const auto layer = layers.find(name);
    Require(layer != layers.end(), "{}: packed tensor '{}' is not the weight of a layer", path, name);
    Require(parameter.value().sizes() == torch::IntArrayRef(shape), "{}: tensor '{}' has shape {}, the model needs {}",
            path, name, ShapeString(shape), ShapeString(parameter.value().sizes().vec()));
    auto packed = std::make_shared<PackedLayerWeights>();
    packed->weights.layout = layout;
    const uint8_t* bytes = file.Data(*info);
    packed->weights.bytes.assign(bytes, bytes + info->nbytes);
    CheckPackedMatrix(packed->weights.view(), static_cast<int64_t>(info->nbytes), path + " " + name);
    torch::Tensor boosted_index, boosted_value;
    if (file.Find(name + ".rpb_index") != nullptr) {
      boosted_index = tensor_of(name + ".rpb_index").to(torch::kLong);
      boosted_value = tensor_of(name + ".rpb_value").to(torch::kFloat32);
      Require(boosted_index.dim() == 1 && boosted_value.sizes() == boosted_index.sizes(),
              "{}: RPB tensors of '{}' disagree in shape", path, name);
      Require(boosted_index.numel() == 0 || (boosted_index.min().item<int64_t>() >= 0 &&
                                             boosted_index.max().item<int64_t>() < layout.rows * layout.cols),
              "{}: RPB index of '{}' out of range", path, name);
      packed->residual = BoostedResidual(packed->weights, boosted_index, boosted_value);
    }
    auto* quant_layer = dynamic_cast<QuantWeightLayer*>(layer->second);
    Require(quant_layer != nullptr, "{}: layer of '{}' cannot run packed", path, name);
    quant_layer->AttachPacked(std::move(packed), run);
    LayerQuantConfig config;
    config.quantized = true;
    config.grid.kind = GridKind::kTernary;
    config.grid.granularity = layout.granularity;
    config.grid.group_size = layout.group_size;
    config.grid.base3_packing = layout.type == QuantType::kTernary1_6;
    quant_layer->SetQuantConfig(config);
  }
  for (auto& buffer : module.named_buffers()) assign(buffer.value(), tensor_of(buffer.key()), buffer.key());
}

}  // namespace atq
