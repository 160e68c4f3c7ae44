#!/usr/bin/env bash
# Copies what the CUDA-only build needs and a bare GPU machine lacks (fmt's headers, GoogleTest's sources, both from
# this machine's Debian packages libfmt-dev and googletest) into .gpu_deps/, which git ignores and the device tool
# carries. Nothing of it is committed.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
rm -rf "$root/.gpu_deps"
mkdir -p "$root/.gpu_deps"
cp -r /usr/include/fmt "$root/.gpu_deps/fmt"
cp -r /usr/src/googletest "$root/.gpu_deps/googletest"
du -sh "$root/.gpu_deps"
