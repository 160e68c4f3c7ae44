#!/usr/bin/env bash
# Issue 7's figures: the packed kernels against memory bandwidth and libtorch float32 (kernel level, default
# shapes plus 16384x16384 and 32768x32768 ternary), and the fixture LLMs run in every format (model level).
# Writes out/benchmark/kernels/{kernels,large}.{json,txt}, kernels.png and out/benchmark/runtime/<model>.{json,txt,png}.
# THREADS (model level, default 2) overrides.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
atq="${ATQ_BUILD_DIR:-$root/build}/atq"
fixtures="${ATQ_FIXTURES:-$root/../shared/fixtures}"
threads="${THREADS:-2}"
mkdir -p "$root/out/benchmark/kernels" "$root/out/benchmark/runtime"
for model in llama-mini gpt2-mini; do
  "$atq" bench --model "$fixtures/$model/model" --model-threads "$threads" --prompt-tokens 64 --decode-tokens 128 \
    --json "$root/out/benchmark/runtime/$model.json" --plot "$root/out/benchmark/runtime/$model.png" |
    tee "$root/out/benchmark/runtime/$model.txt"
done
"$atq" bench --json "$root/out/benchmark/kernels/kernels.json" --plot "$root/out/benchmark/kernels/kernels.png" |
  tee "$root/out/benchmark/kernels/kernels.txt"
"$atq" bench --shapes 16384x16384,32768x32768 --types t2,tq2_0 --batch 1 --threads 1,2 --min-seconds 1 \
  --json "$root/out/benchmark/kernels/large.json" | tee "$root/out/benchmark/kernels/large.txt"
