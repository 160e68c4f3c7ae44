#!/usr/bin/env bash
# The layers of src/ and tools/, lowest first: a file may include headers of its own folder and of the folders
# below it, never above (so no two folders include each other). CMakeLists.txt builds one library per layer in
# this order. Prints every include that climbs and exits 1 if there is one.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
layers=(util formats kernels io report bench torch data grid models quant train eval runtime tools)
declare -A rank
for i in "${!layers[@]}"; do rank[${layers[$i]}]=$i; done
status=0
while IFS= read -r -d '' file; do
  relative="${file#"$root"/}"
  if [[ "$relative" == tools/* ]]; then folder=tools; else folder="$(cut -d/ -f2 <<<"$relative")"; fi
  if [[ -z "${rank[$folder]+x}" ]]; then
    echo "check_layers: $relative: folder '$folder' is not in the layer list (scripts/check_layers.sh)"
    status=1
    continue
  fi
  while IFS=: read -r line target; do
    included="${target%%/*}"
    [[ -z "${rank[$included]+x}" ]] && continue  # a file of the same folder by its bare name, or a system header
    if (( rank[$included] > rank[$folder] )); then
      echo "check_layers: $relative:$line includes $target: layer '$included' is above '$folder'"
      status=1
    fi
  done < <(grep -noE '^#include "[^"]+"' "$file" | sed -E 's/^([0-9]+):#include "([^"]+)"/\1:\2/')
done < <(find "$root/src" "$root/tools" -type f \( -name '*.h' -o -name '*.cc' -o -name '*.cu' \) -print0)
[[ $status == 0 ]] && echo "check_layers: every include stays in its layer or goes down"
exit $status
