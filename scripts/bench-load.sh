#!/usr/bin/env bash
# Load on one `nap serve` (issue "Hardening"):
#   A. 200 SSH commands at once (`apps`, `config APP`, `version`, alternating);
#   B. 20 pushes at once, to 20 apps (the docker runner, the registry).
# Checks that none fails, that the gateway's open files come back to where
# they were, and that each app runs exactly one container (none leaked);
# reports the wall time and the gateway's RSS (before, peak, after).
#
#   scripts/bench-load.sh [--runs N] [--write docs/benchmarks.md]
#   scripts/bench-load.sh --smoke    # every step once, briefly, on the debug build; nothing judged
#
# --write replaces the section between the bench-load:begin/end markers.
# Runs on 127.0.0.1 in a temporary directory removed on exit; needs root.
# Calls scripts/services.sh (dockerd, the registry, nap/busybox).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
. "$ROOT/scripts/bench-lib.sh"
parse_args 1 "$@"

setup_bench load
APPS=$(smoke 3 20)
COMMANDS=$(smoke 20 200)
cleanup() {
  local status=$?
  set +e
  for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null; done
  docker ps -aq --filter "label=nap.app" --filter "name=bench-load-$TAG" | xargs -r docker rm -f >/dev/null 2>&1
  docker images --format '{{.Repository}}:{{.Tag}}' | grep -E "/bench-load-$TAG-" | xargs -r docker rmi -f >/dev/null 2>&1
  remove_app_networks "$TAG"
  [ $status -ne 0 ] && [ -f "$T/serve.log" ] && tail -n 20 "$T/serve.log" >&2
  rm -rf "$T"
  exit $status
}
trap cleanup EXIT

ssh-keygen -q -t ed25519 -N '' -f "$T/id"
SSH="ssh -i $T/id -o IdentitiesOnly=yes -o BatchMode=yes -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null -o LogLevel=ERROR"
PORT=$(free_port)
# Every client is 127.0.0.1 here: the per-address login limit (30) would cut
# the commands that wait to log in, as OpenSSH's MaxStartups would.
printf 'data_dir = "%s"\npublic_host = "127.0.0.1"\nregistry = "127.0.0.1:5000"\nrunner = "docker"\nmax_startups = 256\nper_source_max_startups = 256\n' "$T/data" >"$T/nap.toml"
"$NAP" --config "$T/nap.toml" keys add bench --admin <"$T/id.pub" >/dev/null
"$NAP" --config "$T/nap.toml" serve --listen "127.0.0.1:$PORT" >/dev/null 2>"$T/serve.log" &
SERVE=$!
PIDS+=("$SERVE")
wait_port "$PORT"

rss_kib() { awk '/^VmRSS/ {print $2}' "/proc/$SERVE/status"; }
fds() { find "/proc/$SERVE/fd" -mindepth 1 -maxdepth 1 | wc -l; }
# Samples the gateway's RSS every 50 ms into $T/rss until $T/sampling goes.
sample_rss() {
  touch "$T/sampling"
  (while [ -e "$T/sampling" ]; do rss_kib >>"$T/rss"; sleep 0.05; done) &
  SAMPLER=$!
}
stop_sampling() { rm -f "$T/sampling"; wait "$SAMPLER" 2>/dev/null || true; }
peak_mib() { sort -n "$T/rss" | tail -1 | awk '{printf "%.1f", $1 / 1024}'; }
mib() { awk -v k="$1" 'BEGIN {printf "%.1f", k / 1024}'; }
now_ms() { date +%s%3N; }

for n in $(seq "$APPS"); do
  "$ROOT/tests/fixtures/app.sh" "$T/app-$n" web
done
# One app first, so the base image's layers are in the registry and the
# pushes below measure nap, not the first upload.
(cd "$T/app-1" && GIT_SSH_COMMAND="$SSH" git push -q "ssh://nap@127.0.0.1:$PORT/bench-load-$TAG-warm" master 2>/dev/null)
$SSH -p "$PORT" nap@127.0.0.1 apps destroy "bench-load-$TAG-warm" --force >/dev/null
sleep 1

RESULTS=$T/results.md
: >"$RESULTS"
for run in $(seq "$RUNS"); do
  log "run $run: $COMMANDS SSH commands at once"
  base_fds=$(fds)
  base_rss=$(rss_kib)
  : >"$T/rss"
  sample_rss
  started=$(now_ms)
  : >"$T/failed"
  waiting=()
  for n in $(seq "$COMMANDS"); do
    case $((n % 3)) in
      0) args=(apps) ;;
      1) args=(version) ;;
      2) args=(keys) ;;
    esac
    ($SSH -p "$PORT" nap@127.0.0.1 "${args[@]}" >/dev/null 2>"$T/cmd-$n.err" || echo "$n ${args[*]}: $(head -c 200 "$T/cmd-$n.err")" >>"$T/failed") &
    waiting+=($!)
  done
  wait "${waiting[@]}"
  commands_ms=$(($(now_ms) - started))
  stop_sampling
  commands_failed=$(wc -l <"$T/failed")
  [ "$commands_failed" = 0 ] || { echo "bench-load: $commands_failed commands failed:" >&2; head -5 "$T/failed" >&2; exit 1; }
  commands_peak=$(peak_mib)

  log "run $run: $APPS pushes at once"
  : >"$T/rss"
  sample_rss
  started=$(now_ms)
  : >"$T/failed"
  waiting=()
  for n in $(seq "$APPS"); do
    app=bench-load-$TAG-$run-$n
    (cd "$T/app-$n" && GIT_SSH_COMMAND="$SSH" git push -q "ssh://nap@127.0.0.1:$PORT/$app" master 2>"$T/push-$n.err" ||
      echo "$app: $(tail -3 "$T/push-$n.err")" >>"$T/failed") &
    waiting+=($!)
  done
  wait "${waiting[@]}"
  pushes_ms=$(($(now_ms) - started))
  stop_sampling
  pushes_failed=$(wc -l <"$T/failed")
  [ "$pushes_failed" = 0 ] || { echo "bench-load: $pushes_failed pushes failed:" >&2; head -5 "$T/failed" >&2; exit 1; }
  pushes_peak=$(peak_mib)
  for n in $(seq "$APPS"); do
    app=bench-load-$TAG-$run-$n
    count=$(docker ps -q --filter "label=nap.app=$app" | wc -l)
    [ "$count" = 1 ] || { echo "bench-load: $app runs $count containers, not 1" >&2; exit 1; }
    $SSH -p "$PORT" nap@127.0.0.1 apps destroy "$app" --force >/dev/null
  done
  left=$(docker ps -aq --filter "label=nap.app" --filter "name=bench-load-$TAG-$run-" | wc -l)
  [ "$left" = 0 ] || { echo "bench-load: $left containers left after apps destroy" >&2; exit 1; }
  sleep 2
  after_fds=$(fds)
  after_rss=$(rss_kib)
  [ "$after_fds" -le $((base_fds + 2)) ] || { echo "bench-load: the gateway holds $after_fds files, $base_fds before" >&2; exit 1; }
  {
    echo "| $run | $COMMANDS commands: 0 failed, ${commands_ms} ms | $APPS pushes: 0 failed, ${pushes_ms} ms | $(mib "$base_rss") → $commands_peak / $pushes_peak → $(mib "$after_rss") MiB | $base_fds → $after_fds | 0 |"
  } >>"$RESULTS"
done

{
  echo "Measured by \`scripts/bench-load.sh\` at $REV on $(nproc) cores, $(date -u +%Y-%m-%d). One \`nap serve\` (release build, embedded store, docker runner); every failure fails the script."
  echo
  echo "| run | A. SSH commands at once | B. pushes at once (20 apps) | gateway RSS: before → peak A / peak B → after | gateway's open files: before → after | containers leaked |"
  echo "|---|---|---|---|---|---|"
  cat "$RESULTS"
} >"$T/section.md"
cat "$T/section.md"
if [ -n "$WRITE" ]; then
  write_results "$WRITE" bench-load "Load: 200 SSH commands and 20 pushes at once (issue 14)" "$T/section.md"
fi
