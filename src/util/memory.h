// This process's memory as the kernel counts it (/proc/self/status), for the memory figures of runs.
#pragma once

#include <cstdint>

namespace atq {

int64_t ResidentBytes();      // VmRSS now; 0 where /proc is missing
int64_t PeakResidentBytes();  // VmHWM: the most this process has held resident so far; 0 where /proc is missing

}  // namespace atq
