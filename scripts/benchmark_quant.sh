#!/usr/bin/env bash
# Issue 5's targets: `atq sweep` of scripts/sweeps/lm_targets.yaml (RTN, ATQ and GPTQ at 8, 4, 3 bits and
# ternary) on the fixtures' gpt2-mini and llama-mini, perplexity on corpus/test.txt (chunked, 512 tokens).
# Writes out/benchmark/quant/<model>/sweep.{json,csv,png} and the summary out/benchmark/quant.json.
# THREADS (default: every core), MODELS ("gpt2-mini llama-mini") and SWEEP (the YAML) override; another
# sweep writes to out/benchmark/quant-<its name> (scripts/sweeps/lm_mixed.yaml: quant-lm_mixed).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
atq="${ATQ_BIN:-${ATQ_BUILD_DIR:-$root/build}/atq}"
fixtures="${ATQ_FIXTURES:-$root/../shared/fixtures}"
threads="${THREADS:-0}"
models="${MODELS:-gpt2-mini llama-mini}"
sweep="${SWEEP:-$root/scripts/sweeps/lm_targets.yaml}"
name="$(basename "$sweep" .yaml)"
out="$root/out/benchmark/quant"
[[ "$name" == lm_targets ]] || out="$out-$name"
mkdir -p "$out"
for model in $models; do
  "$atq" sweep "$fixtures/$model/model" --configs "$sweep" --text "$fixtures/corpus/test.txt" --ctx 512 \
    --threads "$threads" --out "$out/$model"
done
python3 - "$out" "$fixtures" $models <<'PY'
import json, sys
out, fixtures, models = sys.argv[1], sys.argv[2], sys.argv[3:]
targets = {"rtn-int8-channel": 1.002, "gptq-int4-g128": 1.04, "gptq-int3-g128": 1.15, "gptq-ternary-g128": 4.0}
summary = {}
for model in models:
    sweep = json.load(open(f"{out}/{model}/sweep.json"))
    reference = json.load(open(f"{fixtures}/{model}/reference.json"))["ppl_test_chunked_512"]
    rows = {row["name"]: row for row in sweep["rows"]}
    checks = {name: {"ratio": rows[name]["ratio"], "target": bound, "met": rows[name]["ratio"] <= bound}
              for name, bound in targets.items() if name in rows}
    if "gptq-int4-g128" in rows and "rtn-int4-g128" in rows:
        checks["gptq-int4-g128 < rtn-int4-g128"] = {
            "met": rows["gptq-int4-g128"]["perplexity"] < rows["rtn-int4-g128"]["perplexity"]}
    summary[model] = {"reference_fp_perplexity": reference, "rows": sweep["rows"], "targets": checks}
    print(f"\n{model} (transformers' FP perplexity {reference:.4f})")
    print(f"| config | bits/weight | perplexity | × FP | quantized layers MB | model MB | quantize s |")
    print(f"|---|---|---|---|---|---|---|")
    for row in sweep["rows"]:
        print(f"| {row['name']} | {row['bits_per_weight']:.3f} | {row['perplexity']:.4f} | {row['ratio']:.4f} | "
              f"{row['quantized_bytes'] / 1e6:.2f} | {row['model_bytes'] / 1e6:.2f} | {row['quantize_seconds']:.1f} |")
    for name, check in checks.items():
        print(f"  target {name}: {'met' if check['met'] else 'MISSED'} {check}")
json.dump(summary, open(f"{out}.json", "w"), indent=2)
print(f"\nsummary: {out}.json")
PY
