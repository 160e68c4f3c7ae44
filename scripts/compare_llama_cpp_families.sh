#!/usr/bin/env bash
# atq's GGUF files of every model family against llama.cpp: each arch-zoo fixture (tiny random models made with
# transformers) gets a 256-token byte-level tokenizer.json, atq converts it to f32, q8_0 and q4_0 GGUFs, and both
# tools score each file on the same text with llama.cpp's perplexity protocol. Equal perplexities mean llama.cpp
# runs atq's file as the model atq means. Needs a llama.cpp build (not part of atq; this script builds nothing):
#
#   scripts/compare_llama_cpp_families.sh LLAMA_CPP_BIN_DIR [OUT_DIR]
#
# Writes OUT_DIR/llama_cpp_families.json (default out/llama_cpp_families).
set -euo pipefail
cd "$(dirname "$0")/.."

bin_dir=${1:?usage: $0 LLAMA_CPP_BIN_DIR [OUT_DIR]}
out=${2:-out/llama_cpp_families}
zoo=${ATQ_FIXTURES:-../shared/fixtures}/arch-zoo
atq=${ATQ_BIN:-build/atq}
ctx=64
[[ -x $bin_dir/llama-perplexity ]] || { echo "error: $bin_dir/llama-perplexity not found" >&2; exit 2; }
[[ -x $atq ]] || { echo "error: $atq not found (build atq first)" >&2; exit 2; }
[[ -d $zoo ]] || { echo "error: $zoo not found (set ATQ_FIXTURES)" >&2; exit 2; }
mkdir -p "$out"

python3 - "$zoo" "$out" <<'PY'
import json, os, shutil, sys
zoo, out = sys.argv[1], sys.argv[2]
printable = list(range(ord("!"), ord("~") + 1)) + list(range(0xA1, 0xAD)) + list(range(0xAE, 0x100))
spelled, extra = [], 0
for byte in range(256):  # GPT-2's bytes_to_unicode()
    if byte in printable:
        spelled.append(chr(byte))
    else:
        spelled.append(chr(256 + extra))
        extra += 1
tokenizer = {"version": "1.0", "added_tokens": [], "normalizer": None,
             "pre_tokenizer": {"type": "ByteLevel", "add_prefix_space": False, "use_regex": True},
             "decoder": {"type": "ByteLevel"},
             "model": {"type": "BPE", "vocab": {c: i for i, c in enumerate(spelled)}, "merges": []}}
for family in ("llama", "llama_mqa", "mistral", "qwen2", "gemma", "gemma2", "phi3"):
    # llama.cpp looks up Phi-3's </s>, <s>, <unk> by the file's name; "tiny-" keeps the name out of that rule.
    folder = os.path.join(out, f"tiny-{family.replace('phi3', 'p3')}")
    os.makedirs(folder, exist_ok=True)
    for name in ("config.json", "model.safetensors"):
        shutil.copy(os.path.join(zoo, family, name), folder)
    with open(os.path.join(folder, "tokenizer.json"), "w") as f:
        json.dump(tokenizer, f)
with open(os.path.join(out, "text.txt"), "w") as f:
    f.write("Once upon a time there was a little robot who liked to count the stars. Every night it climbed the "
            "hill behind the house, sat down in the grass and counted: one, two, three... " * 40)
PY

rows=()
for folder in "$out"/tiny-*/; do
  family=$(basename "$folder")
  for type in f32 q8_0 q4_0; do
    file="$out/$family-$type.gguf"
    "$atq" convert "$folder" --gguf "$file" --type "$type" > "$out/$family-$type.convert.log" 2>&1
    atq_ppl=$("$atq" perplexity "$file" --text "$out/text.txt" --ctx $ctx --protocol llama.cpp 2>&1 |
      sed -n 's/^perplexity \([0-9][0-9.]*\) .*/\1/p' | tail -1)
    llama_ppl=""
    # This llama.cpp build fails now and then at start-up on this machine; a second try runs.
    for attempt in 1 2 3; do
      [[ -z $llama_ppl ]] || break
      llama_ppl=$("$bin_dir/llama-perplexity" -m "$file" -f "$out/text.txt" -c $ctx -b $ctx -t 2 2>"$out/llama.log" |
        sed -n 's/.*Final estimate: PPL = \([0-9][0-9.]*\).*/\1/p' | tail -1) || true
      [[ -n $llama_ppl ]] || llama_ppl=$(sed -n 's/.*Final estimate: PPL = \([0-9][0-9.]*\).*/\1/p' "$out/llama.log" | tail -1)
    done
    echo "$family $type: atq $atq_ppl llama.cpp ${llama_ppl:-failed}"
    rows+=("{\"model\": \"$family\", \"type\": \"$type\", \"atq\": ${atq_ppl:-null}, \"llama_cpp\": ${llama_ppl:-null}}")
  done
done
printf '{"ctx": %d, "rows": [%s]}\n' $ctx "$(IFS=,; echo "${rows[*]}")" > "$out/llama_cpp_families.json"
echo "wrote $out/llama_cpp_families.json"
