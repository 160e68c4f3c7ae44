#!/usr/bin/env bash
# The text-to-image model's figures (issue: multimodal models), measured on this machine's cores:
#   1. `atq train-diffusion` on captioned Fashion-MNIST (EPOCHS epochs), the captions read by the image-text
#      model's text tower (IMAGE_TEXT, default out/image_text/fp from scripts/bench_image_text.sh)
#   2. `atq eval-diffusion` on SAMPLES images for held-out wordings (DDIM STEPS steps, guidance GUIDANCE): class
#      accuracy by the ResNet-18 fixture, Fréchet distance to as many real test images in its features, images/s
#   3. the same evaluation after post-training quantization of the UNet and the text tower, for each of SETTINGS
#      (default W8A8 W6A6 W4A8: per-channel weights, activation grids calibrated per timestep range), on the same
#      prompts and noise
#   3b. W8A8 once more with SMOOTH_FLAGS (default: absmax weight scales and SmoothQuant's channel divisors,
#      `--weight-clip max --smooth 0.5`), as W8A8-smooth
#   4. `atq generate-image` grid of the same prompts and seeds: FP, W8A8 and W4A8 blocks one above the other
#   5. (TERNARY_EPOCHS > 0, default 2) ternary QAT of the UNet from the FP one, distilled from it (`atq
#      train-diffusion --init fp --distill fp --mode ternary ...`, TERNARY_FLAGS), and `atq eval-diffusion` of its
#      packed file (model.t2.safetensors, through the packed kernels) with the FP model as --baseline
# and writes OUT/summary.json with the targets (FP class accuracy >= 85%; W8A8 within 1 point of FP and its
# Fréchet distance within 5% of FP's) and every setting's figures and sizes.
#   bash scripts/bench_text_to_image.sh [OUT]   (default out/text_to_image)
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
out="${1:-$root/out/text_to_image}"
atq="${ATQ:-$root/build/atq}"
fixtures="${ATQ_FIXTURES:-$root/../shared/fixtures}"
threads="${THREADS:-2}"
epochs="${EPOCHS:-4}"
samples="${SAMPLES:-1000}"
steps="${STEPS:-25}"
guidance="${GUIDANCE:-3}"
image_text="${IMAGE_TEXT:-$root/out/image_text/fp}"
read -r -a settings <<<"${SETTINGS:-W8A8 W6A6 W4A8}"
read -r -a smooth_flags <<<"${SMOOTH_FLAGS:---weight-clip max --smooth 0.5}"
ternary_epochs="${TERNARY_EPOCHS:-2}"
read -r -a ternary_flags <<<"${TERNARY_FLAGS:---sparsity 0.4 --ramp-epochs 1 --lr 5e-4 --ema 0.99 --distill-alpha 0.5}"
[[ -f "$fixtures/resnet18/model.safetensors" ]] || { echo "bench_text_to_image: no resnet18 fixture in $fixtures"; exit 1; }
[[ -f "$image_text/config.json" ]] || { echo "bench_text_to_image: no image-text model at $image_text (run scripts/bench_image_text.sh)"; exit 1; }
mkdir -p "$out"
if [[ ! -f "$out/fp/config.json" ]]; then
  "$atq" train-diffusion --text-model "$image_text" --epochs "$epochs" --threads "$threads" --out "$out/fp"
fi
judge=("--judge" "$fixtures/resnet18/model.safetensors")
run=(--samples "$samples" --steps "$steps" --guidance "$guidance" --threads "$threads")
"$atq" eval-diffusion "$out/fp" "${judge[@]}" "${run[@]}" --json "$out/fp_eval.json" --grid "$out/fp_grid.png"
for setting in "${settings[@]}"; do
  "$atq" eval-diffusion "$out/fp" "${judge[@]}" "${run[@]}" --setting "$setting" --json "$out/${setting}_eval.json" \
    --grid "$out/${setting}_grid.png"
done
"$atq" eval-diffusion "$out/fp" "${judge[@]}" "${run[@]}" --setting W8A8 "${smooth_flags[@]}" \
  --json "$out/W8A8-smooth_eval.json" --grid "$out/W8A8-smooth_grid.png"
"$atq" generate-image "$out/fp" --prompt "a sneaker" --prompt "a pair of trousers" --prompt "a handbag" \
  --prompt "an ankle boot" --prompt "a dress" --count 8 --steps "$steps" --guidance "$guidance" --threads "$threads" \
  --setting fp,W8A8,W4A8 --out "$out/fp_w8a8_w4a8.png"
if (( ternary_epochs > 0 )); then
  if [[ ! -f "$out/ternary/model.t2.safetensors" ]]; then
    "$atq" train-diffusion --init "$out/fp" --distill "$out/fp" --mode ternary "${ternary_flags[@]}" \
      --epochs "$ternary_epochs" --threads "$threads" --out "$out/ternary"
  fi
  "$atq" eval-diffusion "$out/ternary/model.t2.safetensors" --baseline "$out/fp" "${judge[@]}" "${run[@]}" \
    --json "$out/ternary_eval.json" --grid "$out/ternary_grid.png"
fi
python3 - "$out" "${settings[@]}" W8A8-smooth <<'PY'
import json, sys, pathlib
out = pathlib.Path(sys.argv[1])
ev = json.loads((out / "fp_eval.json").read_text())
train = json.loads((out / "fp" / "config.json").read_text())["training"]
q = ev["quality"]
summary = {"fp": {"quality": q, "steps": ev["steps"], "guidance": ev["guidance"], "training_seconds": train["seconds"],
                  "training_epochs": train["epochs"], "threads": train["threads"]},
           "targets": {"fp_class_accuracy_at_least_85": {"value": q["class_accuracy"], "met": q["class_accuracy"] >= 0.85}}}
for setting in sys.argv[2:]:
    e = json.loads((out / f"{setting}_eval.json").read_text())
    quant = e["quantization"]
    summary[setting] = {"quality": e["quality"], "float_bytes": quant["float_bytes"],
                        "packed_bytes": quant["packed_bytes"], "unet_packed_bytes": quant["unet"]["packed_bytes"],
                        "text_packed_bytes": quant["text"]["packed_bytes"],
                        "calibration_seconds": quant["seconds"],
                        "timestep_ranges": len(quant.get("activation_grids", []))}
for name in ("W8A8", "W8A8-smooth"):
    if name not in summary:
        continue
    w = summary[name]["quality"]
    key = name.lower().replace("-", "_")
    summary["targets"][key + "_class_accuracy_within_1_point"] = {
        "value": w["class_accuracy"] - q["class_accuracy"], "met": w["class_accuracy"] >= q["class_accuracy"] - 0.01}
    summary["targets"][key + "_frechet_within_5_percent"] = {
        "value": w["frechet_distance"] / q["frechet_distance"], "met": w["frechet_distance"] <= 1.05 * q["frechet_distance"]}
ternary = out / "ternary_eval.json"
if ternary.exists():
    e = json.loads(ternary.read_text())
    t_train = json.loads((out / "ternary" / "config.json").read_text())["training"]
    summary["ternary"] = {"quality": e["quality"], "unet_weights": e["unet_weights"],
                          "frechet_ratio_to_fp": e["frechet_ratio_to_fp"], "deviation_from_fp": e["deviation_from_fp"],
                          "training_seconds": t_train["seconds"], "training_epochs": t_train["epochs"],
                          "qat": t_train["qat"]}
(out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
print(json.dumps(summary["targets"], indent=1))
PY
