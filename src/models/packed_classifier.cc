// Packing and unpacking trained classifiers (models/packed_module.h with the classifier's config).
#include "models/packed_classifier.h"

#include <nlohmann/json.hpp>

#include "io/safetensors.h"
#include "io/strict_json.h"
#include "models/classifiers.h"
#include "models/packed_module.h"
#include "util/error.h"

namespace atq {
namespace {

constexpr const char* kFormatName = "atq-packed-classifier/1";
constexpr const char* kConfigKey = "atq.config";

}  // namespace

int64_t ExportPackedClassifier(const LoadedClassifier& loaded, QuantType type, const std::string& path) {
  return WritePackedModule(*loaded.model, loaded.model->QuantLayers(), type,
                           {{kPackedFormatKey, kFormatName}, {kConfigKey, ClassifierConfigToJson(loaded.config).dump()}},
                           path);
}

bool IsPackedClassifier(const std::string& path) { return PackedFormatOf(path) == kFormatName; }

LoadedClassifier LoadPackedClassifier(const std::string& path, PackedRun run) {
  const SafetensorsFile file = SafetensorsFile::Open(path);
  const auto& metadata = file.metadata();
  const auto format = metadata.find(kPackedFormatKey);
  Require(format != metadata.end() && format->second == kFormatName, "{}: not an atq packed classifier ({} missing)",
          path, kPackedFormatKey);
  const auto config_text = metadata.find(kConfigKey);
  Require(config_text != metadata.end(), "{}: metadata '{}' missing", path, kConfigKey);
  const nlohmann::json config_json =
      ParseStrictJson(config_text->second, fmt::format("{}: metadata '{}'", path, kConfigKey));
  LoadedClassifier loaded;
  loaded.config = ClassifierConfigFromJson(config_json, path + " " + kConfigKey);
  loaded.model = MakeClassifier(loaded.config.model, loaded.config.in_channels, loaded.config.classes,
                                loaded.config.image_size, loaded.config.patch_size);
  ReadPackedModule(file, path, *loaded.model, loaded.model->QuantLayers(), run);
  loaded.model->eval();
  return loaded;
}

}  // namespace atq
