#!/usr/bin/env bash
# atq's matrix kernels against ggml's own on the same machine, one after the other (issue 21's kernel targets):
# ggml's CPU matrix product as llama.cpp's `test-backend-ops perf` times it (weights 4096 rows x 14336 columns,
# activations f32, batches 1, 8 and 512: the shapes its perf list holds) against `atq bench` on the same shape,
# types, batches and thread count. ggml quantizes the f32 activations inside the op (to its Q8_0/Q8_K) as atq does
# inside MatMul, so both times include that. test-backend-ops allocates plain buffers: ggml's repacked CPU layouts
# (Q4_0 8x8 and the like, which llama-bench and llama-cli use when they load a model) are not in its figures.
# test-backend-ops runs ggml on every core (std::thread::hardware_concurrency), so atq runs on as many.
# Its perf list leaves out TQ1_0 and TQ2_0 (commented out of its all_types): those rows have atq's side only, and
# benchmark_vs_llamacpp.sh compares them end to end.
# llama.cpp is not part of atq and this script builds nothing: LLAMA_CPP_BIN is a bin folder holding
# test-backend-ops (a llama.cpp build with -DLLAMA_BUILD_TESTS=ON); without it only atq's side runs.
#
#   LLAMA_CPP_BIN=/path/to/llama.cpp/build/bin scripts/bench_kernels_vs_ggml.sh [OUT_DIR]
#
# TYPES (default "f16 q8_0 q4_0 tq2_0 tq1_0") and BATCHES (default "1 8 512") override. Writes
# OUT_DIR/kernels_vs_ggml.json (every figure; atq's weights/s over ggml's) and kernels_vs_ggml.png
# (default out/benchmark/kernels_vs_ggml).
set -euo pipefail
cd "$(dirname "$0")/.."

out=${1:-out/benchmark/kernels_vs_ggml}
atq=${ATQ_BIN:-build/atq}
bin_dir=${LLAMA_CPP_BIN:-}
types=${TYPES:-f16 q8_0 q4_0 tq2_0 tq1_0}
batches=${BATCHES:-1 8 512}
rows=4096
cols=14336
threads=$(nproc)

[[ -x $atq ]] || { echo "error: $atq not found (build atq first)" >&2; exit 2; }
if [[ -n $bin_dir ]]; then
  [[ -x $bin_dir/test-backend-ops ]] ||
    { echo "error: $bin_dir/test-backend-ops not found (build llama.cpp with -DLLAMA_BUILD_TESTS=ON)" >&2; exit 2; }
else
  echo "LLAMA_CPP_BIN not set: measuring atq only" >&2
fi
mkdir -p "$out"

echo "atq bench: ${rows}x${cols}, types $types, batches $batches, $threads threads" >&2
"$atq" bench --shapes "${rows}x${cols}" --types "$(tr ' ' ',' <<< "$types")" --batch "$(tr ' ' ',' <<< "$batches")" \
  --threads "$threads" --json "$out/atq.json" > "$out/atq.log" 2>&1
if [[ -n $bin_dir ]]; then
  echo "test-backend-ops perf: the same shapes on ggml's CPU backend" >&2
  filter="type_a=($(tr ' ' '|' <<< "$types")),type_b=f32,m=$rows,n=($(tr ' ' '|' <<< "$batches")),k=$cols,bs=\\[1,1\\],"
  "$bin_dir/test-backend-ops" perf -b CPU -o MUL_MAT -p "$filter" > "$out/ggml.log" 2>&1
fi

python3 - "$out" "$rows" "$cols" "$threads" "${bin_dir:+yes}" "$types" <<'EOF'
import json, os, re, sys
out, rows, cols, threads, with_ggml = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), sys.argv[5]
wanted = sys.argv[6].split()
atq = [r for r in json.load(open(os.path.join(out, "atq.json")))["results"] if r["type"] in wanted]
ggml = []
if with_ggml:
    pattern = re.compile(r"MUL_MAT\(type_a=([a-z0-9_]+),type_b=f32,m=(\d+),n=(\d+),k=(\d+),[^)]*\):\s+(\d+) runs -\s+([\d.]+) us/run")
    for line in open(os.path.join(out, "ggml.log")):
        m = pattern.search(line)
        if m:
            seconds = float(m.group(6)) / 1e6
            ggml.append({"type": m.group(1), "rows": int(m.group(2)), "batch": int(m.group(3)), "cols": int(m.group(4)),
                         "runs": int(m.group(5)), "seconds": seconds,
                         "gweights_per_second": int(m.group(2)) * int(m.group(4)) / seconds / 1e9})
    if not ggml:
        sys.exit(f"error: no MUL_MAT timings in {out}/ggml.log (see that file)")
rows_out = []
for a in atq:
    g = next((g for g in ggml if g["type"] == a["type"] and g["batch"] == a["batch"]), None)
    row = {"type": a["type"], "batch": a["batch"], "threads": a["threads"],
           "atq_gweights_per_second": a["gweights_per_second"],
           "ggml_gweights_per_second": g["gweights_per_second"] if g else None}
    if g:
        row["atq_over_ggml"] = a["gweights_per_second"] / g["gweights_per_second"]
    rows_out.append(row)
report = {"shape": f"{rows}x{cols}", "threads": threads, "atq": atq, "ggml": ggml, "comparison": rows_out,
          "ggml_note": "test-backend-ops perf -b CPU -o MUL_MAT: plain buffers (no repacked layouts), every core"}
with open(os.path.join(out, "kernels_vs_ggml.json.tmp"), "w") as f:
    json.dump(report, f, indent=2)
os.replace(os.path.join(out, "kernels_vs_ggml.json.tmp"), os.path.join(out, "kernels_vs_ggml.json"))
print(f"wrote {out}/kernels_vs_ggml.json")
print(f"| type | batch | atq G weights/s | ggml G weights/s | atq / ggml |")
print("|---|---|---|---|---|")
for r in rows_out:
    g = r["ggml_gweights_per_second"]
    print(f"| {r['type']} | {r['batch']} | {r['atq_gweights_per_second']:.2f} | {g:.2f} | {r['atq_over_ggml']:.2f} |" if g
          else f"| {r['type']} | {r['batch']} | {r['atq_gweights_per_second']:.2f} | | |")
sys.path.insert(0, "scripts")
from gnuplot_bars import plot_bars
series = {"atq": [r["atq_gweights_per_second"] for r in rows_out]}
if ggml:
    series["ggml"] = [r["ggml_gweights_per_second"] for r in rows_out]
plot_bars(os.path.join(out, "kernels_vs_ggml.png"),
          f"matrix product {rows}x{cols}, {threads} threads: G weights/s (higher is better)", "G weights/s",
          [f"{r['type']}/b{r['batch']}" for r in rows_out], series, logscale=True)
EOF
