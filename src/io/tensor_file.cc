// Opening any tensor file: GGUF by its magic, safetensors otherwise (file, index JSON or model folder).
#include "io/tensor_file.h"

#include <cstring>
#include <filesystem>
#include <fstream>
#include <type_traits>
#include <variant>

#include "io/strict_json.h"
#include "util/error.h"
#include "util/strings.h"
#include "io/mapped_file.h"

namespace atq {

bool HasGgufMagic(const std::string& path) {
  const MappedFile file = MappedFile::Open(path);
  return file.size() >= 4 && std::memcmp(file.data(), "GGUF", 4) == 0;
}

namespace {

nlohmann::json ArrayJson(const GgufArray& array, size_t max_elements);

nlohmann::json ValueJson(const GgufValue& value, size_t max_elements) {
  return std::visit(
      [&](const auto& held) -> nlohmann::json {
        using T = std::decay_t<decltype(held)>;
        if constexpr (std::is_same_v<T, GgufArray>) {
          return ArrayJson(held, max_elements);
        } else {
          // Strings may hold any bytes: dump with error_handler_t::replace.
          return nlohmann::json(held);
        }
      },
      value.variant());
}

nlohmann::json ArrayJson(const GgufArray& array, size_t max_elements) {
  nlohmann::json elements = nlohmann::json::array();
  std::visit(
      [&](const auto& vector) {
        for (size_t i = 0; i < vector.size() && i < max_elements; ++i) {
          elements.push_back(ValueJson(GgufValue(vector[i]), max_elements));
        }
      },
      array.elements());
  if (array.size() <= max_elements) return elements;
  return {{"type", std::string(GgufTypeName(array.element_type()))},
          {"count", array.size()},
          {"first", elements}};
}

// The real type, shape and layout of a U8 tensor that atq.packed.<name> metadata describes.
TensorInfo PackedInfo(const TensorInfo& stored, const std::string& description_text, const std::string& file) {
  const auto fail = [&](std::string_view problem) {
    Fail("{}: metadata {}{} {}: {}", file, kPackedKeyPrefix, stored.name, problem, description_text.substr(0, 200));
  };
  nlohmann::json description;
  try {
    description = ParseStrictJson(description_text, "value");
  } catch (const Error& error) {
    fail(error.what());
  }
  if (!description.is_object() || !description.contains("type") || !description["type"].is_string() ||
      !description.contains("shape") || !description["shape"].is_array() || !description.contains("granularity") ||
      !description["granularity"].is_string()) {
    fail("must be an object with string type, array shape and string granularity");
  }
  const auto type = ParseQuantType(description["type"].get<std::string>());
  if (!type || !Traits(*type).is_quantized) fail("names no quantized format of atq's table");
  std::vector<int64_t> shape;
  for (const auto& dim : description["shape"]) {
    if (!dim.is_number_integer()) fail("has a shape that is not a list of integers");
    shape.push_back(dim.get<int64_t>());
  }
  if (stored.type != QuantType::kU8 || stored.shape.size() != 1) fail("describes a tensor that is not a 1-D U8 tensor");
  TensorInfo info = stored;
  info.type = *type;
  info.shape = shape;
  CheckedElementCount(shape, file + " tensor " + stored.name);
  info.layout = LayoutForShape(*type, shape);
  if (!ParseGranularity(description["granularity"].get<std::string>(), info.layout)) fail("has an unknown granularity");
  int64_t expected = 0;
  try {
    expected = PackedBytes(info.layout);
  } catch (const Error& error) {
    fail(error.what());
  }
  if (expected != static_cast<int64_t>(stored.nbytes)) {
    fail(fmt::format("needs {} bytes, the tensor holds {}", expected, stored.nbytes));
  }
  return info;
}

}  // namespace

TensorFile TensorFile::Open(const std::string& path) {
  namespace fs = std::filesystem;
  std::error_code error;
  if (!fs::exists(path, error)) Fail("{}: no such file or folder", path);
  TensorFile file;
  file.path_ = path;
  if (!fs::is_directory(path, error) && HasGgufMagic(path)) {
    file.kind_ = TensorFileKind::kGguf;
    file.gguf_ = std::make_unique<GgufFile>(GgufFile::Open(path));
    for (const TensorInfo& info : file.gguf_->tensors()) {
      file.tensors_.push_back({&info, file.gguf_->Data(info), path});
    }
    return file;
  }
  file.kind_ = TensorFileKind::kSafetensors;
  file.safetensors_ = std::make_unique<SafetensorsCheckpoint>(SafetensorsCheckpoint::Open(path));
  const auto& metadata = file.safetensors_->metadata();
  for (const CheckpointTensor& tensor : file.safetensors_->tensors()) {
    const TensorInfo* info = tensor.info;
    const auto packed = metadata.find(std::string(kPackedKeyPrefix) + info->name);
    if (packed != metadata.end()) {
      file.packed_infos_.push_back(std::make_unique<TensorInfo>(PackedInfo(*info, packed->second, tensor.file->path())));
      info = file.packed_infos_.back().get();
    }
    file.tensors_.push_back({info, tensor.data, tensor.file->path()});
  }
  for (const auto& [key, value] : metadata) {
    if (StartsWith(key, kPackedKeyPrefix)) {
      Require(file.safetensors_->Find(key.substr(kPackedKeyPrefix.size())) != nullptr,
              "{}: metadata '{}' describes a tensor the file does not hold", path, key);
    }
  }
  return file;
}

const TensorEntry* TensorFile::Find(std::string_view name) const {
  for (const TensorEntry& entry : tensors_) {
    if (entry.info->name == name) return &entry;
  }
  return nullptr;
}

nlohmann::json TensorFile::MetadataJson(size_t max_array_elements) const {
  nlohmann::json out = nlohmann::json::object();
  if (gguf_) {
    for (const auto& [key, value] : gguf_->metadata()) out[key] = ValueJson(value, max_array_elements);
  } else {
    for (const auto& [key, value] : safetensors_->metadata()) out[key] = value;
  }
  return out;
}

std::string TensorFile::TypeName(const TensorInfo& info) { return GgmlTypeName(static_cast<uint32_t>(info.type)); }

std::vector<float> ReadAsFloat(const TensorEntry& tensor) {
  const TensorInfo& info = *tensor.info;
  Require(FindTraits(static_cast<uint32_t>(info.type)) != nullptr, "{}: tensor '{}' has type {}, which atq cannot convert",
          tensor.file, info.name, TensorFile::TypeName(info));
  return Dequantize(info.layout, tensor.data, static_cast<int64_t>(info.nbytes));
}

}  // namespace atq
