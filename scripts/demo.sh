#!/usr/bin/env bash
# The demo: pack a real checkpoint through every format in the table and print bits per weight, size and error.
# Uses the ViT-Tiny fixture when the fixtures are beside the repository, synthetic weights otherwise.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
atq="${ATQ_BUILD_DIR:-$root/build}/atq"
fixtures="${ATQ_FIXTURES:-$root/../shared/fixtures}"
mkdir -p "$root/out"
if [ -f "$fixtures/vit-tiny/model.safetensors" ]; then
  "$atq" roundtrip "$fixtures/vit-tiny/model.safetensors" --json "$root/out/roundtrip.json"
else
  echo "demo: no fixtures at $fixtures; measuring synthetic weights instead"
  "$atq" roundtrip --synthetic --json "$root/out/roundtrip.json"
fi
echo "demo: results in $root/out/roundtrip.json"
