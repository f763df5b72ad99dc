#!/usr/bin/env bash
# Benchmarks the swarm runner (issue "Beyond one host, tested for real: a
# Docker Swarm runner on a real three-node swarm") on a real three-node swarm
# of dockerds in network namespaces (tests/src/swarm.rs), with nap serve's
# router in front:
#   A. `git push` of a new commit until all three replicas answer it, against
#   B. the same image rolled out by hand (`docker service update --image`
#      plus polling), in the same run, round after round; target ratio <= 1.1;
#   C. a worker's dockerd stopped under load: when its tasks run elsewhere,
#      the last request the router sent to it, the failed requests.
# The driver is tests/src/bin/bench-swarm.rs; this builds it and nap
# (release), checks the services, runs it and prints (or --write's) its table.
#
#   scripts/bench-swarm.sh [--runs N] [--write docs/benchmarks.md]
#   scripts/bench-swarm.sh --smoke    # one round on the debug build; nothing judged
#
# Needs root, the test services (scripts/services.sh --for-tests: dockerd,
# the registry on 127.0.0.1:5000, nap/busybox, VXLAN). About 3 minutes.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
. "$ROOT/scripts/bench-lib.sh"
parse_args 5 "$@"
[ -z "$SMOKE" ] || RUNS=1   # one round shows every step
[ "$(id -u)" = 0 ] || { echo "bench-swarm: run as root (network namespaces, dockerd)" >&2; exit 1; }
"$ROOT/scripts/services.sh" --for-tests >&2

log "building nap and the driver"
build_nap -p nap-tests --bins
T=$(mktemp -d /tmp/nap-bench-swarm.XXXXXX)
trap 'rm -rf "$T"' EXIT
NAP_BIN=$BIN/nap NAP_TEST_UPSTREAM=$("$ROOT/scripts/build-test-upstream.sh") \
  "$BIN/bench-swarm" "$RUNS" >"$T/results.md"
REV=$(git -C "$ROOT" rev-parse --short HEAD)
printf '%s\n' "Revision $REV, $(date -u '+%Y-%m-%d %H:%M UTC'), $(nproc) cores, Linux $(uname -r)." "" | cat - "$T/results.md" >"$T/section.md"
log "results"
cat "$T/section.md"
[ -z "$WRITE" ] || write_results "$WRITE" bench-swarm "The swarm runner" "$T/section.md"
