#!/usr/bin/env bash
# Issue 6's table: `atq pareto` of scripts/sweeps/vision_plan.yaml on the fixtures' ResNet-18 (torchvision) and
# ViT-Tiny (timm), on the whole Fashion-MNIST test set, 512 seeded calibration images from the training split.
# Writes out/benchmark/vision/<model>/{pareto.json,pareto.csv,*.png} and prints each table.
# THREADS (default: every core), MODELS ("resnet18 vit-tiny") and PLAN (the YAML) override.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
atq="${ATQ_BIN:-${ATQ_BUILD_DIR:-$root/build}/atq}"
fixtures="${ATQ_FIXTURES:-$root/../shared/fixtures}"
plan="${PLAN:-$root/scripts/sweeps/vision_plan.yaml}"
for model in ${MODELS:-resnet18 vit-tiny}; do
  "$atq" pareto "$fixtures/$model/model.safetensors" --arch "$model" --configs "$plan" --calib 512 \
    --threads "${THREADS:-0}" --out "$root/out/benchmark/vision/$model"
done
