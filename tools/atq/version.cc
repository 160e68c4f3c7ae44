// atq version: the version, compiler, and which optional layers were built in.
#include <cstdio>

#include <hwy/targets.h>

#include "command.h"

namespace atq::cli {

RunFn DeclareVersion(CLI::App&) {
  return [] {
#ifdef ATQ_WITH_TORCH
    constexpr const char* kTorch = "with libtorch";
#else
    constexpr const char* kTorch = "without libtorch";
#endif
    std::printf("atq %s (%s, C++%ld, %s, SIMD targets supported here: ", ATQ_VERSION, __VERSION__,
                static_cast<long>(__cplusplus / 100 % 100), kTorch);
    bool first = true;
    for (int64_t target : hwy::SupportedAndGeneratedTargets()) {
      std::printf("%s%s", first ? "" : " ", hwy::TargetName(target));
      first = false;
    }
    std::printf(")\n");
    return 0;
  };
}

}  // namespace atq::cli
