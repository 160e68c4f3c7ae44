// Temporary-name-then-rename writes.
#include "io/atomic_file.h"

#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstring>
#include <utility>

#include <fmt/format.h>

#include "util/error.h"

namespace atq {

AtomicFile::AtomicFile(std::string path) : path_(std::move(path)) {
  static std::atomic<int> counter{0};
  temp_path_ = fmt::format("{}.tmp.{}.{}", path_, ::getpid(), counter++);
  file_ = std::fopen(temp_path_.c_str(), "wb");
  if (file_ == nullptr) Fail("{}: cannot create {}: {}", path_, temp_path_, std::strerror(errno));
}

AtomicFile::~AtomicFile() {
  if (file_ != nullptr) std::fclose(file_);
  if (!committed_) std::remove(temp_path_.c_str());
}

void AtomicFile::Write(const void* data, size_t size) {
  if (size == 0) return;
  if (file_ == nullptr) Fail("{}: write after commit", path_);
  if (std::fwrite(data, 1, size, file_) != size) Fail("{}: write failed: {}", path_, std::strerror(errno));
  written_ += size;
}

void AtomicFile::WriteZeros(size_t count) {
  static constexpr char kZeros[256] = {};
  while (count > 0) {
    const size_t chunk = count < sizeof(kZeros) ? count : sizeof(kZeros);
    Write(kZeros, chunk);
    count -= chunk;
  }
}

void AtomicFile::Commit() {
  if (file_ == nullptr) Fail("{}: committed twice", path_);
  const bool flushed = std::fflush(file_) == 0 && ::fsync(::fileno(file_)) == 0;
  const int saved = errno;
  const bool closed = std::fclose(file_) == 0;
  file_ = nullptr;
  if (!flushed || !closed) Fail("{}: cannot finish writing: {}", path_, std::strerror(saved));
  if (std::rename(temp_path_.c_str(), path_.c_str()) != 0) {
    Fail("{}: cannot rename {} into place: {}", path_, temp_path_, std::strerror(errno));
  }
  committed_ = true;
}

void WriteFileAtomically(const std::string& path, std::string_view contents) {
  AtomicFile file(path);
  file.Write(contents);
  file.Commit();
}

}  // namespace atq
