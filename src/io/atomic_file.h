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

// An output folder written as a whole (a packed checkpoint: weights, config, tokenizer, report), so that a reader
// never sees a folder mixing two runs or missing a file: everything goes into a staging folder beside it
// (`dir.tmp.<pid>.<n>`), and Commit() puts that in place with one rename, or, where a previous run's folder is
// there, with one atomic exchange (renameat2 RENAME_EXCHANGE) after which the old one is removed. Until Commit the
// final folder is untouched. The staging folder is removed on an error (destructor) and on SIGINT/SIGTERM/SIGHUP;
// one a kill -9 left is removed by the next run writing the same output.
class StagedFolder {
 public:
  // `marker`: a file every such output holds (e.g. quantize_report.json); an existing non-empty folder without it
  // was not written by atq and is refused rather than replaced. Throws atq::Error naming `dir`.
  StagedFolder(std::string dir, std::string marker);
  ~StagedFolder();
  StagedFolder(const StagedFolder&) = delete;
  StagedFolder& operator=(const StagedFolder&) = delete;

  const std::string& path() const { return staging_; }  // write here
  const std::string& final_path() const { return dir_; }
  void Commit();

  // The check alone, for commands to make before any work: `dir` is absent, an empty folder, or a folder holding
  // `marker`. `option` names it in the error ("--out").
  static void CheckReplaceable(const std::string& dir, const std::string& marker, const std::string& option);

 private:
  std::string dir_, marker_, staging_;
  bool committed_ = false;
  int slot_ = -1;
};

}  // namespace atq
