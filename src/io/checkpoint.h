// A model's safetensors weights as one set of tensors, whether they sit in one file or in shards listed by a
// Hugging Face `model.safetensors.index.json`.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include <nlohmann/json.hpp>

#include "io/safetensors.h"
#include "io/tensor_info.h"

namespace atq {

inline constexpr std::string_view kSafetensorsSingleName = "model.safetensors";
inline constexpr std::string_view kSafetensorsIndexName = "model.safetensors.index.json";

// One tensor of a checkpoint: what it is, where its bytes are, and which file holds them.
struct CheckpointTensor {
  const TensorInfo* info = nullptr;
  const SafetensorsFile* file = nullptr;
  const uint8_t* data = nullptr;  // info->nbytes bytes
};

class SafetensorsCheckpoint {
 public:
  // `path` is a .safetensors file, an index .json file, or a directory holding model.safetensors or
  // model.safetensors.index.json (model.safetensors wins when both are there, as in transformers).
  // Throws atq::Error naming the file at fault.
  static SafetensorsCheckpoint Open(const std::string& path);

  // Files in order (shards sorted by name), each file's tensors in file order.
  const std::vector<CheckpointTensor>& tensors() const { return tensors_; }
  // nullptr when no file holds that tensor.
  const CheckpointTensor* Find(std::string_view name) const;
  // Single file: its __metadata__. Sharded: the index's "metadata" (non-string values as JSON text, e.g.
  // "total_size"), then the shards' __metadata__ keys the index lacks (first shard first).
  const std::map<std::string, std::string>& metadata() const { return metadata_; }
  const std::vector<const SafetensorsFile*>& files() const { return file_views_; }
  // The index file for a sharded checkpoint, else the single .safetensors file.
  const std::string& path() const { return path_; }
  bool sharded() const { return sharded_; }
  uint64_t total_bytes() const;  // sum of the tensors' nbytes

 private:
  void AddFile(std::unique_ptr<SafetensorsFile> file);
  void OpenIndex(const std::string& index_path);

  std::string path_;
  bool sharded_ = false;
  std::vector<std::unique_ptr<SafetensorsFile>> files_;  // owned separately so the pointers below survive moves
  std::vector<const SafetensorsFile*> file_views_;
  std::vector<CheckpointTensor> tensors_;
  std::unordered_map<std::string, size_t> by_name_;
  std::map<std::string, std::string> metadata_;
};

// Writes a checkpoint under `dir` (created if missing) as transformers lays one out, tensor by tensor: everything
// in `model.safetensors` when the tensor bytes fit in `max_shard_bytes`, otherwise shards
// `model-00001-of-0000N.safetensors` (tensors in the declared order, a new shard whenever the next tensor would
// overflow the current one; a tensor larger than the limit gets a shard of its own) and
// `model.safetensors.index.json` with {"metadata": {"total_size": N}, "weight_map": {...}}. `metadata` goes in
// every shard's __metadata__. The plan (every name, type and shape) is validated and the shard headers written
// before the first byte of data; each shard stays under a temporary name until Commit(), which puts the shards
// in place and the index last, then removes weight files an earlier save left under these names. Destroyed before
// Commit (an error, a full disk), it leaves no file behind.
class ShardedSafetensorsWriter {
 public:
  // `tensors`' data pointers are ignored. Throws atq::Error as ValidateTensorsToWrite.
  ShardedSafetensorsWriter(std::string dir, const std::vector<TensorToWrite>& tensors,
                           const std::map<std::string, std::string>& metadata, uint64_t max_shard_bytes);
  ~ShardedSafetensorsWriter();
  ShardedSafetensorsWriter(const ShardedSafetensorsWriter&) = delete;
  ShardedSafetensorsWriter& operator=(const ShardedSafetensorsWriter&) = delete;

  // The next bytes of the data, tensors in the declared order, in pieces of any size.
  void Write(const void* data, size_t size);
  void Commit();

  // The weight file names, in order (one name, model.safetensors, when unsharded).
  const std::vector<std::string>& files() const { return files_; }
  uint64_t total_bytes() const { return total_bytes_; }

 private:
  std::string dir_;
  std::vector<std::string> files_;
  std::vector<std::unique_ptr<SafetensorsStreamWriter>> shards_;
  std::vector<uint64_t> shard_bytes_;
  nlohmann::json weight_map_;
  uint64_t total_bytes_ = 0, written_ = 0, written_in_shard_ = 0;
  size_t current_ = 0;
};

// ShardedSafetensorsWriter with every tensor's bytes at hand.
void WriteShardedSafetensors(const std::string& dir, const std::vector<TensorToWrite>& tensors,
                             const std::map<std::string, std::string>& metadata, uint64_t max_shard_bytes);

}  // namespace atq
