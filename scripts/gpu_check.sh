#!/usr/bin/env bash
# The GPU check (issue: CUDA backend): builds the CUDA-only target (cuda/CMakeLists.txt: no libtorch, Highway or
# other Debian packages), runs the CUDA kernels' and the GPU decoder's tests against the scalar CPU references, a
# memory check of them, the kernel benchmark and the decoder benchmark (a synthetic tinyllama-1.1b: prefill and
# decode tokens/s). Meant for a fresh H100/H200 machine with CUDA and CMake; finishes in a few minutes.
# ATQ_GPU_BENCH=kernels or =decoder runs one of the two benchmarks (default: both).
#
#   bash scripts/gpu_deps.sh          # here: copies fmt's headers and GoogleTest's sources into .gpu_deps/
#   bash scripts/gpu_check.sh         # there (carry .gpu_deps); results in $OUT (or out/gpu): JSON and logs
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
deps="${ATQ_GPU_DEPS:-$root/.gpu_deps}"
out="${OUT:-$root/out/gpu}"
build="${ATQ_CUDA_BUILD_DIR:-$root/build-cuda}"
mkdir -p "$out"
[ -f "$deps/fmt/format.h" ] && [ -d "$deps/googletest" ] || {
  echo "gpu_check: $deps lacks fmt/ or googletest/ (run scripts/gpu_deps.sh where they are installed)" >&2
  exit 1
}
start=$(date +%s)
nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.sm,clocks.mem --format=csv | tee "$out/nvidia_smi.txt"
generator=()
command -v ninja >/dev/null && generator=(-G Ninja)
cmake -S cuda -B "$build" "${generator[@]}" -DCMAKE_BUILD_TYPE=Release -DATQ_FMT_INCLUDE="$deps" \
  -DATQ_GTEST_SOURCE="$deps/googletest" >"$out/configure.log" 2>&1 || { tail -30 "$out/configure.log"; exit 1; }
cmake --build "$build" --parallel "$(nproc)" >"$out/build.log" 2>&1 || { grep -E "error" -A3 "$out/build.log" | head -60; exit 1; }
echo "gpu_check: built in $(( $(date +%s) - start )) s"
status=0
"$build/atq_cuda_tests" --gtest_brief=1 --gtest_output="json:$out/cuda_tests.json" 2>&1 | tee "$out/tests.log" | tail -40 || status=1
if command -v compute-sanitizer >/dev/null && [ "${ATQ_GPU_SANITIZE:-1}" = 1 ]; then
  ATQ_CUDA_TEST_QUICK=1 timeout 120 compute-sanitizer --tool memcheck --error-exitcode 3 \
    "$build/atq_cuda_tests" --gtest_brief=1 >"$out/memcheck.log" 2>&1 && echo "gpu_check: memcheck clean" \
    || { echo "gpu_check: memcheck failed"; tail -30 "$out/memcheck.log"; status=1; }
fi
benches="${ATQ_GPU_BENCH:-kernels,decoder}"
if [[ ",$benches," == *,kernels,* ]]; then
  "$build/atq_cuda_bench" --out "$out/cuda_bench.json" 2>&1 | tee "$out/bench.log" || status=1
fi
if [[ ",$benches," == *,decoder,* ]]; then
  "$build/atq_cuda_decoder_bench" --out "$out/cuda_decoder_bench.json" 2>&1 | tee "$out/decoder_bench.log" || status=1
fi
echo "gpu_check: finished in $(( $(date +%s) - start )) s, status $status"
exit $status
