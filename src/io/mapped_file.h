// A read-only memory-mapped file: tensor files are read in place, never copied whole into memory. The same
// object can instead hold bytes already in memory (fuzzers, tests), so parsers have one input type.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

namespace atq {

class MappedFile {
 public:
  // Throws atq::Error naming the path when the file cannot be opened or mapped. An empty file maps to size 0.
  static MappedFile Open(const std::string& path);

  // Bytes held in memory; `name` stands for the path in error messages.
  static MappedFile FromBytes(std::string name, std::vector<uint8_t> bytes);

  MappedFile() = default;
  ~MappedFile();
  MappedFile(MappedFile&& other) noexcept;
  MappedFile& operator=(MappedFile&& other) noexcept;
  MappedFile(const MappedFile&) = delete;
  MappedFile& operator=(const MappedFile&) = delete;

  const uint8_t* data() const { return data_; }
  size_t size() const { return size_; }
  const std::string& path() const { return path_; }

 private:
  void Release();

  std::string path_;
  std::vector<uint8_t> owned_;  // FromBytes(); a moved vector keeps its buffer, so data_ survives moves
  const uint8_t* data_ = nullptr;
  size_t size_ = 0;
  bool is_mapping_ = false;  // data_ came from mmap
};

}  // namespace atq
