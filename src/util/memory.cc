// Reading VmRSS and VmHWM from /proc/self/status.
#include "util/memory.h"

#include <fstream>
#include <string>

namespace atq {
namespace {

int64_t StatusBytes(const std::string& wanted) {
  std::ifstream status("/proc/self/status");
  std::string key;
  while (status >> key) {
    if (key == wanted) {
      int64_t kib = 0;
      status >> kib;
      return kib * 1024;
    }
  }
  return 0;
}

}  // namespace

int64_t ResidentBytes() { return StatusBytes("VmRSS:"); }
int64_t PeakResidentBytes() { return StatusBytes("VmHWM:"); }
int64_t AnonymousResidentBytes() { return StatusBytes("RssAnon:"); }

}  // namespace atq
