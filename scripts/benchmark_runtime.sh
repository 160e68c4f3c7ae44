#!/usr/bin/env bash
# Issue 7's figures: the packed kernels against memory bandwidth and libtorch float32 (kernel level, default
# shapes plus 16384x16384 and 32768x32768 ternary), the fixture LLMs run in every format (model level), and a
# packed ternary classifier through the kernels.
# Writes out/benchmark/kernels/{kernels,large}.{json,txt}, kernels.png, out/benchmark/runtime/<model>.{json,txt,png}
# and out/benchmark/classifier/*.json.
# THREADS (model level, default 2) overrides; MODELS_ONLY=1 stops after the model level; CLASSIFIERS_ONLY=1 runs
# the classifier level alone.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
atq="${ATQ_BUILD_DIR:-$root/build}/atq"
fixtures="${ATQ_FIXTURES:-$root/../shared/fixtures}"
threads="${THREADS:-2}"
mkdir -p "$root/out/benchmark/kernels" "$root/out/benchmark/runtime"
# Packed formats of llama-mini run on atq's CPU decoder (--runtime auto) and, for comparison, through libtorch's
# operators around the same kernels; GPT-2 runs through libtorch.
for run in llama-mini:auto llama-mini:libtorch gpt2-mini:auto; do
  [ "${CLASSIFIERS_ONLY:-0}" = 1 ] && break
  model="${run%%:*}" runtime="${run##*:}"
  name="$model"; [ "$runtime" = auto ] || name="$model-$runtime"
  "$atq" bench --model "$fixtures/$model/model" --model-threads "$threads" --prompt-tokens 64 --decode-tokens 128 \
    --runtime "$runtime" --json "$root/out/benchmark/runtime/$name.json" \
    --plot "$root/out/benchmark/runtime/$name.png" | tee "$root/out/benchmark/runtime/$name.txt"
  [ "${MODELS_ONLY:-0}" = 1 ] && [ "$run" = gpt2-mini:auto ] && exit 0
done
[ "${CLASSIFIERS_ONLY:-0}" = 1 ] || "$atq" bench --json "$root/out/benchmark/kernels/kernels.json" --plot "$root/out/benchmark/kernels/kernels.png" |
  tee "$root/out/benchmark/kernels/kernels.txt"
[ "${CLASSIFIERS_ONLY:-0}" = 1 ] || "$atq" bench --shapes 16384x16384,32768x32768 --types t2,tq2_0 --batch 1 --threads 1,2 --min-seconds 1 \
  --json "$root/out/benchmark/kernels/large.json" | tee "$root/out/benchmark/kernels/large.txt"
# Classifier level: a ternary CNN (trained here, 2 epochs) evaluated fake-quantized, and exported to t2 and t1.6
# packed files evaluated through the kernels and dequantized.
cls="$root/out/benchmark/classifier"
mkdir -p "$cls"
[ -f "$cls/cnn/config.json" ] || "$atq" train --model cnn --mode ternary --sparsity 0.5 --use-rpb --epochs 2 \
  --threads 2 --out "$cls/cnn"
"$atq" evaluate "$cls/cnn" --threads 2 --json "$cls/cnn-fake-quantized.json" | tail -3
for format in ternary2 ternary1.6; do
  "$atq" export "$cls/cnn" --format "$format" --out "$cls/cnn-$format.safetensors"
  "$atq" evaluate "$cls/cnn-$format.safetensors" --threads 2 --json "$cls/cnn-$format-kernels.json" | tail -3
  "$atq" evaluate "$cls/cnn-$format.safetensors" --dequantize --threads 2 \
    --json "$cls/cnn-$format-dequantized.json" | tail -3
done
# Packed convolutions against libtorch's float32 ones: images/s of the packed ternary CNN and ResNet-18 (seeded
# random weights; speed depends on shapes and format only) at batch 1 and 256, on 1 and on 2 threads.
for arch in cnn resnet18; do
  for t in 1 2; do
    "$atq" bench --classifier "$arch" --types t2,t1.6 --threads "$t" --min-seconds 2 \
      --json "$cls/speed-$arch-$t.json" --plot "$cls/speed-$arch-$t.png" | tee "$cls/speed-$arch-$t.txt"
  done
done
