#include "io/input_file.h"

#include <sys/stat.h>

#include <cerrno>
#include <cstring>
#include <string_view>

#include "io/mapped_file.h"
#include "util/error.h"

namespace atq {

namespace {
std::string_view KindOf(mode_t mode) {
  if (S_ISDIR(mode)) return "a directory";
  if (S_ISFIFO(mode)) return "a FIFO (named pipe)";
  if (S_ISCHR(mode)) return "a character device";
  if (S_ISBLK(mode)) return "a block device";
  if (S_ISSOCK(mode)) return "a socket";
  return "not a regular file";
}
}  // namespace

void RequireRegularFile(const std::string& path) {
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0) {
    if (errno == ENOENT) Fail("{}: does not exist", path);
    Fail("{}: cannot open: {}", path, std::strerror(errno));
  }
  if (!S_ISREG(st.st_mode)) Fail("{}: is {}, not a regular file (atq reads inputs from regular files only)", path, KindOf(st.st_mode));
}

std::string ReadInputText(const std::string& path) {
  const MappedFile file = MappedFile::Open(path);
  return std::string(reinterpret_cast<const char*>(file.data()), file.size());
}

}  // namespace atq
