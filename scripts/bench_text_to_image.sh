#!/usr/bin/env bash
# The text-to-image model's figures (issue: multimodal models), measured on this machine's cores:
#   1. `atq train-diffusion` on captioned Fashion-MNIST (EPOCHS epochs), the captions read by the image-text
#      model's text tower (IMAGE_TEXT, default out/image_text/fp from scripts/bench_image_text.sh)
#   2. `atq eval-diffusion` on SAMPLES images for held-out wordings (DDIM STEPS steps, guidance GUIDANCE): class
#      accuracy by the ResNet-18 fixture, Fréchet distance to as many real test images in its features, images/s
#   3. `atq generate-image` grid of the same prompts and seeds
# and writes OUT/summary.json with the full-precision target (class accuracy >= 85%). The quantized variants
# (W8A8, W6A6, W4A8) are not built yet.
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
[[ -f "$fixtures/resnet18/model.safetensors" ]] || { echo "bench_text_to_image: no resnet18 fixture in $fixtures"; exit 1; }
[[ -f "$image_text/config.json" ]] || { echo "bench_text_to_image: no image-text model at $image_text (run scripts/bench_image_text.sh)"; exit 1; }
mkdir -p "$out"
if [[ ! -f "$out/fp/config.json" ]]; then
  "$atq" train-diffusion --text-model "$image_text" --epochs "$epochs" --threads "$threads" --out "$out/fp"
fi
"$atq" eval-diffusion "$out/fp" --judge "$fixtures/resnet18/model.safetensors" --samples "$samples" \
  --steps "$steps" --guidance "$guidance" --threads "$threads" --json "$out/fp_eval.json" --grid "$out/fp_grid.png"
"$atq" generate-image "$out/fp" --prompt "a sneaker" --prompt "a pair of trousers" --prompt "a handbag" \
  --prompt "an ankle boot" --prompt "a dress" --count 8 --steps "$steps" --guidance "$guidance" --threads "$threads" \
  --out "$out/fp_prompts.png"
python3 - "$out" <<'PY'
import json, sys, pathlib
out = pathlib.Path(sys.argv[1])
ev = json.loads((out / "fp_eval.json").read_text())
train = json.loads((out / "fp" / "config.json").read_text())["training"]
q = ev["quality"]
summary = {"fp": {"quality": q, "steps": ev["steps"], "guidance": ev["guidance"], "training_seconds": train["seconds"],
                  "training_epochs": train["epochs"], "threads": train["threads"]},
           "targets": {"fp_class_accuracy_at_least_85": {"value": q["class_accuracy"], "met": q["class_accuracy"] >= 0.85}}}
(out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
print(json.dumps(summary["targets"]))
PY
