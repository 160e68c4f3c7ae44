// This process's memory as the kernel counts it (/proc/self/status), for the memory figures of runs.
#pragma once

#include <cstdint>

namespace atq {

int64_t ResidentBytes();      // VmRSS now; 0 where /proc is missing
int64_t PeakResidentBytes();  // VmHWM: the most this process has held resident so far; 0 where /proc is missing
// RssAnon now: resident memory that is not a file's pages (a mapped model's weights are not counted). Linux keeps
// no high-water mark of it; scripts/bench_large_model.py samples it from outside.
int64_t AnonymousResidentBytes();

}  // namespace atq
