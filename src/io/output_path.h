// Outputs are checked before any work starts, so a long run never ends in "cannot write" or, worse, in
// overwriting what it read: an output may not be, or lie inside, one of the run's inputs; its folder must exist
// or be creatable, and be writable. OutputLock keeps two runs from writing the same output at once.
#pragma once

#include <string>
#include <vector>

namespace atq {

// `option` names the output in errors ("--out"). Throws atq::UsageError for an empty path and atq::Error for an
// output that is or is inside an input, or whose folder cannot be written.
void CheckOutputPath(const std::string& output, const std::vector<std::string>& inputs, const std::string& option);

// An advisory lock on `output` (flock on OUTPUT.lock beside it): a second atq run writing the same output fails
// at once naming it. The kernel drops the lock when the process dies, so kill -9 leaves nothing that blocks the
// next run; the lock file is removed on a normal exit.
class OutputLock {
 public:
  explicit OutputLock(const std::string& output);
  ~OutputLock();
  OutputLock(const OutputLock&) = delete;
  OutputLock& operator=(const OutputLock&) = delete;

 private:
  std::string path_;
  int fd_ = -1;
};

}  // namespace atq
