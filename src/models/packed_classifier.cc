// Packing and unpacking trained classifiers (models/packed_module.h with the classifier's config).
#include "models/packed_classifier.h"

#include <nlohmann/json.hpp>

#include "io/safetensors.h"
#include "models/classifiers.h"
#include "models/packed_module.h"
#include "util/error.h"

namespace atq {
namespace {

constexpr const char* kFormatName = "atq-packed-classifier/1";

}  // namespace

int64_t ExportPackedClassifier(const LoadedClassifier& loaded, QuantType type, const std::string& path) {
  return WritePackedModel(*loaded.model, loaded.model->QuantLayers(), type, kFormatName,
                          ClassifierConfigToJson(loaded.config), nlohmann::json::object(), path);
}

bool IsPackedClassifier(const std::string& path) { return PackedFormatOf(path) == kFormatName; }

LoadedClassifier LoadPackedClassifier(const std::string& path, PackedRun run) {
  const SafetensorsFile file = SafetensorsFile::Open(path);
  const nlohmann::json config_json = ReadPackedConfig(file, path, kFormatName);
  LoadedClassifier loaded;
  loaded.config = ClassifierConfigFromJson(config_json, path + " " + kPackedConfigKey);
  loaded.model = MakeClassifier(loaded.config.model, loaded.config.in_channels, loaded.config.classes,
                                loaded.config.image_size, loaded.config.patch_size);
  ReadPackedModule(file, path, *loaded.model, loaded.model->QuantLayers(), run);
  loaded.model->eval();
  return loaded;
}

}  // namespace atq
