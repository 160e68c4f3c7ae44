// Temporary-name-then-rename writes.
#include "io/atomic_file.h"

#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <csignal>
#include <cstring>
#include <filesystem>
#include <mutex>
#include <string_view>
#include <utility>

#include <fmt/format.h>

#include "util/error.h"

namespace atq {
namespace {

// Temporaries being written, for the SIGINT/SIGTERM handler: fixed slots of plain chars, because a handler may
// only call async-signal-safe functions (unlink, signal, raise) and must not allocate or lock.
constexpr int kMaxTemporaries = 64;
constexpr size_t kMaxTempPath = 4096;
char g_temporaries[kMaxTemporaries][kMaxTempPath];
std::atomic<bool> g_in_use[kMaxTemporaries];

// A staging folder's files and then the folder, with raw system calls only (getdents64, unlinkat, rmdir are
// async-signal-safe; opendir/readdir allocate). Staging folders are flat.
void RemoveFlatFolder(const char* path) {
  const int fd = ::open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) return;
  alignas(8) char buffer[4096];
  for (;;) {
    const long bytes = ::syscall(SYS_getdents64, fd, buffer, sizeof(buffer));
    if (bytes <= 0) break;
    for (long offset = 0; offset < bytes;) {
      // struct linux_dirent64: u64 inode, s64 offset, u16 record length, u8 type, then the NUL-terminated name.
      unsigned short length;
      std::memcpy(&length, buffer + offset + 16, sizeof(length));
      const char* name = buffer + offset + 19;
      if (!(name[0] == '.' && (name[1] == '\0' || (name[1] == '.' && name[2] == '\0')))) ::unlinkat(fd, name, 0);
      offset += length;
    }
  }
  ::close(fd);
  ::rmdir(path);
}

extern "C" void RemoveTemporariesAndDie(int signal_number) {
  for (int i = 0; i < kMaxTemporaries; ++i) {
    if (g_in_use[i].load()) ::unlink(g_temporaries[i]);
  }
  // Folders after files: a file being written inside a staging folder is gone by now.
  for (int i = 0; i < kMaxTemporaries; ++i) {
    if (g_in_use[i].load()) RemoveFlatFolder(g_temporaries[i]);
  }
  std::signal(signal_number, SIG_DFL);
  std::raise(signal_number);
}

int RegisterTemporary(const std::string& path) {
  static std::once_flag installed;
  std::call_once(installed, [] {
    for (int signal_number : {SIGINT, SIGTERM, SIGHUP}) {
      struct sigaction action {};
      action.sa_handler = RemoveTemporariesAndDie;
      sigemptyset(&action.sa_mask);
      struct sigaction previous {};
      // Only where nobody else handles the signal (libraries, tests), so their handlers keep working.
      if (::sigaction(signal_number, nullptr, &previous) == 0 && previous.sa_handler == SIG_DFL) {
        ::sigaction(signal_number, &action, nullptr);
      }
    }
  });
  if (path.size() >= kMaxTempPath) return -1;
  static std::mutex mutex;
  std::lock_guard<std::mutex> lock(mutex);
  for (int i = 0; i < kMaxTemporaries; ++i) {
    if (!g_in_use[i].load()) {
      std::memcpy(g_temporaries[i], path.c_str(), path.size() + 1);
      g_in_use[i].store(true);
      return i;
    }
  }
  return -1;  // more than 64 at once: still removed by the destructor, just not on a signal
}

// `path`.tmp.<pid>.<n> files left by runs that no longer exist (killed with -9, power lost): removed, so stale
// temporaries never pile up beside an output. A live process's temporaries are left alone.
void RemoveStaleTemporaries(const std::string& path) {
  namespace fs = std::filesystem;
  const fs::path target(path);
  const std::string prefix = target.filename().string() + ".tmp.";
  std::error_code error;
  const fs::path folder = target.has_parent_path() ? target.parent_path() : fs::path(".");
  for (fs::directory_iterator it(folder, error), end; !error && it != end; it.increment(error)) {
    const std::string name = it->path().filename().string();
    if (name.compare(0, prefix.size(), prefix) != 0) continue;
    const std::string rest = name.substr(prefix.size());
    const size_t dot = rest.find('.');
    if (dot == std::string::npos || dot == 0) continue;
    const std::string pid_text = rest.substr(0, dot);
    if (pid_text.find_first_not_of("0123456789") != std::string::npos || pid_text.size() > 9) continue;
    const pid_t pid = static_cast<pid_t>(std::stol(pid_text));
    if (pid == ::getpid() || ::kill(pid, 0) == 0 || errno != ESRCH) continue;
    std::error_code ignored;
    fs::remove_all(it->path(), ignored);
  }
}

std::string TemporaryName(const std::string& path) {
  static std::atomic<int> counter{0};
  return fmt::format("{}.tmp.{}.{}", path, ::getpid(), counter++);
}

}  // namespace

AtomicFile::AtomicFile(std::string path) : path_(std::move(path)) {
  RemoveStaleTemporaries(path_);
  temp_path_ = TemporaryName(path_);
  file_ = std::fopen(temp_path_.c_str(), "wb");
  if (file_ == nullptr) Fail("{}: cannot create {}: {}", path_, temp_path_, std::strerror(errno));
  slot_ = RegisterTemporary(temp_path_);
}

AtomicFile::~AtomicFile() {
  if (file_ != nullptr) std::fclose(file_);
  if (!committed_) std::remove(temp_path_.c_str());
  if (slot_ >= 0) g_in_use[slot_].store(false);
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
  if (slot_ >= 0) g_in_use[slot_].store(false);
  slot_ = -1;
}

void WriteFileAtomically(const std::string& path, std::string_view contents) {
  AtomicFile file(path);
  file.Write(contents);
  file.Commit();
}

}  // namespace atq

namespace atq {

void StagedFolder::CheckReplaceable(const std::string& dir, const std::string& marker, const std::string& option) {
  namespace fs = std::filesystem;
  std::error_code error;
  const fs::file_status status = fs::symlink_status(dir, error);
  if (!fs::exists(status)) return;
  Require(fs::is_directory(status), "{} {}: exists and is not a folder", option, dir);
  if (fs::is_empty(dir, error) || fs::exists(fs::path(dir) / marker, error)) return;
  Fail("{} {}: the folder exists and holds files atq did not write there (no {}); atq replaces its output folder "
       "as a whole, so give a new or empty folder",
       option, dir, marker);
}

StagedFolder::StagedFolder(std::string dir, std::string marker) : dir_(std::move(dir)), marker_(std::move(marker)) {
  namespace fs = std::filesystem;
  while (!dir_.empty() && dir_.size() > 1 && dir_.back() == '/') dir_.pop_back();
  CheckReplaceable(dir_, marker_, "output");
  RemoveStaleTemporaries(dir_);
  staging_ = TemporaryName(dir_);
  std::error_code error;
  if (fs::path(dir_).has_parent_path()) fs::create_directories(fs::path(dir_).parent_path(), error);
  if (!fs::create_directory(staging_, error) || error) {
    Fail("{}: cannot create the staging folder {}: {}", dir_, staging_, error ? error.message() : "it exists");
  }
  slot_ = RegisterTemporary(staging_);
}

StagedFolder::~StagedFolder() {
  if (!committed_) {
    std::error_code ignored;
    std::filesystem::remove_all(staging_, ignored);
  }
  if (slot_ >= 0) g_in_use[slot_].store(false);
}

void StagedFolder::Commit() {
  namespace fs = std::filesystem;
  Require(!committed_, "{}: committed twice", dir_);
  Require(fs::exists(fs::path(staging_) / marker_), "{}: the output is incomplete (no {})", dir_, marker_);
  CheckReplaceable(dir_, marker_, "output");  // again: someone may have put files there during the run
  std::error_code error;
  if (!fs::exists(dir_, error)) {
    if (std::rename(staging_.c_str(), dir_.c_str()) != 0) {
      Fail("{}: cannot rename {} into place: {}", dir_, staging_, std::strerror(errno));
    }
  } else {
    // The previous output and the new one trade places in one step; the old one, now under the staging name,
    // is then removed.
    if (::renameat2(AT_FDCWD, staging_.c_str(), AT_FDCWD, dir_.c_str(), RENAME_EXCHANGE) != 0) {
      Fail("{}: cannot exchange {} with the previous output: {}", dir_, staging_, std::strerror(errno));
    }
    fs::remove_all(staging_, error);
  }
  committed_ = true;
  if (slot_ >= 0) g_in_use[slot_].store(false);
  slot_ = -1;
}

}  // namespace atq
