#!/usr/bin/env bash
# Issue 4's reference figures: atq perplexity on the fixtures under every protocol, compared with the numbers
# Hugging Face transformers (gpt2-mini, llama-mini) and llama.cpp (stories260K GGUF files) published, plus
# generation speed. Writes out/benchmark/lm/*.json and the summary out/benchmark/lm.json.
# THREADS (default: every core) and MODELS ("gpt2-mini llama-mini stories260K") override.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
atq="${ATQ_BUILD_DIR:-$root/build}/atq"
fixtures="${ATQ_FIXTURES:-$root/../shared/fixtures}"
out="$root/out/benchmark/lm"
threads="${THREADS:-0}"
models="${MODELS:-gpt2-mini llama-mini stories260K}"
mkdir -p "$out"
for model in $models; do
  if [ "$model" = stories260K ]; then
    for quant in f32 q8_0 q4_0; do
      for ctx in 256 512; do
        "$atq" perplexity "$fixtures/stories260K/stories260K-$quant.gguf" --text "$fixtures/stories260K/tinystories_val.txt" \
          --protocol llama.cpp --ctx "$ctx" --batch 8 --threads "$threads" --json "$out/stories260K-$quant-c$ctx.json"
      done
    done
    "$atq" generate "$fixtures/stories260K/stories260K.bin" --max-tokens 256 --temperature 0 --threads "$threads" \
      --json "$out/stories260K-generate.json" > "$out/stories260K-greedy.txt"
  else
    text="$fixtures/corpus/test.txt"
    "$atq" perplexity "$fixtures/$model/model" --text "$text" --ctx 512 --threads "$threads" \
      --json "$out/$model-chunked-512.json"
    "$atq" perplexity "$fixtures/$model/model" --text "$text" --ctx 128 --batch 16 --threads "$threads" \
      --json "$out/$model-chunked-128.json"
    "$atq" perplexity "$fixtures/$model/model" --text "$text" --ctx 512 --stride 256 --threads "$threads" \
      --json "$out/$model-sliding-512-256.json"
    "$atq" generate "$fixtures/$model/model" --prompt "The President said that" --max-tokens 128 --temperature 0 \
      --threads "$threads" --json "$out/$model-generate.json" > /dev/null
  fi
done
python3 - "$out" "$fixtures" $models <<'PY'
import json, os, sys
out, fixtures, models = sys.argv[1], sys.argv[2], sys.argv[3:]
summary = {}
def load(name):
    return json.load(open(os.path.join(out, name)))
for model in models:
    rows = {}
    if model == "stories260K":
        # llama.cpp's figures from fixtures/stories260K/README.md; 0.1% for f32, 0.5% for q8_0/q4_0.
        reference = {("f32", 256): 4.8753, ("f32", 512): 4.9745, ("q8_0", 256): 4.8823, ("q8_0", 512): 4.9823,
                     ("q4_0", 256): 5.2262, ("q4_0", 512): 5.3723}
        for (quant, ctx), expected in reference.items():
            r = load(f"stories260K-{quant}-c{ctx}.json")
            tolerance = 0.001 if quant == "f32" else 0.005
            rel = r["perplexity"] / expected - 1
            rows[f"{quant}_c{ctx}"] = {"atq": r["perplexity"], "llama.cpp": expected, "relative_difference": rel,
                                       "windows": r["windows"], "within_tolerance": abs(rel) <= tolerance,
                                       "tokens_per_second": r["tokens_per_second"]}
        g = load("stories260K-generate.json")
        expected_text = open(os.path.join(fixtures, "stories260K/greedy_256_runc.txt"), encoding="utf-8").read()
        got_text = open(os.path.join(out, "stories260K-greedy.txt"), encoding="utf-8").read()
        rows["greedy_matches_run_c"] = got_text == expected_text
        rows["decode_tokens_per_second"] = g["decode_tokens_per_second"]
    else:
        reference = json.load(open(os.path.join(fixtures, model, "reference.json")))
        for name, key in [("chunked-512", "chunked_512"), ("chunked-128", "chunked_128"),
                          ("sliding-512-256", "sliding_512_256")]:
            r = load(f"{model}-{name}.json")
            expected = reference[f"ppl_test_{key}"]
            rel = r["perplexity"] / expected - 1
            rows[key] = {"atq": r["perplexity"], "transformers": expected, "relative_difference": rel,
                         "scored_tokens": r["scored_tokens"],
                         "scored_tokens_match": r["scored_tokens"] == reference[f"scored_tokens_{key}"],
                         "within_0.1%": abs(rel) <= 0.001, "tokens_per_second": r["tokens_per_second"]}
        g = load(f"{model}-generate.json")
        rows["decode_tokens_per_second"] = g["decode_tokens_per_second"]
        rows["time_to_first_token_seconds"] = g["time_to_first_token_seconds"]
    summary[model] = rows
json.dump(summary, open(os.path.join(os.path.dirname(out), "lm.json"), "w"), indent=2)
print(json.dumps(summary, indent=2))
PY
