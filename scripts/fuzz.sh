#!/usr/bin/env bash
# Builds every libFuzzer target (clang, ASan+UBSan) and runs each for SECONDS (default 60) from its seed corpus.
# A crash, leak, sanitizer report or any exception other than atq::Error fails the run.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
seconds="${1:-60}"
build="$root/build-fuzz"
CC=clang CXX=clang++ cmake -S "$root" -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DATQ_FUZZ=ON \
  -DATQ_WITH_TORCH=OFF -DATQ_BUILD_TESTS=OFF -DATQ_BUILD_BENCH=OFF >/dev/null
cmake --build "$build" --parallel "$(nproc)"
for source in "$root"/fuzz/fuzz_*.cc; do
  name="$(basename "$source" .cc)"
  corpus_name="${name#fuzz_}"
  work="$(mktemp -d)"
  [ -d "$root/fuzz/corpus/$corpus_name" ] && cp -r "$root/fuzz/corpus/$corpus_name/." "$work/"
  echo "== fuzz $name for ${seconds}s"
  status=0
  (cd "$work" && "$build/$name" -max_total_time="$seconds" -print_final_stats=1 -rss_limit_mb=2048 \
     -timeout=10 "$work" >"$work.log" 2>&1) || status=$?
  if [ "$status" -ne 0 ]; then
    tail -n 60 "$work.log"
    echo "fuzz: $name failed (exit $status); reproducer files are in $work"
    exit 1
  fi
  grep -E '^(stat::number_of_executed_runs|stat::peak_rss_mb)|^Done' "$work.log" || tail -n 3 "$work.log"
  rm -rf "$work" "$work.log"
done
