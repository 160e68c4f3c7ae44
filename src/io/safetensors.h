// Reads and writes safetensors files (Hugging Face's format): an 8-byte little-endian header length, a JSON
// header naming each tensor's dtype, shape and byte range, then the raw little-endian tensor data.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include <nlohmann/json_fwd.hpp>

#include "formats/quant_type.h"
#include "io/mapped_file.h"
#include "io/tensor_info.h"

namespace atq {

// The safetensors dtype string ("F16", "BOOL", ...) for a plain element type; std::nullopt for ggml block
// types and atq's packed types, which safetensors has no dtype for.
std::optional<std::string_view> SafetensorsDtypeName(QuantType type);
// "F32" -> kF32 ...; std::nullopt for a dtype atq does not read (F8_E4M3, U16, ...).
std::optional<QuantType> ParseSafetensorsDtype(std::string_view dtype);

// A parsed, validated safetensors file. Every check a hostile file could fail happens in Open/FromBytes,
// so Data() of any listed tensor is always in bounds.
class SafetensorsFile {
 public:
  // Larger headers are refused before anything is allocated (the Rust library's limit).
  static constexpr uint64_t kMaxHeaderBytes = 100'000'000;

  // Maps the file read-only; throws atq::Error "PATH: what is wrong".
  static SafetensorsFile Open(const std::string& path);
  // Parses bytes held in memory (the fuzzer, tests); `name` stands for the path in error messages.
  static SafetensorsFile FromBytes(std::string name, std::vector<uint8_t> bytes);

  SafetensorsFile(SafetensorsFile&&) noexcept = default;
  SafetensorsFile& operator=(SafetensorsFile&&) noexcept = default;
  SafetensorsFile(const SafetensorsFile&) = delete;
  SafetensorsFile& operator=(const SafetensorsFile&) = delete;

  const std::string& path() const { return path_; }
  // In file order: ascending data offset, ties (empty tensors) by name.
  const std::vector<TensorInfo>& tensors() const { return tensors_; }
  // nullptr when the file has no tensor of that name.
  const TensorInfo* Find(std::string_view name) const;
  // The tensor's first byte (no alignment promised: safetensors offsets need not be aligned).
  // Throws atq::Error when `tensor` does not lie inside this file's data section.
  const uint8_t* Data(const TensorInfo& tensor) const;
  // The "__metadata__" string map (empty when the file has none).
  const std::map<std::string, std::string>& metadata() const { return metadata_; }
  // Where the data section starts: 8 + header length. TensorInfo::offset counts from here.
  uint64_t data_offset() const { return data_offset_; }
  uint64_t file_size() const { return size_; }

 private:
  SafetensorsFile() = default;
  static SafetensorsFile Load(MappedFile source);
  void Parse();

  std::string path_;
  MappedFile mapped_;  // the file's mapping, or the bytes given to FromBytes
  const uint8_t* bytes_ = nullptr;
  uint64_t size_ = 0;
  uint64_t data_offset_ = 0;
  std::vector<TensorInfo> tensors_;
  std::unordered_map<std::string, size_t> by_name_;
  std::map<std::string, std::string> metadata_;
};

struct TensorToWrite {
  std::string name;
  QuantType type = QuantType::kF32;
  std::vector<int64_t> shape;  // outermost first
  const uint8_t* data = nullptr;
  uint64_t nbytes = 0;
};

// Checks what WriteSafetensors would write, without writing: each type has a safetensors dtype, nbytes
// matches the shape, names are unique, valid UTF-8 and not "__metadata__", metadata is valid
// UTF-8. Errors start with `path`. `need_data` false checks the layout alone (a streaming writer gets the bytes
// later).
void ValidateTensorsToWrite(const std::string& path, const std::vector<TensorToWrite>& tensors,
                            const std::map<std::string, std::string>& metadata, bool need_data = true);

// A safetensors file written tensor by tensor: the header (every tensor's name, type and shape, so every offset)
// goes first, then each tensor's bytes in the declared order, in as many Write calls as the caller likes, so no
// more than a piece of one tensor need be in memory. Under a temporary name until Commit(), which checks that
// every byte declared arrived; destroyed before that, it leaves no file.
class SafetensorsStreamWriter {
 public:
  // `tensors`' data pointers are ignored (nbytes is what counts). Throws atq::Error as ValidateTensorsToWrite.
  SafetensorsStreamWriter(std::string path, const std::vector<TensorToWrite>& tensors,
                          const std::map<std::string, std::string>& metadata = {});
  ~SafetensorsStreamWriter();
  SafetensorsStreamWriter(const SafetensorsStreamWriter&) = delete;
  SafetensorsStreamWriter& operator=(const SafetensorsStreamWriter&) = delete;

  // The next bytes of the data section.
  void Write(const void* data, size_t size);
  void Commit();
  uint64_t data_bytes() const { return data_bytes_; }

 private:
  std::string path_;
  std::unique_ptr<class AtomicFile> file_;
  uint64_t data_bytes_ = 0, written_ = 0;
};

// Writes tensors in the given order, header padded with spaces to a multiple of 8 bytes (as the Rust
// library does, so the data section starts 8-byte aligned). Writes under a temporary name and renames, so
// a failure leaves neither a partial file nor a changed `path`.
void WriteSafetensors(const std::string& path, const std::vector<TensorToWrite>& tensors,
                      const std::map<std::string, std::string>& metadata = {});

}  // namespace atq
