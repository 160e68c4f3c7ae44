#!/usr/bin/env bash
# The whole test suite: unit and CLI tests (Release), the core tests again under ASan+UBSan, and every
# libFuzzer target for ATQ_FUZZ_SECONDS (default 60) each. Run scripts/setup.sh first.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
jobs="$(nproc)"

echo "== unit and CLI tests (Release)"
build="${ATQ_BUILD_DIR:-$root/build}"
cmake -S "$root" -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build "$build" --parallel "$jobs"
ctest --test-dir "$build" --output-on-failure --parallel "$jobs"

if [ "${ATQ_SKIP_SANITIZERS:-0}" != 1 ]; then
  echo "== core tests under AddressSanitizer + UndefinedBehaviorSanitizer"
  asan="$root/build-asan"
  cmake -S "$root" -B "$asan" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DATQ_SANITIZE=ON \
    -DATQ_WITH_TORCH=OFF -DATQ_BUILD_BENCH=OFF >/dev/null
  cmake --build "$asan" --parallel "$jobs" --target atq_core_tests
  ASAN_OPTIONS=detect_leaks=1 UBSAN_OPTIONS=print_stacktrace=1 "$asan/atq_core_tests" --gtest_brief=1
fi

if [ "${ATQ_FUZZ_SECONDS:-60}" -gt 0 ]; then
  bash "$root/scripts/fuzz.sh" "${ATQ_FUZZ_SECONDS:-60}"
fi
echo "== all tests passed"
