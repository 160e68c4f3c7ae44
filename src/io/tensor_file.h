// Any tensor file atq reads, behind one interface: a safetensors file, a sharded index, a Hugging Face model
// folder, or a GGUF file. The kind is decided by the bytes (GGUF magic) and the path, never by guessing.
//
// Safetensors has no dtype for atq's packed formats, so atq stores a packed tensor as a U8 byte string and
// describes it in the file's metadata: key "atq.packed.<tensor name>", value the JSON object
// {"type": "<format name>", "shape": [rows, cols], "granularity": "tensor" | "channel" | "group:<N>"}. A
// TensorFile presents such a tensor with that type, shape and layout, so readers dequantize it like any other.
#pragma once

#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

#include "io/checkpoint.h"
#include "io/gguf.h"
#include "io/tensor_info.h"

namespace atq {

enum class TensorFileKind { kSafetensors, kGguf };

struct TensorEntry {
  const TensorInfo* info = nullptr;
  const uint8_t* data = nullptr;  // info->nbytes bytes, mapped from the file
  std::string file;               // the file holding it (a shard for sharded checkpoints)
};

class TensorFile {
 public:
  // Throws atq::Error naming the path when it is neither safetensors nor GGUF, or is malformed.
  static TensorFile Open(const std::string& path);

  TensorFileKind kind() const { return kind_; }
  std::string_view kind_name() const { return kind_ == TensorFileKind::kGguf ? "gguf" : "safetensors"; }
  const std::string& path() const { return path_; }
  const std::vector<TensorEntry>& tensors() const { return tensors_; }
  const TensorEntry* Find(std::string_view name) const;
  // Metadata as JSON: safetensors string map, or GGUF values with arrays longer than `max_array_elements`
  // shortened to their first elements plus a count.
  nlohmann::json MetadataJson(size_t max_array_elements = 8) const;
  // The type's name, also for ggml types outside atq's table (e.g. q5_0 in llama.cpp files).
  static std::string TypeName(const TensorInfo& info);

  const GgufFile* gguf() const { return gguf_.get(); }
  const SafetensorsCheckpoint* safetensors() const { return safetensors_.get(); }

 private:
  TensorFileKind kind_ = TensorFileKind::kSafetensors;
  std::string path_;
  std::unique_ptr<GgufFile> gguf_;
  std::unique_ptr<SafetensorsCheckpoint> safetensors_;
  std::vector<TensorEntry> tensors_;
  std::vector<std::unique_ptr<TensorInfo>> packed_infos_;  // safetensors tensors retyped by atq.packed.* metadata
};

constexpr std::string_view kPackedKeyPrefix = "atq.packed.";

// Whether the file at `path` starts with GGUF's magic (false when it cannot be read).
bool HasGgufMagic(const std::string& path);

// Reads a tensor of any float, integer or quantized type in the table as float32 (rows x cols of its layout).
// Throws atq::Error for types outside the table.
std::vector<float> ReadAsFloat(const TensorEntry& tensor);

}  // namespace atq
