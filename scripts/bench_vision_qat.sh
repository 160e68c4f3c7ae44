#!/usr/bin/env bash
# Ternary QAT of the fixtures' classifiers (torchvision's ResNet-18, timm's ViT-Tiny) against their FP32 accuracy.
# For each model in MODELS: `atq train --mode ternary` from the fixture and distilled from it (ATQ thresholds at
# 0.7 x mean |w| per channel, first and last layers float, SUBSET training images, EPOCHS epochs, scored on the
# whole test set), then `atq ptq` of the result with 8-bit activations (the ternary layers kept, the first and last
# to W8A8). Writes out/benchmark/vision/qat/<model>-ternary/ and out/benchmark/vision/qat/summary.json (target:
# within 1 point of the fixture's FP32 accuracy, from its reference.json) and prints the targets.
# MODELS ("resnet18 vit-tiny"), SUBSET (20000), EPOCHS (1), BATCH (128), LR (2e-4), THREADS (2) override.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
atq="${ATQ_BIN:-${ATQ_BUILD_DIR:-$root/build}/atq}"
fixtures="${ATQ_FIXTURES:-$root/../shared/fixtures}"
out="$root/out/benchmark/vision/qat"
read -r -a models <<<"${MODELS:-resnet18 vit-tiny}"
mkdir -p "$out"
for model in "${models[@]}"; do
  weights="$fixtures/$model/model.safetensors"
  [[ -f "$weights" ]] || { echo "bench_vision_qat: no $model fixture at $weights"; exit 1; }
  "$atq" train --model "$model" --init "$weights" --distill "$weights" --mode ternary \
    --threshold-mode magnitude_relative --magnitude 0.7 --subset "${SUBSET:-20000}" --epochs "${EPOCHS:-1}" \
    --batch-size "${BATCH:-128}" --learning-rate "${LR:-2e-4}" --threads "${THREADS:-2}" --out "$out/$model-ternary"
  "$atq" ptq "$out/$model-ternary" --wbits 8 --abits 8 --calib 512 --threads "${THREADS:-2}" \
    --json "$out/$model-ternary-A8.json"
done
python3 - "$out" "$fixtures" "${models[@]}" <<'PY'
import json, pathlib, sys
out, fixtures = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2])
summary = {}
for model in sys.argv[3:]:
    fp = json.loads((fixtures / model / "reference.json").read_text())["test_accuracy"]
    metrics = json.loads((out / f"{model}-ternary" / "metrics.json").read_text())
    last = metrics["epochs"][-1]
    ternary = metrics["final"]["accuracy"]
    a8 = json.loads((out / f"{model}-ternary-A8.json").read_text())
    summary[model] = {"fp32_accuracy": fp, "ternary_accuracy": ternary, "sparsity": last["sparsity"],
                      "training_seconds": sum(e["seconds"] for e in metrics["epochs"]),
                      "epochs": len(metrics["epochs"]),
                      "ternary_a8": {"accuracy": a8["result"]["accuracy"], "model_bytes": a8["result"]["model_bytes"],
                                     "energy_pj": a8["result"]["energy_pj"]},
                      "as_trained": {"accuracy": a8["baseline"]["accuracy"], "model_bytes": a8["baseline"]["model_bytes"]},
                      "target_within_1_point": {"value": ternary - fp, "met": ternary >= fp - 0.01}}
(out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
print(json.dumps({m: s["target_within_1_point"] | {"fp32": s["fp32_accuracy"], "ternary": s["ternary_accuracy"]}
                  for m, s in summary.items()}, indent=1))
PY
