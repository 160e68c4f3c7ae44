// Classifier checkpoints: model.safetensors (every parameter and buffer by torch name, f32) and config.json (model,
// per-layer quantization, data, normalization), loadable by name; or another library's weights plus a config.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include <nlohmann/json_fwd.hpp>

#include "models/classifier.h"
#include "data/image_data.h"

namespace atq {

// Everything needed to rebuild a classifier and feed it the right inputs.
struct ClassifierConfig {
  std::string model;  // a MakeClassifier name
  int64_t in_channels = 1;
  int64_t classes = 10;
  int64_t image_size = 28;  // square images
  int64_t patch_size = 4;   // the ViT's square patches; the other models ignore it
  std::string dataset;      // "fashion_mnist", "mnist", or the folder's name
  Normalization normalization;
  std::vector<std::pair<std::string, LayerQuantConfig>> layers;  // QuantLayers() order
};

nlohmann::json LayerQuantConfigToJson(const LayerQuantConfig& config);
LayerQuantConfig LayerQuantConfigFromJson(const nlohmann::json& json, const std::string& what);

// {"<layer name>": LayerQuantConfigToJson, ...} of every layer, and back: each named layer gets its configuration
// (a name that is not one of `layers`, or a value that is not an object of them, is an error naming `what`).
nlohmann::json LayerConfigsToJson(const NamedQuantLayers& layers);
void ApplyLayerConfigsJson(const nlohmann::json& json, const NamedQuantLayers& layers, const std::string& what);
nlohmann::json ClassifierConfigToJson(const ClassifierConfig& config);
// `what` names the source in errors ("DIR/config.json"). "patch_size" may be absent (4, as before it existed)
// and so may "layers" (none: every layer full precision, for a configuration written by hand).
ClassifierConfig ClassifierConfigFromJson(const nlohmann::json& json, const std::string& what);
// ClassifierConfigFromJson of a JSON file; errors name the file.
ClassifierConfig ReadClassifierConfig(const std::string& json_path);

// The per-layer configuration `model` runs now, in QuantLayers() order.
std::vector<std::pair<std::string, LayerQuantConfig>> CurrentLayerConfigs(ClassifierModule& model);

// Writes DIR/model.safetensors and DIR/config.json (creating DIR), each atomically. `config.layers` is taken from
// the model. `extra` (a JSON object, may be null) is merged into config.json's top level, e.g. the training
// options.
void SaveClassifier(const std::string& dir, ClassifierModule& model, const ClassifierConfig& config,
                    const nlohmann::json* extra = nullptr);

// Every parameter and buffer of any module by torch name, as float32 safetensors (atomically), and back. Loading
// throws atq::Error naming the file and the tensor for a missing tensor, a shape mismatch, a non-finite value or a
// tensor the module does not have.
void SaveModuleTensors(torch::nn::Module& model, const std::string& path,
                       const std::map<std::string, std::string>& metadata);

// A model folder: DIR/model.safetensors (every tensor of `model`, metadata "atq_model" = config["model"]) and
// DIR/config.json (`config` with `extra`'s keys added), each written atomically; the folder is created.
void SaveModuleFolder(const std::string& dir, torch::nn::Module& model, nlohmann::json config,
                      const nlohmann::json& extra);
void LoadModuleTensors(torch::nn::Module& model, const std::string& safetensors_path);

// Copies every parameter and buffer of `model` from a safetensors file by name. Throws atq::Error naming the
// file and the tensor for a missing tensor, a shape mismatch or a tensor the model does not have.
void LoadClassifierWeights(ClassifierModule& model, const std::string& safetensors_path);

struct LoadedClassifier {
  std::shared_ptr<ClassifierModule> model;  // in eval mode
  ClassifierConfig config;
};

// A classifier of architecture `arch` with torch's initialization from `seed`, random BatchNorm statistics (means
// N(0, 0.1), variances U(0.5, 1.5)) and `config` on its inner layers, in eval mode, with config.layers filled: a
// model to pack, time or test without training one (Fashion-MNIST's geometry: 1 channel, 10 classes).
LoadedClassifier RandomClassifier(const std::string& arch, int64_t image_size, const LayerQuantConfig& config,
                                  uint64_t seed);

// Rebuilds a checkpoint written by SaveClassifier: MakeClassifier, the per-layer quantization, the tensors.
// `path` is the folder or its model.safetensors.
LoadedClassifier LoadClassifier(const std::string& path);

// Weights another library saved under atq's tensor names (torchvision's ResNet-18, timm's VisionTransformer),
// which come without config.json: builds the model `config` describes, sets the per-layer quantization that
// `config.layers` lists (every layer, in QuantLayers() order; an empty list leaves them full precision) and
// loads the tensors by name (a float32 num_batches_tracked becomes int64).
LoadedClassifier LoadForeignClassifier(const std::string& safetensors_path, const ClassifierConfig& config);

// LoadClassifier for a checkpoint folder or a model.safetensors with config.json beside it; LoadForeignClassifier
// with `config` for a weights file without one (another library's weights).
LoadedClassifier LoadClassifierOrWeights(const std::string& path, const ClassifierConfig& config);

// The test split of a checkpoint's dataset, normalized as the checkpoint was trained.
ImageTensors LoadTestData(const ClassifierConfig& config, const std::string& data_dir = "", int64_t limit = 0);

}  // namespace atq
