#!/usr/bin/env bash
# The image-text model's targets (issue: multimodal models), measured on this machine's cores:
#   1. full precision: `atq train-image-text` (towers + fusion, InfoNCE + matching) for FP_EPOCHS epochs
#   2. ternary: `atq train-image-text --mode ternary --init FP --distill FP` (ATQ thresholds by a sparsity target
#      with a ramp, STE, RPB) for QAT_EPOCHS epochs, written packed (t2)
#   3. `atq eval-image-text OUT/ternary/model.t2.safetensors --baseline OUT/fp`: the packed file through atq's
#      kernels against the FP model, with sizes, energy per query, plots
# and writes OUT/summary.json with each target and whether it is met:
#   FP zero-shot accuracy on held-out wordings >= 85%; ternary within 1.5 points of it; quantized layers >= 12x
#   smaller; training times.
#   bash scripts/bench_image_text.sh [OUT]   (default out/image_text; about an hour on 2 cores)
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
out="${1:-$root/out/image_text}"
atq="${ATQ:-$root/build/atq}"
threads="${THREADS:-2}"
fp_epochs="${FP_EPOCHS:-5}"
qat_epochs="${QAT_EPOCHS:-4}"
sparsity="${SPARSITY:-0.4}"
rpb="${RPB_FRACTION:-0.005}"
mkdir -p "$out"
if [[ ! -f "$out/fp/config.json" ]]; then
  "$atq" train-image-text --epochs "$fp_epochs" --threads "$threads" --out "$out/fp" --plot "$out/fp_epochs.png"
fi
if [[ ! -f "$out/ternary/model.t2.safetensors" ]]; then
  "$atq" train-image-text --epochs "$qat_epochs" --threads "$threads" --lr 1e-3 --mode ternary \
    --sparsity "$sparsity" --ramp-epochs 1 --use-rpb --rpb-fraction "$rpb" \
    --init "$out/fp" --distill "$out/fp" --out "$out/ternary" --plot "$out/ternary_epochs.png"
fi
"$atq" eval-image-text "$out/ternary/model.t2.safetensors" --baseline "$out/fp" --threads "$threads" \
  --json "$out/eval.json" --plot-confusion "$out/confusion_ternary.png" --plot-ternary "$out/ternary_codes.png" \
  --plot-compare "$out/fp_vs_ternary.png"
python3 - "$out" <<'PY'
import json, sys, pathlib
out = pathlib.Path(sys.argv[1])
ev = json.loads((out / "eval.json").read_text())
fp, tq = ev["baseline"]["report"], ev["report"]
fp_train = json.loads((out / "fp" / "config.json").read_text())["training"]
tq_train = json.loads((out / "ternary" / "config.json").read_text())["training"]
fp_acc, tq_acc = fp["metrics"]["zero_shot_accuracy"], tq["metrics"]["zero_shot_accuracy"]
ratio = tq["size"]["quantized_layers_compression"]
summary = {
    "fp": {"metrics": fp["metrics"], "size": fp["size"], "energy_per_query_pj": fp["energy_per_query"]["total_pj"],
           "images_per_second": fp["images_per_second"], "training_seconds": fp_train["seconds"],
           "training_threads": fp_train["threads"]},
    "ternary_packed_kernels": {"metrics": tq["metrics"], "size": tq["size"],
                               "energy_per_query_pj": tq["energy_per_query"]["total_pj"],
                               "images_per_second": tq["images_per_second"],
                               "training_seconds": tq_train["seconds"], "training_threads": tq_train["threads"]},
    "targets": {
        "fp_zero_shot_at_least_85": {"value": fp_acc, "met": fp_acc >= 0.85},
        "ternary_within_1_5_points": {"value": tq_acc - fp_acc, "met": fp_acc - tq_acc <= 0.015},
        "quantized_layers_at_least_12x_smaller": {"value": ratio, "met": ratio >= 12},
    },
}
for m in (summary["fp"], summary["ternary_packed_kernels"]):
    m["metrics"].pop("zero_shot_confusion", None)
(out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
for name, t in summary["targets"].items():
    print(f"{name}: {t['value']:.4f} {'met' if t['met'] else 'NOT met'}")
PY
