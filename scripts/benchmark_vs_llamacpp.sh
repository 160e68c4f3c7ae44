#!/usr/bin/env bash
# End-to-end speed of atq against llama.cpp on the same GGUF files (issue 21): atq writes each fixture model as a
# GGUF of every format both tools run (f16, q8_0, q4_0, tq2_0, tq1_0); then, one tool after the other on each file,
# prefill (64 and 512 tokens) and decode (128 tokens) on 1 and 2 threads (`atq bench --model FILE --model-types
# file` against `llama-bench`), and perplexity on the same text with llama.cpp's protocol (`atq perplexity
# --protocol llama.cpp` against `llama-perplexity`: tokens/s from each tool's wall time, and both perplexities).
# llama.cpp is not part of atq and this script builds nothing: give its bin folder as LLAMA_CPP_BIN; without it
# only atq's side runs.
#
#   LLAMA_CPP_BIN=/path/to/llama.cpp/build/bin scripts/benchmark_vs_llamacpp.sh [OUT_DIR]
#
# MODELS (default "llama-mini gpt2-mini"), TYPES (default "f16 q8_0 q4_0 tq2_0 tq1_0"), THREADS (default "1 2"),
# PROMPTS (default "64 512"), CHUNKS (perplexity windows of 256 tokens, default 40) override. Writes
# OUT_DIR/vs_llamacpp.json (every figure, and llama.cpp's over atq's where both ran) and vs_llamacpp.png
# (default out/benchmark/vs_llamacpp).
set -euo pipefail
cd "$(dirname "$0")/.."

out=${1:-out/benchmark/vs_llamacpp}
fixtures=${ATQ_FIXTURES:-../shared/fixtures}
atq=${ATQ_BIN:-build/atq}
bin_dir=${LLAMA_CPP_BIN:-}
models=${MODELS:-llama-mini gpt2-mini}
types=${TYPES:-f16 q8_0 q4_0 tq2_0 tq1_0}
threads=${THREADS:-1 2}
prompts=${PROMPTS:-64 512}
decode=128
ctx=256
chunks=${CHUNKS:-40}
text=${ATQ_COMPARE_TEXT:-$fixtures/corpus/test.txt}

[[ -x $atq ]] || { echo "error: $atq not found (build atq first)" >&2; exit 2; }
if [[ -n $bin_dir ]]; then
  for tool in llama-bench llama-perplexity; do
    [[ -x $bin_dir/$tool ]] || { echo "error: $bin_dir/$tool not found (LLAMA_CPP_BIN is llama.cpp's bin folder)" >&2; exit 2; }
  done
else
  echo "LLAMA_CPP_BIN not set: measuring atq only" >&2
fi
mkdir -p "$out"
# The first $chunks windows of the text, so both tools score the same tokens (llama-perplexity has no limit).
head -c $((chunks * ctx * 6)) "$text" > "$out/text.txt"

records="$out/records.jsonl"
: > "$records"
record() { echo "$1" >> "$records"; }
seconds() { python3 -c 'import time; print(time.monotonic())'; }

total=$(( $(wc -w <<< "$models") * $(wc -w <<< "$types") ))
done_files=0
start=$(seconds)
for model in $models; do
  for type in $types; do
    file="$out/$model-$type.gguf"
    embeddings=$type
    [[ $type == tq* ]] && embeddings=q8_0  # llama.cpp's ternary types need rows of 256; the vocabulary table is q8_0
    if [[ ! -s $file ]]; then
      "$atq" convert "$fixtures/$model/model" --gguf "$file" --type "$type" --embeddings "$embeddings" \
        > "$out/$model-$type.convert.log" 2>&1
    fi
    for t in $threads; do
      for p in $prompts; do
        # atq: prefill of p tokens and decode of 128 after it, medians of 3 after a warm-up.
        "$atq" bench --model "$file" --model-types file --model-threads "$t" --prompt-tokens "$p" \
          --decode-tokens "$decode" --json "$out/$model-$type-t$t-p$p.atq.json" > "$out/$model-$type-t$t-p$p.atq.log" 2>&1
        record "$(python3 - "$out/$model-$type-t$t-p$p.atq.json" "$model" "$type" "$t" "$p" <<'EOF'
import json, sys
row = json.load(open(sys.argv[1]))["results"][0]
print(json.dumps({"tool": "atq", "model": sys.argv[2], "type": sys.argv[3], "threads": int(sys.argv[4]),
                  "prompt_tokens": int(sys.argv[5]), "runtime": row["runtime"],
                  "prefill_tokens_per_second": row["prefill_tokens_per_second"],
                  "decode_tokens_per_second": row["decode_tokens_per_second"]}))
EOF
)"
        if [[ -n $bin_dir ]]; then
          "$bin_dir/llama-bench" -m "$file" -p "$p" -n "$decode" -t "$t" -r 3 -o json \
            > "$out/$model-$type-t$t-p$p.llama.json" 2> "$out/$model-$type-t$t-p$p.llama.log"
          record "$(python3 - "$out/$model-$type-t$t-p$p.llama.json" "$model" "$type" "$t" "$p" <<'EOF'
import json, sys
rows = json.load(open(sys.argv[1]))
prefill = [r["avg_ts"] for r in rows if r["n_prompt"] > 0 and r["n_gen"] == 0]
decode = [r["avg_ts"] for r in rows if r["n_gen"] > 0 and r["n_prompt"] == 0]
print(json.dumps({"tool": "llama.cpp", "model": sys.argv[2], "type": sys.argv[3], "threads": int(sys.argv[4]),
                  "prompt_tokens": int(sys.argv[5]),
                  "prefill_tokens_per_second": prefill[0] if prefill else None,
                  "decode_tokens_per_second": decode[0] if decode else None}))
EOF
)"
        fi
      done
    done
    # Perplexity on 2 threads (the machine's cores), llama.cpp's protocol, wall time of the whole command.
    begin=$(seconds)
    "$atq" perplexity "$file" --text "$out/text.txt" --protocol llama.cpp --ctx "$ctx" --threads 2 \
      --json "$out/$model-$type.ppl.atq.json" > "$out/$model-$type.ppl.atq.log" 2>&1
    atq_seconds=$(python3 -c "print($(seconds) - $begin)")
    record "$(python3 - "$out/$model-$type.ppl.atq.json" "$model" "$type" "$atq_seconds" <<'EOF'
import json, sys
r = json.load(open(sys.argv[1]))
print(json.dumps({"tool": "atq", "model": sys.argv[2], "type": sys.argv[3], "perplexity": r["perplexity"],
                  "scored_tokens": r["scored_tokens"], "atq_reported_seconds": r["seconds"],
                  "wall_seconds": float(sys.argv[4])}))
EOF
)"
    if [[ -n $bin_dir ]]; then
      begin=$(seconds)
      "$bin_dir/llama-perplexity" -m "$file" -f "$out/text.txt" -c "$ctx" -b "$ctx" -t 2 \
        > "$out/$model-$type.ppl.llama.log" 2>&1
      llama_seconds=$(python3 -c "print($(seconds) - $begin)")
      ppl=$(sed -n 's/.*Final estimate: PPL = \([0-9.]*\).*/\1/p' "$out/$model-$type.ppl.llama.log")
      record "{\"tool\": \"llama.cpp\", \"model\": \"$model\", \"type\": \"$type\", \"perplexity\": ${ppl:-null}, \"wall_seconds\": $llama_seconds}"
    fi
    done_files=$((done_files + 1))
    now=$(seconds)
    python3 -c "e=$now-$start; n=$done_files; t=$total; print(f'{n}/{t} files | {e:.0f}s | ETA {e/n*(t-n):.0f}s', flush=True)"
  done
done

python3 - "$records" "$out" <<'EOF'
import json, os, sys
records = [json.loads(line) for line in open(sys.argv[1]) if line.strip()]
out = sys.argv[2]
speed = [r for r in records if "prefill_tokens_per_second" in r]
ppl = [r for r in records if "perplexity" in r]
def find(rows, tool, **keys):
    for r in rows:
        if r["tool"] == tool and all(r.get(k) == v for k, v in keys.items()):
            return r
ratios = []
for a in (r for r in speed if r["tool"] == "atq"):
    l = find(speed, "llama.cpp", model=a["model"], type=a["type"], threads=a["threads"], prompt_tokens=a["prompt_tokens"])
    if not l:
        continue
    row = {k: a[k] for k in ("model", "type", "threads", "prompt_tokens")}
    for key in ("prefill_tokens_per_second", "decode_tokens_per_second"):
        if l.get(key) and a.get(key):  # atq's decode is null where a prompt filled the context
            row[key.replace("_tokens_per_second", "_atq_over_llama_cpp")] = a[key] / l[key]
    ratios.append(row)
for a in (r for r in ppl if r["tool"] == "atq"):
    l = find(ppl, "llama.cpp", model=a["model"], type=a["type"])
    if l and l.get("perplexity"):
        ratios.append({"model": a["model"], "type": a["type"],
                       "perplexity_speed_atq_over_llama_cpp": l["wall_seconds"] / a["wall_seconds"],
                       "perplexity_relative_difference": a["perplexity"] / l["perplexity"] - 1})
report = {"machine_cores": os.cpu_count(), "decode_tokens": 128, "perplexity_ctx": 256,
          "speed": speed, "perplexity": ppl, "ratios": ratios}
with open(os.path.join(out, "vs_llamacpp.json.tmp"), "w") as f:
    json.dump(report, f, indent=2)
os.replace(os.path.join(out, "vs_llamacpp.json.tmp"), os.path.join(out, "vs_llamacpp.json"))
print(f"wrote {out}/vs_llamacpp.json")
for r in ratios:
    print(json.dumps(r))
# Plot: decode tokens/s per file and thread count, both tools side by side.
sys.path.insert(0, "scripts")
from gnuplot_bars import plot_bars
first = [r for r in speed if r["tool"] == "atq" and r["prompt_tokens"] == min(x["prompt_tokens"] for x in speed)]
matched = [find(speed, "llama.cpp", model=a["model"], type=a["type"], threads=a["threads"],
                prompt_tokens=a["prompt_tokens"]) for a in first]
series = {"atq": [a["decode_tokens_per_second"] for a in first]}
if any(r["tool"] == "llama.cpp" for r in speed):
    series["llama.cpp"] = [l["decode_tokens_per_second"] if l else None for l in matched]
plot_bars(os.path.join(out, "vs_llamacpp.png"), "decode tokens/s on the same GGUF files (128 tokens)", "tokens/s",
          [f'{a["model"]}/{a["type"]}/t{a["threads"]}' for a in first], series)
EOF
