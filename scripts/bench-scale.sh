#!/usr/bin/env bash
# Benchmarks process scaling (issue "Process types, scaling, release phase,
# health checks and one-off commands"):
#   A. `ps scale APP web=10` from web=1 on the docker runner, until all ten
#      answer (the command returns then), against ten `docker run`s of the
#      same image started together plus polling each until it answers HTTP,
#      in the same run; target ratio <= 1.1;
#   B. requests/s through nap's router to 1 and to 4 instances of a
#      CPU-bound upstream (nap-test-upstream's /burn?ms=2, each instance
#      limited to half a CPU with `limits set cpus=0.5`): reported.
#
#   scripts/bench-scale.sh [--runs N] [--write docs/benchmarks.md]
#   scripts/bench-scale.sh --smoke    # every step once, briefly, on the debug build; nothing judged
#
# --write replaces the section between the bench-scale:begin/end markers.
# Runs on 127.0.0.1 in a temporary directory removed on exit, with the apps'
# containers; needs root, hyperfine and wrk. Calls scripts/services.sh.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
. "$ROOT/scripts/bench-lib.sh"
parse_args 10 "$@"
for tool in hyperfine wrk curl; do
  command -v "$tool" >/dev/null || { echo "bench-scale: $tool is missing (apt-get install -y hyperfine wrk curl)" >&2; exit 1; }
done

setup_bench scale
cleanup() {
  for pid in "${PIDS[@]}" $(cat "$T/pids" 2>/dev/null); do kill "$pid" 2>/dev/null || true; done
  for app in "${APPS[@]}"; do
    docker ps -aq --filter "label=nap.app=$app" | xargs -r docker rm -f >/dev/null 2>&1 || true
  done
  docker ps -aq --filter "label=nap-bench-scale=$TAG" | xargs -r docker rm -f >/dev/null 2>&1 || true
  remove_app_networks "$TAG"
  rm -rf "$T"
}
APPS=()
trap cleanup EXIT
UPSTREAM=$("$ROOT/scripts/build-test-upstream.sh")

ssh-keygen -q -t ed25519 -N '' -f "$T/id"
SSH="ssh -i $T/id -o IdentitiesOnly=yes -o BatchMode=yes -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null -o LogLevel=ERROR"
PORT=$(free_port)
HTTP=$(free_port)
mkdir -p "$T/gw"
printf 'data_dir = "%s"\npublic_host = "127.0.0.1"\nrunner = "docker"\nhttp_listen = "127.0.0.1:%s"\ndomain = "bench.test"\n' \
  "$T/gw/data" "$HTTP" >"$T/gw/nap.toml"
"$NAP" --config "$T/gw/nap.toml" keys add bench --admin <"$T/id.pub" >/dev/null
NAP_HTTP_LISTEN="127.0.0.1:$HTTP" "$NAP" --config "$T/gw/nap.toml" serve --listen "127.0.0.1:$PORT" >/dev/null 2>"$T/gw/serve.log" &
echo $! >>"$T/pids"
wait_port "$PORT"
nap() { $SSH -p "$PORT" nap@127.0.0.1 "$@"; }
push() { # DIR APP
  APPS+=("$2")
  (cd "$1" && GIT_SSH_COMMAND="$SSH" git push -q "ssh://nap@127.0.0.1:$PORT/$2" master 2>"$T/push.log") || { cat "$T/push.log" >&2; exit 1; }
}

log "A: ps scale web=1 -> web=10, against ten docker runs at once"
"$ROOT/tests/fixtures/app.sh" "$T/web" web
WEB=bench-scale-$TAG
push "$T/web" "$WEB"
IMAGE=nap/$WEB:v1
NETWORK=$(docker inspect -f '{{range $k, $v := .NetworkSettings.Networks}}{{$k}}{{end}}' "nap-$WEB-v1-web.1")
printf '#!/usr/bin/env bash\ndocker ps -aq --filter label=nap-bench-scale=%s | xargs -r docker rm -f >/dev/null\n' "$TAG" >"$T/clean.sh"
chmod +x "$T/clean.sh"
cat >"$T/ten.sh" <<SH
#!/usr/bin/env bash
# Ten containers of the image at once on nap's network, each polled until it answers HTTP.
set -euo pipefail
for i in \$(seq 10); do
  docker run -d --label nap-bench-scale=$TAG --network $NETWORK -e PORT=5000 $IMAGE >$T/ten.\$i &
done
wait
for i in \$(seq 10); do
  (ip=\$(docker inspect -f '{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}' \$(cat $T/ten.\$i))
   until curl -fs -o /dev/null --max-time 1 http://\$ip:5000/; do sleep 0.02; done) &
done
wait
SH
chmod +x "$T/ten.sh"
hyperfine -N --runs "$RUNS" --export-json "$T/a.json" \
  --prepare "$SSH -p $PORT nap@127.0.0.1 ps scale $WEB web=1" -n "ps scale web=1 -> web=10 (nap, docker runner)" \
  "$SSH -p $PORT nap@127.0.0.1 ps scale $WEB web=10" \
  --prepare "$T/clean.sh" -n "10 docker runs at once + polling (baseline)" \
  "$T/ten.sh" >&2

log "B: requests/s through the router to 1 and 4 instances of a CPU-bound upstream"
NAP_TEST_UPSTREAM=$UPSTREAM "$ROOT/tests/fixtures/app.sh" "$T/up" upstream
UP=bench-burn-$TAG
push "$T/up" "$UP"
nap limits set "$UP" cpus=0.5 >/dev/null 2>&1
URL="http://127.0.0.1:$HTTP/burn?ms=2"
burn() { # NAME: a 2 s warm-up, then wrk -t2 -c16 -d10s into $T/NAME.txt
  wrk -t2 -c16 -d2s -H "Host: $UP.bench.test" "$URL" >/dev/null
  wrk -t2 -c16 -d10s --latency -H "Host: $UP.bench.test" "$URL" >"$T/$1.txt"
}
burn one
nap ps scale "$UP" web=4 >/dev/null 2>&1
burn four

python3 - "$T/a.json" "$T/one.txt" "$T/four.txt" "$REV" "$(( $(date +%s) - STARTED ))" "$(nproc)" >"$T/results.md" <<'PY'
import json, re, sys
a = {r["command"]: r for r in json.load(open(sys.argv[1]))["results"]}
nap = next(r for name, r in a.items() if name.startswith("ps scale"))
base = next(r for name, r in a.items() if name.startswith("10 docker"))
def rps(path):
    text = open(path).read()
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", text)
    return float(re.search(r"Requests/sec:\s+([\d.]+)", text).group(1)), int(errors.group(1)) if errors else 0
one, four = rps(sys.argv[2]), rps(sys.argv[3])
ratio = nap["median"] / base["median"]
print(f"Measured with `scripts/bench-scale.sh` on the release build of {sys.argv[4]} ({sys.argv[6]} cores), "
      f"runtime {sys.argv[5]} s, {len(nap['times'])} runs each for A.\n")
print("| figure | nap | baseline | ratio | target | result |")
print("|---|---|---|---|---|---|")
print(f"| A. `ps scale web=10` from web=1, until all ten answer (docker runner) | {nap['median']*1000:.0f} ms median "
      f"({nap['mean']*1000:.0f} ± {nap['stddev']*1000:.0f} ms) | {base['median']*1000:.0f} ms median ({base['mean']*1000:.0f} ± "
      f"{base['stddev']*1000:.0f} ms), ten `docker run`s at once + polling each | {ratio:.2f} | ≤ 1.1 | "
      f"{'pass' if ratio <= 1.1 else 'FAIL'} |")
print(f"| B. requests/s through the router, `/burn?ms=2`, 1 instance (cpus=0.5) | {one[0]:.0f} req/s ({one[1]} non-2xx) | | | reported | |")
print(f"| B. the same, 4 instances (cpus=0.5 each) | {four[0]:.0f} req/s ({four[1]} non-2xx) | 1 instance | {four[0]/one[0]:.2f} | reported | |")
PY
cat "$T/results.md"
[ -z "$WRITE" ] || write_results "$WRITE" bench-scale "Process scaling" "$T/results.md"
