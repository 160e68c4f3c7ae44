#!/usr/bin/env bash
# Builds every libFuzzer target (clang, ASan+UBSan) and runs each for SECONDS (default 60) from its seed corpus.
# A crash, leak, sanitizer report or any exception other than atq::Error fails the run. With ATQ_FUZZ_JSON set,
# each target's executions, coverage, peak memory and findings are written there as JSON.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
seconds="${1:-60}"
build="$root/build-fuzz"
CC=clang CXX=clang++ cmake -S "$root" -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DATQ_FUZZ=ON \
  -DATQ_WITH_TORCH=OFF -DATQ_BUILD_TESTS=OFF -DATQ_BUILD_BENCH=OFF >/dev/null
cmake --build "$build" --parallel "$(nproc)"
rows=()
for source in "$root"/fuzz/fuzz_*.cc; do
  name="$(basename "$source" .cc)"
  corpus_name="${name#fuzz_}"
  work="$(mktemp -d)"
  [ -d "$root/fuzz/corpus/$corpus_name" ] && cp -r "$root/fuzz/corpus/$corpus_name/." "$work/"
  echo "== fuzz $name for ${seconds}s"
  status=0
  # The targets that need files write them under TMPDIR: one folder per run, removed after it.
  mkdir -p "$work.tmp"
  (cd "$work" && TMPDIR="$work.tmp" "$build/$name" -max_total_time="$seconds" -print_final_stats=1 \
     -rss_limit_mb=2048 -timeout=10 "$work" >"$work.log" 2>&1) || status=$?
  rm -rf "$work.tmp"
  if [ "$status" -ne 0 ]; then
    tail -n 60 "$work.log"
    echo "fuzz: $name failed (exit $status); reproducer files are in $work"
    exit 1
  fi
  runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$work.log")
  rss=$(sed -n 's/^stat::peak_rss_mb: *//p' "$work.log")
  cov=$(grep -o 'cov: [0-9]*' "$work.log" | tail -n 1 | cut -d' ' -f2)
  echo "$name: $runs runs, coverage $cov edges, peak RSS $rss MB, no findings"
  rows+=("{\"target\": \"$name\", \"seconds\": $seconds, \"runs\": ${runs:-0}, \"coverage_edges\": ${cov:-0}, \"peak_rss_mb\": ${rss:-0}, \"findings\": 0}")
  rm -rf "$work" "$work.log"
done
if [ -n "${ATQ_FUZZ_JSON:-}" ]; then
  (IFS=','; echo "{\"fuzzers\": [${rows[*]}]}") > "$ATQ_FUZZ_JSON.tmp"
  mv "$ATQ_FUZZ_JSON.tmp" "$ATQ_FUZZ_JSON"
  echo "wrote $ATQ_FUZZ_JSON"
fi
