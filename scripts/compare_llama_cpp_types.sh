#!/usr/bin/env bash
# atq's readers of llama.cpp's block types against llama.cpp itself: atq writes a Q8_0 GGUF of a fixture model,
# llama.cpp's llama-quantize requantizes it to every type it writes (Q4_1, Q5_0, Q5_1, Q2_K .. Q6_K), and both
# tools score each file on the same text with llama.cpp's perplexity protocol. Equal perplexities mean atq reads
# every block the way llama.cpp does. Needs a llama.cpp build (not part of atq; this script builds nothing):
#
#   scripts/compare_llama_cpp_types.sh LLAMA_CPP_BIN_DIR [MODEL] [OUT_DIR]
#
# MODEL defaults to the llama-mini fixture (rows of 512 and 1536, multiples of the k-quants' 256). Writes
# OUT_DIR/llama_cpp_types.json (default out/llama_cpp_types).
set -euo pipefail
cd "$(dirname "$0")/.."

bin_dir=${1:?usage: $0 LLAMA_CPP_BIN_DIR [MODEL] [OUT_DIR]}
fixtures=${ATQ_FIXTURES:-../shared/fixtures}
model=${2:-$fixtures/llama-mini/model}
out=${3:-out/llama_cpp_types}
text=${ATQ_COMPARE_TEXT:-$fixtures/corpus/test.txt}
ctx=${ATQ_COMPARE_CTX:-256}
chunks=${ATQ_COMPARE_CHUNKS:-40}
atq=${ATQ_BIN:-build/atq}
for tool in llama-quantize llama-perplexity; do
  [[ -x $bin_dir/$tool ]] || { echo "error: $bin_dir/$tool not found (pass llama.cpp's bin folder)" >&2; exit 2; }
done
[[ -x $atq ]] || { echo "error: $atq not found (build atq first)" >&2; exit 2; }
mkdir -p "$out"

# The first $chunks chunks of the text, so both tools score the same windows (llama-perplexity has no limit).
head -c $((chunks * ctx * 6)) "$text" > "$out/text.txt"

"$atq" quantize "$model" --method rtn --format q8_0 --gguf "$out/q8_0.gguf" --gguf-embeddings q8_0 \
  --out "$out/q8_0.packed" > "$out/quantize.log" 2>&1

rows=()
for type in Q8_0 Q4_1 Q5_0 Q5_1 Q2_K Q3_K_M Q4_K_M Q5_K_M Q6_K; do
  file="$out/q8_0.gguf"
  if [[ $type != Q8_0 ]]; then
    file="$out/$type.gguf"
    "$bin_dir/llama-quantize" --allow-requantize "$out/q8_0.gguf" "$file" "$type" > "$out/$type.quantize.log" 2>&1
  fi
  llama=$("$bin_dir/llama-perplexity" -m "$file" -f "$out/text.txt" -c "$ctx" -b "$ctx" -t 2 2>&1 |
    sed -n 's/.*Final estimate: PPL = \([0-9.]*\).*/\1/p')
  "$atq" perplexity "$file" --text "$out/text.txt" --protocol llama.cpp --ctx "$ctx" --dequantize \
    --json "$out/$type.atq.json" > "$out/$type.atq.log" 2>&1
  ours=$(python3 -c "import json,sys; print(json.load(open(sys.argv[1]))['perplexity'])" "$out/$type.atq.json")
  types=$("$atq" inspect "$file" 2>/dev/null | awk '{print $2}' | grep -E '^(q|tq|f)[0-9]' | sort | uniq -c |
    awk '{printf "%s%s:%s", sep, $2, $1; sep=","}')
  printf '%-8s llama.cpp %-10s atq %-10s tensors %s\n' "$type" "$llama" "$ours" "$types"
  rows+=("{\"preset\": \"$type\", \"llama_cpp_ppl\": ${llama:-null}, \"atq_ppl\": $ours, \"tensor_types\": \"$types\"}")
done
{
  echo "{\"model\": \"$model\", \"text\": \"$text\", \"ctx\": $ctx, \"chunks_bytes\": $((chunks * ctx * 6)),"
  echo " \"results\": ["
  (IFS=$',\n'; echo "  ${rows[*]}")
  echo " ]}"
} > "$out/llama_cpp_types.json.tmp"
mv "$out/llama_cpp_types.json.tmp" "$out/llama_cpp_types.json"
echo "wrote $out/llama_cpp_types.json"
