// Hugging Face checkpoint layout on top of SafetensorsFile: the index, its shards, and the sharded writer.
#include "io/checkpoint.h"

#include <algorithm>
#include <cctype>
#include <filesystem>
#include <set>
#include <system_error>
#include <utility>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "io/atomic_file.h"
#include "io/mapped_file.h"
#include "util/error.h"
#include "util/log.h"
#include "util/strings.h"
#include "io/strict_json.h"

namespace atq {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;

// Index files list one line per tensor; even the largest models stay far below this.
constexpr uint64_t kMaxIndexBytes = 100'000'000;

std::string Quote(std::string_view name) {
  constexpr size_t kMaxShown = 200;
  if (name.size() > kMaxShown) return fmt::format("'{}...' ({} bytes)", name.substr(0, kMaxShown), name.size());
  return fmt::format("'{}'", name);
}

// A shard must be a plain file name beside the index: nothing that reaches another folder.
bool IsPlainFileName(std::string_view name) {
  return !name.empty() && name != "." && name != ".." && name.find('/') == std::string_view::npos &&
         name.find('\\') == std::string_view::npos && name.find('\0') == std::string_view::npos &&
         name.find("..") == std::string_view::npos;
}

// "model-00001-of-00003.safetensors": the names WriteShardedSafetensors (and transformers) give shards.
bool IsShardFileName(std::string_view name) {
  constexpr std::string_view kPrefix = "model-", kMiddle = "-of-", kSuffix = ".safetensors";
  if (name.substr(0, kPrefix.size()) != kPrefix || !EndsWith(name, kSuffix)) return false;
  std::string_view rest = name.substr(kPrefix.size(), name.size() - kPrefix.size() - kSuffix.size());
  const size_t middle = rest.find(kMiddle);
  if (middle == std::string_view::npos) return false;
  const auto all_digits = [](std::string_view digits) {
    return digits.size() >= 5 && std::all_of(digits.begin(), digits.end(), [](char c) {
             return std::isdigit(static_cast<unsigned char>(c)) != 0;
           });
  };
  return all_digits(rest.substr(0, middle)) && all_digits(rest.substr(middle + kMiddle.size()));
}

std::string JoinPath(const std::string& dir, std::string_view name) { return (fs::path(dir) / name).string(); }

}  // namespace

SafetensorsCheckpoint SafetensorsCheckpoint::Open(const std::string& path) {
  std::error_code error;
  const fs::file_status status = fs::status(path, error);
  if (error || !fs::exists(status)) Fail("{}: no such file or directory", path);

  SafetensorsCheckpoint checkpoint;
  if (fs::is_directory(status)) {
    const std::string single = JoinPath(path, kSafetensorsSingleName);
    const std::string index = JoinPath(path, kSafetensorsIndexName);
    const bool has_single = fs::exists(single, error);
    const bool has_index = fs::exists(index, error);
    if (has_single) {
      if (has_index) LogDebug("{}: both {} and {}; reading {}", path, kSafetensorsSingleName, kSafetensorsIndexName,
                              kSafetensorsSingleName);
      checkpoint.path_ = single;
      checkpoint.AddFile(std::make_unique<SafetensorsFile>(SafetensorsFile::Open(single)));
    } else if (has_index) {
      checkpoint.OpenIndex(index);
    } else {
      Fail("{}: folder has neither {} nor {}", path, kSafetensorsSingleName, kSafetensorsIndexName);
    }
  } else if (EndsWith(path, ".json")) {
    checkpoint.OpenIndex(path);
  } else {
    checkpoint.path_ = path;
    checkpoint.AddFile(std::make_unique<SafetensorsFile>(SafetensorsFile::Open(path)));
  }
  if (!checkpoint.sharded_) checkpoint.metadata_ = checkpoint.files_.front()->metadata();
  return checkpoint;
}

void SafetensorsCheckpoint::AddFile(std::unique_ptr<SafetensorsFile> file) {
  for (const TensorInfo& info : file->tensors()) {
    const auto [where, added] = by_name_.emplace(info.name, tensors_.size());
    if (!added) {
      Fail("tensor {} is in both {} and {}", Quote(info.name), tensors_[where->second].file->path(), file->path());
    }
    tensors_.push_back({&info, file.get(), file->Data(info)});
  }
  file_views_.push_back(file.get());
  files_.push_back(std::move(file));
}

void SafetensorsCheckpoint::OpenIndex(const std::string& index_path) {
  path_ = index_path;
  sharded_ = true;
  const MappedFile mapped = MappedFile::Open(index_path);
  Require(mapped.size() <= kMaxIndexBytes, "{}: {} bytes is too large for a checkpoint index (limit {})", index_path,
          mapped.size(), kMaxIndexBytes);
  const std::string_view text(reinterpret_cast<const char*>(mapped.data()), mapped.size());
  const json index = ParseStrictJson(text, index_path);
  Require(index.is_object(), "{}: index must be a JSON object, got {}", index_path, index.type_name());

  const auto weight_map = index.find("weight_map");
  Require(weight_map != index.end(), "{}: missing \"weight_map\"", index_path);
  Require(weight_map->is_object(), "{}: \"weight_map\" must be an object of tensor name -> shard file, got {}",
          index_path, weight_map->type_name());
  std::map<std::string, std::string> shard_of;  // tensor -> shard file name, as the index says
  std::set<std::string> shard_names;             // sorted, so shards open in a deterministic order
  for (const auto& [tensor, shard] : weight_map->items()) {
    if (!shard.is_string()) {
      Fail("{}: \"weight_map\" entry for {} must be a file name, got {}", index_path, Quote(tensor), shard.type_name());
    }
    const std::string& name = shard.get_ref<const std::string&>();
    if (!IsPlainFileName(name)) {
      Fail("{}: shard {} for tensor {} must be a file name in the index's folder (no '/', '\\', '..')", index_path,
           Quote(name), Quote(tensor));
    }
    shard_of.emplace(tensor, name);
    shard_names.insert(name);
  }

  // Each shard opened once; a tensor found in two shards is caught by AddFile, naming both.
  const std::string dir = fs::path(index_path).parent_path().string();
  for (const std::string& name : shard_names) {
    std::unique_ptr<SafetensorsFile> file;
    try {
      file = std::make_unique<SafetensorsFile>(SafetensorsFile::Open(JoinPath(dir.empty() ? "." : dir, name)));
      AddFile(std::move(file));
    } catch (const Error& e) {
      throw Error(fmt::format("{}: shard {}: {}", index_path, Quote(name), e.what()));
    }
  }
  for (const auto& [tensor, shard] : shard_of) {
    const CheckpointTensor* found = Find(tensor);
    if (found == nullptr) {
      Fail("{}: tensor {} is mapped to {}, but that file has no such tensor", index_path, Quote(tensor),
           Quote(shard));
    }
    const std::string actual = fs::path(found->file->path()).filename().string();
    if (actual != shard) {
      Fail("{}: tensor {} is mapped to {}, but it is in {}", index_path, Quote(tensor), Quote(shard),
           found->file->path());
    }
  }
  for (const CheckpointTensor& tensor : tensors_) {
    if (shard_of.count(tensor.info->name) == 0) {
      LogWarn("{}: tensor {} in {} is not listed in \"weight_map\"; reading it anyway", index_path,
              Quote(tensor.info->name), tensor.file->path());
    }
  }

  const auto metadata = index.find("metadata");
  if (metadata != index.end() && !metadata->is_null()) {
    Require(metadata->is_object(), "{}: \"metadata\" must be an object, got {}", index_path, metadata->type_name());
    for (const auto& [key, value] : metadata->items()) {
      metadata_.emplace(key, value.is_string() ? value.get<std::string>() : value.dump());
    }
  }
  for (const auto& file : files_) {
    for (const auto& entry : file->metadata()) metadata_.insert(entry);
  }
  const auto total_size = metadata_.find("total_size");
  if (total_size != metadata_.end() && total_size->second != std::to_string(total_bytes())) {
    LogDebug("{}: metadata total_size {} but the tensors hold {} bytes", index_path, total_size->second,
             total_bytes());
  }
}

const CheckpointTensor* SafetensorsCheckpoint::Find(std::string_view name) const {
  const auto found = by_name_.find(std::string(name));
  return found == by_name_.end() ? nullptr : &tensors_[found->second];
}

uint64_t SafetensorsCheckpoint::total_bytes() const {
  uint64_t total = 0;
  for (const CheckpointTensor& tensor : tensors_) total += tensor.info->nbytes;
  return total;
}

ShardedSafetensorsWriter::ShardedSafetensorsWriter(std::string dir, const std::vector<TensorToWrite>& tensors,
                                                   const std::map<std::string, std::string>& metadata,
                                                   uint64_t max_shard_bytes)
    : dir_(std::move(dir)), weight_map_(json::object()) {
  Require(max_shard_bytes > 0, "{}: the shard size limit must be positive", dir_);
  ValidateTensorsToWrite(dir_, tensors, metadata, /*need_data=*/false);

  // Shards as runs of tensors in the given order.
  std::vector<std::vector<TensorToWrite>> shards(1);
  uint64_t in_shard = 0;
  for (const TensorToWrite& tensor : tensors) {
    const uint64_t room = in_shard < max_shard_bytes ? max_shard_bytes - in_shard : 0;
    if (!shards.back().empty() && (in_shard > max_shard_bytes || tensor.nbytes > room)) {
      shards.emplace_back();
      in_shard = 0;
    }
    shards.back().push_back(tensor);
    in_shard += tensor.nbytes;
    total_bytes_ += tensor.nbytes;
  }

  std::error_code error;
  fs::create_directories(dir_, error);
  if (error) Fail("{}: cannot create folder: {}", dir_, error.message());
  for (size_t i = 0; i < shards.size(); ++i) {
    const std::string name = shards.size() == 1 ? std::string(kSafetensorsSingleName)
                                                : fmt::format("model-{:05d}-of-{:05d}.safetensors", i + 1, shards.size());
    files_.push_back(name);
    shards_.push_back(std::make_unique<SafetensorsStreamWriter>(JoinPath(dir_, name), shards[i], metadata));
    shard_bytes_.push_back(shards_.back()->data_bytes());
    for (const TensorToWrite& tensor : shards[i]) weight_map_[tensor.name] = name;
  }
}

ShardedSafetensorsWriter::~ShardedSafetensorsWriter() = default;

void ShardedSafetensorsWriter::Write(const void* data, size_t size) {
  const auto* bytes = static_cast<const uint8_t*>(data);
  while (size > 0) {
    while (current_ < shards_.size() && written_in_shard_ == shard_bytes_[current_]) {
      ++current_;
      written_in_shard_ = 0;
    }
    Require(current_ < shards_.size(), "{}: {} more bytes than the tensors declared", dir_, size);
    const size_t n = static_cast<size_t>(std::min<uint64_t>(size, shard_bytes_[current_] - written_in_shard_));
    shards_[current_]->Write(bytes, n);
    written_in_shard_ += n;
    written_ += n;
    bytes += n;
    size -= n;
  }
}

void ShardedSafetensorsWriter::Commit() {
  // Every shard checks that its declared bytes arrived before any is put in place.
  Require(written_ == total_bytes_, "{}: {} of the {} declared bytes written", dir_, written_, total_bytes_);
  for (auto& shard : shards_) shard->Commit();
  std::set<std::string> written(files_.begin(), files_.end());
  if (files_.size() > 1) {
    // As transformers writes it: json.dumps(index, indent=2, sort_keys=True) + "\n".
    const json index = {{"metadata", {{"total_size", total_bytes_}}}, {"weight_map", weight_map_}};
    WriteFileAtomically(JoinPath(dir_, kSafetensorsIndexName), index.dump(2) + "\n");
    written.insert(std::string(kSafetensorsIndexName));
  }
  // Weights from an earlier save would otherwise shadow or mix with these (model.safetensors beats an index).
  std::error_code error;
  for (const fs::directory_entry& entry : fs::directory_iterator(dir_, error)) {
    const std::string name = entry.path().filename().string();
    const bool ours = name == kSafetensorsSingleName || name == kSafetensorsIndexName || IsShardFileName(name);
    if (ours && written.count(name) == 0 && entry.is_regular_file(error)) {
      LogInfo("{}: removing {} left by an earlier save", dir_, name);
      fs::remove(entry.path(), error);
    }
  }
}

void WriteShardedSafetensors(const std::string& dir, const std::vector<TensorToWrite>& tensors,
                             const std::map<std::string, std::string>& metadata, uint64_t max_shard_bytes) {
  ValidateTensorsToWrite(dir, tensors, metadata);
  ShardedSafetensorsWriter writer(dir, tensors, metadata, max_shard_bytes);
  for (const TensorToWrite& tensor : tensors) writer.Write(tensor.data, tensor.nbytes);
  writer.Commit();
}

}  // namespace atq
