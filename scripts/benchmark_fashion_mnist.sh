#!/usr/bin/env bash
# Issue 3's targets on full Fashion-MNIST with the CNN: full precision, then ATQ ternary (initialized from and
# distilled from the FP model, sparsity ramped to the target, residual precision boosting), evaluated and packed.
# Writes out/benchmark/fashion_mnist.json with accuracies, zero shares, packed sizes and seconds per epoch.
# Long: on 2 CPU cores an epoch of this CNN takes minutes. EPOCHS / TERNARY_EPOCHS / SPARSITY / THREADS override
# (THREADS=1 leaves a core free for other work; OpenMP threads that share cores with other jobs stall).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
atq="${ATQ_BUILD_DIR:-$root/build}/atq"
out="$root/out/benchmark"
epochs="${EPOCHS:-25}"
ternary_epochs="${TERNARY_EPOCHS:-25}"
sparsity="${SPARSITY:-0.6}"
threads="${THREADS:-0}"
mkdir -p "$out"
"$atq" train --model cnn --epochs "$epochs" --batch-size 256 --learning-rate 0.002 --weight-decay 0.0005 --augment \
  --threads "$threads" --seed 1 --out "$out/cnn-fp32"
"$atq" train --model cnn --epochs "$ternary_epochs" --batch-size 256 --learning-rate 0.001 --augment --seed 1 \
  --threads "$threads" --mode ternary --sparsity "$sparsity" --ramp-epochs $((ternary_epochs / 3)) --use-rpb --rpb-fraction 0.001 \
  --init "$out/cnn-fp32" --distill "$out/cnn-fp32" --out "$out/cnn-ternary"
"$atq" evaluate "$out/cnn-fp32" --json "$out/cnn-fp32.eval.json"
"$atq" evaluate "$out/cnn-ternary" --baseline "$out/cnn-fp32" --visualize --plots "$out/plots" \
  --json "$out/cnn-ternary.eval.json"
"$atq" export "$out/cnn-ternary" --format ternary2 --out "$out/cnn-ternary-2bit.safetensors"
python3 - "$out" <<'PY'
import json, sys
out = sys.argv[1]
fp = json.load(open(f"{out}/cnn-fp32.eval.json"))
tq = json.load(open(f"{out}/cnn-ternary.eval.json"))
m_fp = json.load(open(f"{out}/cnn-fp32/metrics.json"))
m_tq = json.load(open(f"{out}/cnn-ternary/metrics.json"))
ternary = [l for l in tq["layers"] if l["share_zero"] > 0 and l["fp32_bytes"] != l["packed_bytes"]]
zeros = sum(l["share_zero"] * l["weights"] for l in ternary) / max(1, sum(l["weights"] for l in ternary))
result = {
  "fp32_accuracy": fp["accuracy"], "ternary_accuracy": tq["accuracy"],
  "ternary_zero_share": zeros,
  "ternary_layers_compression": tq["size"]["quantized_layers_compression"],
  "seconds_per_epoch_fp32": m_fp["seconds_per_epoch"], "seconds_per_epoch_ternary": m_tq["seconds_per_epoch"],
  "threads": m_fp["threads"],
  "targets": {"fp32_accuracy>=0.930": fp["accuracy"] >= 0.930, "ternary_accuracy>=0.925": tq["accuracy"] >= 0.925,
              "zero_share>=0.5": zeros >= 0.5, "compression>=15": tq["size"]["quantized_layers_compression"] >= 15},
}
json.dump(result, open(f"{out}/fashion_mnist.json", "w"), indent=2)
print(json.dumps(result, indent=2))
PY
