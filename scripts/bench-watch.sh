#!/usr/bin/env bash
# Benchmarks template hooks (issue "Template hooks"):
#   1. latency from an etcd put to reload_cmd starting, debounce off;
#   2. a burst of 10,000 puts over 100 keys: the final state rendered (no
#      lost final state), and the watcher's CPU time per 1,000 events;
#   3. `nap watch --onetime` of a template reading 1,000 keys, against one
#      reading a single key.
#
#   scripts/bench-watch.sh [--runs N] [--write docs/benchmarks.md]
#   scripts/bench-watch.sh --smoke    # every step once, briefly, on the debug build; nothing judged
#
# --write replaces the section between the bench-watch:begin/end markers.
# Runs on 127.0.0.1 with a private etcd in a temporary directory removed on
# exit. Calls scripts/services.sh for the packages (etcd, hyperfine).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
. "$ROOT/scripts/bench-lib.sh"
parse_args 10 "$@"

"$ROOT/scripts/services.sh" --for-tests >&2
build_nap -p nap-tests --bins
NAP=$BIN/nap
DRIVER=$BIN/bench-watch
REV=$(git -C "$ROOT" rev-parse --short HEAD)
T=$(mktemp -d /tmp/nap-bench-watch.XXXXXX)
PIDS=()
cleanup() {
  for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
  rm -rf "$T"
}
trap cleanup EXIT

log "a private etcd"
start_etcd
STORE=etcd://$ETCD

# resource DIR NAME PREFIX TEMPLATE [RELOAD]
resource() {
  mkdir -p "$1/conf.d" "$1/templates"
  printf '[template]\nsrc = "%s.tera"\ndest = "%s/%s.out"\nprefix = "%s"\n' "$2" "$1" "$2" "$3" >"$1/conf.d/$2.toml"
  [ -n "${5:-}" ] && printf 'reload_cmd = "%s"\n' "$5" >>"$1/conf.d/$2.toml"
  printf '%s' "$4" >"$1/templates/$2.tera"
}

log "1. put -> reload_cmd latency, debounce 0"
resource "$T/lat" lat /lat '{{ getv(key="/v", default="") }}' "date +%s%N >> $T/lat/reloads"
"$NAP" --store "$STORE" watch --confdir "$T/lat/conf.d" --debounce 0 2>"$T/lat.log" &
PIDS+=($!)
sleep 1
"$DRIVER" latency "$ETCD" /lat/v "$T/lat/reloads" $((RUNS * 50)) >"$T/latency.json"
cat "$T/latency.json" >&2

log "2. a burst of 10,000 puts over 100 keys"
resource "$T/burst" burst /burst '{% for name in ls(key="/k") %}{{ name }}={{ getv(key="/k/" ~ name) }}
{% endfor %}'
"$NAP" --store "$STORE" watch --confdir "$T/burst/conf.d" --debounce 0 2>"$T/burst.log" &
WATCHER=$!
PIDS+=($WATCHER)
sleep 1
"$DRIVER" burst "$ETCD" /burst "$T/burst/burst.out" "$WATCHER" >"$T/burst.json"
cat "$T/burst.json" >&2

log "3. --onetime rendering 1,000 keys, and 1"
"$DRIVER" fill "$ETCD" /many/k 1000
resource "$T/many" many /many '{% for name in ls(key="/k") %}{{ name }}={{ getv(key="/k/" ~ name) }}
{% endfor %}'
resource "$T/one" one /many '{{ getv(key="/k/key000") }}'
hyperfine -N --warmup 2 --runs $((RUNS * 2)) --export-json "$T/render.json" \
  -n "onetime, 1,000 keys" "$NAP --store $STORE watch --confdir $T/many/conf.d --onetime" \
  -n "onetime, 1 key" "$NAP --store $STORE watch --confdir $T/one/conf.d --onetime" >&2
[ "$(wc -l <"$T/many/many.out")" = 1000 ] || { echo "bench-watch: the 1,000-key render is wrong" >&2; exit 1; }

python3 - "$T/latency.json" "$T/burst.json" "$T/render.json" "$REV" "$(( $(date +%s) - STARTED ))" "$(nproc)" \
  "$(etcd --version | head -1)" >"$T/results.md" <<'PY'
import json, sys
lat, burst = json.load(open(sys.argv[1])), json.load(open(sys.argv[2]))
render = {r["command"]: r for r in json.load(open(sys.argv[3]))["results"]}
ms = lambda s: s * 1000
print(f"Measured with `scripts/bench-watch.sh` on the release build of {sys.argv[4]}, runtime {sys.argv[5]} s, "
      f"{sys.argv[6]} cores, {sys.argv[7]}; a private etcd on loopback.\n")
print("| figure | measured | target | result |")
print("|---|---|---|---|")
ok = lat["p50_ms"] < 10 and lat["p99_ms"] < 50
print(f"| 1. etcd put → reload_cmd starts (debounce 0, {lat['n']} puts one at a time) | p50 {lat['p50_ms']:.1f} ms, p99 {lat['p99_ms']:.1f} ms, max {lat['max_ms']:.1f} ms "
      f"| p50 < 10 ms, p99 < 50 ms | {'pass' if ok else 'FAIL'} |")
print(f"| 2. 10,000 puts over 100 keys from 10 writers | final state rendered: {'yes' if burst['final_state'] else 'NO'} "
      f"({burst['write_ms']:.0f} ms to write, file final {burst['settled_ms']:.0f} ms after the first put); "
      f"watcher CPU {burst['cpu_ms_per_1000']:.1f} ms per 1,000 events | zero lost final states | {'pass' if burst['final_state'] else 'FAIL'} |")
many, one = render["onetime, 1,000 keys"], render["onetime, 1 key"]
print(f"| 3. `nap watch --onetime`, a template reading 1,000 keys | {ms(many['mean']):.1f} ± {ms(many['stddev']):.1f} ms "
      f"(1 key: {ms(one['mean']):.1f} ms; the 1,000 keys cost {ms(many['mean'] - one['mean']):.1f} ms) | none set | reported |")
PY
cat "$T/results.md"
[ -z "$WRITE" ] || write_results "$WRITE" bench-watch "Template hooks" "$T/results.md"
