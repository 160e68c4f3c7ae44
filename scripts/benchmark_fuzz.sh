#!/usr/bin/env bash
# The long fuzzing campaign: every libFuzzer target for SECONDS each (default 600, ten minutes; CI runs 60), one
# after another, results in out/fuzz.json (executions, coverage, peak memory, findings per target). A finding
# stops the campaign with the reproducer's path, as in scripts/fuzz.sh.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
mkdir -p "$root/out"
ATQ_FUZZ_JSON="${ATQ_FUZZ_JSON:-$root/out/fuzz.json}" bash "$root/scripts/fuzz.sh" "${1:-600}"
