// Read-only mmap with RAII; errors name the file and the system's reason.
#include "io/mapped_file.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <utility>

#include "io/input_file.h"
#include "util/error.h"

namespace atq {

MappedFile MappedFile::Open(const std::string& path) {
  RequireRegularFile(path);  // names a FIFO, device or directory before open() could block on it
  // O_NONBLOCK: should the path turn into a FIFO between the check and the open, open() returns at once and the
  // fstat below refuses it. It changes nothing for a regular file.
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NONBLOCK);
  if (fd < 0) Fail("{}: cannot open: {}", path, std::strerror(errno));
  struct stat st {};
  if (::fstat(fd, &st) != 0) {
    const int saved = errno;
    ::close(fd);
    Fail("{}: cannot stat: {}", path, std::strerror(saved));
  }
  if (!S_ISREG(st.st_mode)) {
    ::close(fd);
    Fail("{}: not a regular file", path);
  }
  MappedFile file;
  file.path_ = path;
  file.size_ = static_cast<size_t>(st.st_size);
  if (file.size_ > 0) {
    void* address = ::mmap(nullptr, file.size_, PROT_READ, MAP_PRIVATE, fd, 0);
    if (address == MAP_FAILED) {
      const int saved = errno;
      ::close(fd);
      Fail("{}: cannot map {} bytes: {}", path, file.size_, std::strerror(saved));
    }
    file.data_ = static_cast<const uint8_t*>(address);
    file.is_mapping_ = true;
  }
  ::close(fd);
  return file;
}

MappedFile MappedFile::FromBytes(std::string name, std::vector<uint8_t> bytes) {
  MappedFile file;
  file.path_ = std::move(name);
  file.owned_ = std::move(bytes);
  file.data_ = file.owned_.data();
  file.size_ = file.owned_.size();
  return file;
}

MappedFile::~MappedFile() { Release(); }

MappedFile::MappedFile(MappedFile&& other) noexcept
    : path_(std::move(other.path_)),
      owned_(std::move(other.owned_)),
      data_(other.data_),
      size_(other.size_),
      is_mapping_(other.is_mapping_) {
  other.data_ = nullptr;
  other.size_ = 0;
  other.is_mapping_ = false;
}

MappedFile& MappedFile::operator=(MappedFile&& other) noexcept {
  if (this != &other) {
    Release();
    path_ = std::move(other.path_);
    owned_ = std::move(other.owned_);
    data_ = other.data_;
    size_ = other.size_;
    is_mapping_ = other.is_mapping_;
    other.data_ = nullptr;
    other.size_ = 0;
    other.is_mapping_ = false;
  }
  return *this;
}

void MappedFile::Release() {
  if (is_mapping_) ::munmap(const_cast<uint8_t*>(data_), size_);
  owned_.clear();
  is_mapping_ = false;
  data_ = nullptr;
  size_ = 0;
}

}  // namespace atq
