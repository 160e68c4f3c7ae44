#include "io/output_path.h"

#include <fcntl.h>
#include <sys/file.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <system_error>

#include "util/error.h"

namespace atq {
namespace fs = std::filesystem;
namespace {

// The absolute, symlink-resolved form of a path whose tail may not exist yet.
fs::path Resolved(const std::string& path) {
  std::error_code error;
  fs::path resolved = fs::weakly_canonical(fs::absolute(path, error), error);
  return error ? fs::absolute(path).lexically_normal() : resolved;
}

bool IsSameOrInside(const fs::path& inner, const fs::path& outer) {
  auto a = inner.begin(), b = outer.begin();
  for (; b != outer.end(); ++a, ++b) {
    if (b->empty()) continue;  // a trailing separator
    if (a == inner.end() || *a != *b) return false;
  }
  return true;
}

}  // namespace

void CheckOutputPath(const std::string& output, const std::vector<std::string>& inputs, const std::string& option) {
  if (output.empty()) throw UsageError(fmt::format("{}: the output path is empty", option));
  const fs::path out = Resolved(output);
  for (const std::string& input : inputs) {
    if (input.empty()) continue;
    const fs::path in = Resolved(input);
    Require(!IsSameOrInside(out, in), "{} {}: this is {} {}, an input of this run; atq never writes over what it "
            "reads (choose another output)", option, output, out == in ? "the same path as" : "inside", input);
  }
  // The nearest folder that exists must be writable (the rest is created there).
  std::error_code error;
  fs::path folder = out.parent_path();
  while (!folder.empty() && !fs::exists(folder, error)) folder = folder.parent_path();
  if (folder.empty()) folder = ".";
  Require(fs::is_directory(folder, error), "{} {}: {} is not a folder", option, output, folder.string());
  Require(::access(folder.c_str(), W_OK) == 0, "{} {}: cannot write in {}: {}", option, output, folder.string(),
          std::strerror(errno));
  if (fs::exists(out, error) && !fs::is_directory(out, error)) {
    Require(::access(out.c_str(), W_OK) == 0 || errno != EACCES, "{} {}: exists and is not writable", option,
            output);
  }
}

OutputLock::OutputLock(const std::string& output) {
  fs::path target = fs::absolute(output).lexically_normal();
  if (target.filename().empty()) target = target.parent_path();
  std::error_code error;
  fs::create_directories(target.parent_path(), error);
  path_ = target.string() + ".lock";
  fd_ = ::open(path_.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
  if (fd_ < 0) Fail("{}: cannot create the lock file {}: {}", output, path_, std::strerror(errno));
  if (::flock(fd_, LOCK_EX | LOCK_NB) != 0) {
    const int saved = errno;
    ::close(fd_);
    fd_ = -1;
    if (saved == EWOULDBLOCK) Fail("{}: another atq run is writing this output now (lock {})", output, path_);
    Fail("{}: cannot lock {}: {}", output, path_, std::strerror(saved));
  }
}

OutputLock::~OutputLock() {
  if (fd_ < 0) return;
  ::unlink(path_.c_str());  // while still held, so no other run sees a file it could lock after we let go
  ::close(fd_);
}

}  // namespace atq
