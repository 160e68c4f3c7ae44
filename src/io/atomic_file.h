// Writes a file under a temporary name in the same folder and renames it into place only when complete,
// so a failed or interrupted write never leaves a half-written output behind: the temporary is removed on an
// error (destructor) and on SIGINT/SIGTERM/SIGHUP (a handler), and a later write of the same output removes
// temporaries that killed runs (-9) left.
#pragma once

#include <cstddef>
#include <cstdio>
#include <string>
#include <string_view>

namespace atq {

class AtomicFile {
 public:
  // Creates `path.tmp.<pid>.<n>`; throws atq::Error naming `path` on failure.
  explicit AtomicFile(std::string path);
  ~AtomicFile();  // removes the temporary file unless Commit() succeeded
  AtomicFile(const AtomicFile&) = delete;
  AtomicFile& operator=(const AtomicFile&) = delete;

  void Write(const void* data, size_t size);
  void Write(std::string_view text) { Write(text.data(), text.size()); }
  // Writes `count` zero bytes (alignment padding).
  void WriteZeros(size_t count);
  size_t bytes_written() const { return written_; }
  // Flushes, syncs and renames over `path`.
  void Commit();

  const std::string& path() const { return path_; }

 private:
  std::string path_;
  std::string temp_path_;
  std::FILE* file_ = nullptr;
  size_t written_ = 0;
  bool committed_ = false;
  int slot_ = -1;  // in the signal handler's table of temporaries
};

// Writes a whole small file (JSON, CSV) atomically.
void WriteFileAtomically(const std::string& path, std::string_view contents);

}  // namespace atq
