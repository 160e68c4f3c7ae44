// A read-only memory-mapped file: tensor files are read in place, never copied whole into memory.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

namespace atq {

class MappedFile {
 public:
  // Throws atq::Error naming the path when the file cannot be opened or mapped. An empty file maps to size 0.
  static MappedFile Open(const std::string& path);

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
  const uint8_t* data_ = nullptr;
  size_t size_ = 0;
};

}  // namespace atq
