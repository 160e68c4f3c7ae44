// Temporary-name-then-rename writes.
#include "io/atomic_file.h"

#include <signal.h>
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

extern "C" void RemoveTemporariesAndDie(int signal_number) {
  for (int i = 0; i < kMaxTemporaries; ++i) {
    if (g_in_use[i].load()) ::unlink(g_temporaries[i]);
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
    fs::remove(it->path(), ignored);
  }
}

}  // namespace

AtomicFile::AtomicFile(std::string path) : path_(std::move(path)) {
  static std::atomic<int> counter{0};
  RemoveStaleTemporaries(path_);
  temp_path_ = fmt::format("{}.tmp.{}.{}", path_, ::getpid(), counter++);
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
