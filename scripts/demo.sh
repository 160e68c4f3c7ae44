#!/usr/bin/env bash
# The demo, a few minutes on 2 cores:
#   1. every format of the table on a real checkpoint (bits per weight, size, error);
#   2. Fashion-MNIST: train a full-precision MLP, train its ternary twin by ATQ (initialized from it, distilled
#      from it, sparsity ramped to 50%), evaluate both, draw the plots, export the packed 1.6-bit model.
# Small on purpose (an MLP on a subset); `scripts/benchmark_fashion_mnist.sh` runs the full-size CNN targets.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
atq="${ATQ_BUILD_DIR:-$root/build}/atq"
fixtures="${ATQ_FIXTURES:-$root/../shared/fixtures}"
out="$root/out/demo"
mkdir -p "$out"

echo "== 1. formats on real weights"
if [ -f "$fixtures/vit-tiny/model.safetensors" ]; then
  "$atq" roundtrip "$fixtures/vit-tiny/model.safetensors" --json "$out/roundtrip.json"
else
  echo "demo: no fixtures at $fixtures; measuring synthetic weights instead"
  "$atq" roundtrip --synthetic --json "$out/roundtrip.json"
fi

echo "== 2. Fashion-MNIST: full precision, then ATQ ternary"
common=(--model mlp --subset 20000 --test-subset 5000 --batch-size 128 --threads 0 --seed 1)
"$atq" train "${common[@]}" --epochs 3 --learning-rate 0.002 --out "$out/fp32"
"$atq" train "${common[@]}" --epochs 3 --learning-rate 0.001 --mode ternary --sparsity 0.5 --ramp-epochs 2 \
  --quantize-first-last --use-rpb --rpb-fraction 0.001 --init "$out/fp32" --distill "$out/fp32" --out "$out/ternary"
"$atq" evaluate "$out/ternary" --baseline "$out/fp32" --visualize --plots "$out/plots" --json "$out/evaluation.json"
"$atq" export "$out/ternary" --format ternary1.6 --out "$out/ternary-1.6bit.safetensors"
echo "demo: results in $out (roundtrip.json, evaluation.json, plots/*.png)"
