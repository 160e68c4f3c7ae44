// Saving and loading classifier checkpoints by tensor name, with the configuration that rebuilds the model.
#include "models/classifier_checkpoint.h"

#include <algorithm>

#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <set>
#include <system_error>

#include <fmt/format.h>
#include <fmt/ranges.h>
#include <nlohmann/json.hpp>
#include <torch/torch.h>

#include "io/atomic_file.h"
#include "io/safetensors.h"
#include "data/datasets.h"
#include "io/idx.h"
#include "models/classifiers.h"
#include "torch/tensor_bridge.h"
#include "util/error.h"
#include "io/strict_json.h"

namespace atq {
namespace {

constexpr const char* kWeightsFile = "model.safetensors";
constexpr const char* kConfigFile = "config.json";
constexpr int kConfigFormatVersion = 1;

// Every parameter and buffer by its torch name, in registration order.
std::vector<std::pair<std::string, torch::Tensor>> NamedTensors(torch::nn::Module& module) {
  std::vector<std::pair<std::string, torch::Tensor>> tensors;
  for (const auto& item : module.named_parameters(/*recurse=*/true)) tensors.emplace_back(item.key(), item.value());
  for (const auto& item : module.named_buffers(/*recurse=*/true)) tensors.emplace_back(item.key(), item.value());
  return tensors;
}

// MakeClassifier for `config` with the per-layer quantization of `config.layers`, which must name every
// quantizable layer in order; an empty list (allowed unless layers_required) leaves them full precision.
// `what` names the configuration's source in errors.
std::shared_ptr<ClassifierModule> BuildConfiguredClassifier(const ClassifierConfig& config, const std::string& what,
                                                            bool layers_required) {
  std::shared_ptr<ClassifierModule> model;
  try {
    model = MakeClassifier(config.model, config.in_channels, config.classes, config.image_size, config.patch_size);
  } catch (const Error& error) {
    Fail("{}: {}", what, error.what());
  }
  if (config.layers.empty() && !layers_required) return model;
  const auto layers = model->QuantLayers();
  if (layers.size() != config.layers.size()) {
    Fail("{}: {} layer configs, the {} model has {} quantizable layers", what, config.layers.size(), config.model,
         layers.size());
  }
  for (size_t i = 0; i < layers.size(); ++i) {
    if (layers[i].first != config.layers[i].first) {
      Fail("{}: layer {} is '{}', the {} model's is '{}'", what, i, config.layers[i].first, config.model,
           layers[i].first);
    }
    layers[i].second->SetQuantConfig(config.layers[i].second);
  }
  return model;
}

}  // namespace

nlohmann::json LayerQuantConfigToJson(const LayerQuantConfig& config) {
  Layout layout;
  layout.granularity = config.grid.granularity;
  layout.group_size = config.grid.group_size;
  return {{"mode", WeightModeName(config.mode())},
          {"bits", config.grid.bits},
          {"symmetric", config.grid.symmetric},
          {"threshold_mode", ThresholdRuleName(config.grid.threshold_rule)},
          {"threshold_value", config.grid.threshold_value},
          {"granularity", GranularityString(layout)},
          {"rpb_fraction", config.rpb_fraction}};
}

LayerQuantConfig LayerQuantConfigFromJson(const nlohmann::json& json, const std::string& what) {
  try {
    LayerQuantConfig config;
    const WeightMode mode = ParseWeightMode(json.at("mode").get<std::string>());
    config.quantized = mode != WeightMode::kFull;
    WeightGrid& grid = config.grid;
    grid.kind = mode == WeightMode::kUniform ? GridKind::kUniform : GridKind::kTernary;
    grid.bits = json.at("bits").get<int>();
    grid.symmetric = json.value("symmetric", true);
    const std::string rule = json.at("threshold_mode").get<std::string>();
    const auto parsed = ParseThresholdRule(rule);
    Require(parsed.has_value(), "unknown threshold mode '{}' (sparsity, ratio, magnitude)", rule);
    grid.threshold_rule = *parsed;
    if (json.contains("threshold_value")) {
      grid.threshold_value = json.at("threshold_value").get<double>();
    } else {  // written before the grid core: separate sparsity and magnitude fields
      grid.threshold_value = json.at(grid.threshold_rule == ThresholdRule::kSparsity ? "sparsity" : "magnitude").get<double>();
    }
    if (json.contains("granularity")) {
      Layout layout;
      const std::string granularity = json.at("granularity").get<std::string>();
      Require(ParseGranularity(granularity, layout), "unknown granularity '{}' (tensor, channel, group:<N>)",
              granularity);
      grid.granularity = layout.granularity;
      grid.group_size = layout.group_size;
    } else {
      grid.granularity = json.at("per_channel").get<bool>() ? Granularity::kChannel : Granularity::kTensor;
    }
    config.rpb_fraction = json.at("rpb_fraction").get<double>();
    ValidateLayerConfig(config);
    return config;
  } catch (const nlohmann::json::exception& error) {
    Fail("{}: bad layer quantization config: {}", what, error.what());
  } catch (const Error& error) {
    Fail("{}: {}", what, error.what());
  }
}

nlohmann::json ClassifierConfigToJson(const ClassifierConfig& config) {
  nlohmann::json layers = nlohmann::json::array();
  for (const auto& [name, layer] : config.layers) {
    nlohmann::json entry = LayerQuantConfigToJson(layer);
    entry["name"] = name;
    layers.push_back(std::move(entry));
  }
  return {{"format_version", kConfigFormatVersion},
          {"model", config.model},
          {"in_channels", config.in_channels},
          {"classes", config.classes},
          {"image_size", config.image_size},
          {"patch_size", config.patch_size},
          {"dataset", config.dataset},
          {"normalization", {{"mean", config.normalization.mean}, {"std", config.normalization.std}}},
          {"layers", std::move(layers)}};
}

ClassifierConfig ClassifierConfigFromJson(const nlohmann::json& json, const std::string& what) {
  ClassifierConfig config;
  try {
    const int version = json.at("format_version").get<int>();
    Require(version == kConfigFormatVersion, "config format version {} (this atq reads {})", version,
            kConfigFormatVersion);
    config.model = json.at("model").get<std::string>();
    config.in_channels = json.at("in_channels").get<int64_t>();
    config.classes = json.at("classes").get<int64_t>();
    config.image_size = json.at("image_size").get<int64_t>();
    config.patch_size = json.value("patch_size", config.patch_size);
    config.dataset = json.at("dataset").get<std::string>();
    config.normalization.mean = json.at("normalization").at("mean").get<double>();
    config.normalization.std = json.at("normalization").at("std").get<double>();
    for (const nlohmann::json& entry : json.value("layers", nlohmann::json::array())) {
      const std::string name = entry.at("name").get<std::string>();
      config.layers.emplace_back(name, LayerQuantConfigFromJson(entry, fmt::format("layer '{}'", name)));
    }
  } catch (const nlohmann::json::exception& error) {
    Fail("{}: bad classifier config: {}", what, error.what());
  } catch (const Error& error) {
    Fail("{}: {}", what, error.what());
  }
  Require(config.in_channels > 0 && config.classes > 0 && config.image_size > 0 && config.patch_size > 0,
          "{}: in_channels, classes, image_size and patch_size must be positive", what);
  Require(config.image_size <= kMaxImageSize && config.patch_size <= config.image_size &&
              config.in_channels <= kMaxInChannels && config.classes <= kMaxClasses,
          "{}: image_size {} (at most {}), patch_size {} (at most image_size), in_channels {} (at most {}) or "
          "classes {} (at most {}) out of range",
          what, config.image_size, kMaxImageSize, config.patch_size, config.in_channels, kMaxInChannels,
          config.classes, kMaxClasses);
  Require(config.normalization.std > 0, "{}: normalization std must be positive", what);
  return config;
}

ClassifierConfig ReadClassifierConfig(const std::string& json_path) {
  return ClassifierConfigFromJson(ReadStrictJsonFile(json_path), json_path);
}

void SaveModuleFolder(const std::string& dir, torch::nn::Module& model, nlohmann::json config,
                      const nlohmann::json& extra) {
  std::error_code error;
  std::filesystem::create_directories(dir, error);
  Require(!error, "{}: cannot create folder: {}", dir, error.message());
  if (extra.is_object()) {
    for (const auto& [key, value] : extra.items()) config[key] = value;
  }
  const std::filesystem::path folder(dir);
  SaveModuleTensors(model, (folder / "model.safetensors").string(),
                    {{"format", "pt"}, {"atq_model", config.value("model", std::string())}});
  WriteFileAtomically((folder / "config.json").string(), config.dump(2) + "\n");
}

nlohmann::json LayerConfigsToJson(const NamedQuantLayers& layers) {
  nlohmann::json json = nlohmann::json::object();
  for (const auto& [name, layer] : layers) json[name] = LayerQuantConfigToJson(layer->quant_config());
  return json;
}

void ApplyLayerConfigsJson(const nlohmann::json& json, const NamedQuantLayers& layers, const std::string& what) {
  Require(json.is_object(), "{}: \"layers\" must be an object of layer configurations", what);
  for (const auto& [name, value] : json.items()) {
    const auto found =
        std::find_if(layers.begin(), layers.end(), [&](const auto& entry) { return entry.first == name; });
    Require(found != layers.end(), "{}: layer '{}' is not a layer of the model", what, name);
    found->second->SetQuantConfig(LayerQuantConfigFromJson(value, what + " layer " + name));
  }
}

std::vector<std::pair<std::string, LayerQuantConfig>> CurrentLayerConfigs(ClassifierModule& model) {
  std::vector<std::pair<std::string, LayerQuantConfig>> configs;
  for (const auto& [name, layer] : model.QuantLayers()) configs.emplace_back(name, layer->quant_config());
  return configs;
}

void SaveClassifier(const std::string& dir, ClassifierModule& model, const ClassifierConfig& config,
                    const nlohmann::json* extra) {
  std::error_code error;
  std::filesystem::create_directories(dir, error);
  if (error) Fail("{}: cannot create folder: {}", dir, error.message());

  ClassifierConfig saved = config;
  saved.layers = CurrentLayerConfigs(model);
  nlohmann::json config_json = ClassifierConfigToJson(saved);
  if (extra != nullptr && extra->is_object()) {
    for (const auto& [key, value] : extra->items()) config_json[key] = value;
  }

  const std::map<std::string, std::string> metadata = {
      {"format", "pt"}, {"atq_model", config.model}, {"atq_config", config_json.dump()}};
  const std::filesystem::path folder(dir);
  SaveModuleTensors(model, (folder / kWeightsFile).string(), metadata);
  WriteFileAtomically((folder / kConfigFile).string(), config_json.dump(2) + "\n");
}

void SaveModuleTensors(torch::nn::Module& model, const std::string& path,
                       const std::map<std::string, std::string>& metadata) {
  // f32 copies kept alive until written; integer buffers (num_batches_tracked) too, as the fixtures store them.
  std::vector<torch::Tensor> copies;
  std::vector<TensorToWrite> tensors;
  for (const auto& [name, tensor] : NamedTensors(model)) {
    if (!tensor.defined()) continue;
    torch::Tensor copy = tensor.detach().to(torch::kCPU).to(torch::kFloat32).contiguous();
    TensorToWrite entry;
    entry.name = name;
    entry.type = QuantType::kF32;
    entry.shape.assign(copy.sizes().begin(), copy.sizes().end());
    entry.data = static_cast<const uint8_t*>(copy.data_ptr());
    entry.nbytes = static_cast<uint64_t>(copy.numel()) * sizeof(float);
    tensors.push_back(std::move(entry));
    copies.push_back(std::move(copy));
  }
  WriteSafetensors(path, tensors, metadata);
}

void LoadModuleTensors(torch::nn::Module& model, const std::string& safetensors_path) {
  const SafetensorsFile file = SafetensorsFile::Open(safetensors_path);
  torch::NoGradGuard no_grad;
  std::set<std::string> used;
  for (auto& [name, tensor] : NamedTensors(model)) {
    if (!tensor.defined()) continue;
    const TensorInfo* info = file.Find(name);
    if (info == nullptr) Fail("{}: missing tensor '{}' that the model needs", safetensors_path, name);
    const std::vector<int64_t> expected(tensor.sizes().begin(), tensor.sizes().end());
    if (info->shape != expected) {
      Fail("{}: tensor '{}' has shape {}, the model's is {}", safetensors_path, name, ShapeString(info->shape),
           ShapeString(expected));
    }
    if (tensor.is_floating_point()) RequireFloatStorage(*info, safetensors_path);
    const torch::Tensor value = ToTorch(*info, file.Data(*info)).to(tensor.dtype());
    RequireFinite(value, name, safetensors_path);
    tensor.copy_(value);
    used.insert(name);
  }
  for (const TensorInfo& info : file.tensors()) {
    if (used.count(info.name) == 0) {
      Fail("{}: tensor '{}' belongs to no parameter or buffer of the model", safetensors_path, info.name);
    }
  }
}

void LoadClassifierWeights(ClassifierModule& model, const std::string& safetensors_path) {
  LoadModuleTensors(model, safetensors_path);
}

LoadedClassifier RandomClassifier(const std::string& arch, int64_t image_size, const LayerQuantConfig& config,
                                  uint64_t seed) {
  torch::manual_seed(seed);
  LoadedClassifier loaded;
  loaded.config.model = arch;
  loaded.config.image_size = image_size;
  loaded.config.dataset = "fashion_mnist";
  loaded.model = MakeClassifier(arch, loaded.config.in_channels, loaded.config.classes, image_size,
                                loaded.config.patch_size);
  torch::NoGradGuard no_grad;
  for (auto& buffer : loaded.model->named_buffers()) {
    if (buffer.key().find("running_mean") != std::string::npos) buffer.value().normal_(0, 0.1);
    if (buffer.key().find("running_var") != std::string::npos) buffer.value().uniform_(0.5, 1.5);
  }
  ApplyQuantConfig(*loaded.model, config);
  loaded.model->eval();
  loaded.config.layers = CurrentLayerConfigs(*loaded.model);
  return loaded;
}

LoadedClassifier LoadClassifier(const std::string& path) {
  namespace fs = std::filesystem;
  std::error_code error;
  const fs::path folder = fs::is_regular_file(path, error) ? fs::path(path).parent_path() : fs::path(path);
  if (!fs::is_directory(folder, error)) Fail("{}: no such checkpoint folder", path);
  const std::string config_path = (folder / kConfigFile).string();
  const std::string weights_path = (folder / kWeightsFile).string();
  if (!fs::is_regular_file(config_path, error)) {
    Fail("{}: missing, so {} is not an atq classifier checkpoint (another library's weights load with their "
         "architecture given separately)",
         config_path, path);
  }
  if (!fs::is_regular_file(weights_path, error)) Fail("{}: missing", weights_path);

  LoadedClassifier loaded;
  loaded.config = ReadClassifierConfig(config_path);
  loaded.model = BuildConfiguredClassifier(loaded.config, config_path, /*layers_required=*/true);
  LoadClassifierWeights(*loaded.model, weights_path);
  loaded.model->eval();
  return loaded;
}

LoadedClassifier LoadForeignClassifier(const std::string& safetensors_path, const ClassifierConfig& config) {
  Require(config.normalization.std > 0, "{}: normalization std must be positive, not {}", safetensors_path,
          config.normalization.std);
  LoadedClassifier loaded;
  loaded.config = config;
  loaded.model = BuildConfiguredClassifier(config, safetensors_path, /*layers_required=*/false);
  LoadClassifierWeights(*loaded.model, safetensors_path);
  loaded.config.layers = CurrentLayerConfigs(*loaded.model);
  loaded.model->eval();
  return loaded;
}

LoadedClassifier LoadClassifierOrWeights(const std::string& path, const ClassifierConfig& config) {
  namespace fs = std::filesystem;
  std::error_code error;
  const bool weights_only =
      fs::is_regular_file(path, error) && !fs::exists(fs::path(path).parent_path() / kConfigFile, error);
  return weights_only ? LoadForeignClassifier(path, config) : LoadClassifier(path);
}

ImageTensors LoadTestData(const ClassifierConfig& config, const std::string& data_dir, int64_t limit) {
  const std::string dir = data_dir.empty() ? DefaultDataDir(config.dataset) : data_dir;
  const ImageSet test = LoadIdxDataset(dir, /*train=*/false);
  Require(test.rows == config.image_size && test.cols == config.image_size,
          "{}: test images are {}x{}, the model takes {}x{}", dir, test.rows, test.cols, config.image_size,
          config.image_size);
  ImageTensors tensors = ToTensors(test, config.normalization, limit);
  Require(ClassCount(tensors.labels) <= config.classes, "{}: labels up to {}, the model has {} classes", dir,
          ClassCount(tensors.labels) - 1, config.classes);
  return tensors;
}

}  // namespace atq
