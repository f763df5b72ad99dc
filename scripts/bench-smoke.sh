#!/usr/bin/env bash
# Every benchmark script once with --smoke: each step briefly, on the debug
# build, its figures not judged nor written. It shows that each script still
# runs to its end (CI runs this after the tests). About 5 minutes on 2 cores.
#
#   scripts/bench-smoke.sh [SCRIPT...]    # default: every scripts/bench*.sh
#
# Needs what the benchmarks need: root, the test services
# (scripts/services.sh --for-tests), wrk, nginx, hyperfine.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
scripts=("$@")
if [ ${#scripts[@]} = 0 ]; then
  for script in scripts/bench*.sh; do
    case $script in */bench-lib.sh|*/bench-smoke.sh) ;; *) scripts+=("$script") ;; esac
  done
fi
failed=()
for script in "${scripts[@]}"; do
  started=$(date +%s)
  if "$script" --smoke >"/tmp/nap-smoke-$(basename "$script" .sh).log" 2>&1; then
    echo "bench-smoke: $script ran to its end in $(( $(date +%s) - started )) s"
  else
    echo "bench-smoke: $script FAILED after $(( $(date +%s) - started )) s; its last lines:" >&2
    tail -n 20 "/tmp/nap-smoke-$(basename "$script" .sh).log" >&2
    failed+=("$script")
  fi
done
[ ${#failed[@]} = 0 ] || { echo "bench-smoke: ${#failed[@]} script(s) failed: ${failed[*]}" >&2; exit 1; }
