#!/usr/bin/env bash
# Benchmarks nap's HTTP router (issue "The HTTP router") with wrk, against one
# upstream app (nap-test-upstream: a static keep-alive server, deployed by nap)
# reached three ways:
#   (a) direct to the container: the limit;
#   (b) through nginx, proxy_pass to an upstream keepalive pool (configs of
#       its own: worker_processes 1 and auto, keepalive 64 as the issue asks
#       and 256, as many as wrk's connections);
#   (c) through nap's router in `nap serve`, at nap's default log level (one
#       access line per request) and with the access log off, and through
#       `nap router` alone.
# Each: wrk -t2 -c256 for 10 s after a 2 s warm-up, N runs interleaved (odd runs
# in one order, even runs in the reverse), medians
# of requests/s, p50 and p99, the proxy's CPU time per request and its peak
# RSS sampled every 50 ms. Then nginx (logging, forwarding headers) and nap
# serve's router side by side: each under a wrk -t1 -c128 of its own, at once.
# Then 20 deploys of the app (pushes alternating with `config set`) under a
# 50-connection wrk load through the router, counting every failed request
# (status >= 300, socket errors, timeouts), beside the same 20 deploys routed
# by examples/nginx (nap watch renders nginx.conf, nginx -s reload).
#
#   scripts/bench-router.sh [--runs N] [--write docs/benchmarks.md]
#   scripts/bench-router.sh --smoke    # every step once, briefly, on the debug build; nothing judged
#
# --write replaces the section between the bench-router:begin/end markers.
# Runs on 127.0.0.1 with a private etcd, nap serve and nginx in a temporary
# directory removed on exit, with the app's containers; needs root, wrk and
# nginx (Debian). It starts no shared service: dockerd, the registry on
# 127.0.0.1:5000 and the nap/busybox image must be up (scripts/services.sh --for-tests).
# Honours CARGO_TARGET_DIR. Takes about 16 minutes with the default 5 runs.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
. "$ROOT/scripts/bench-lib.sh"
parse_args 5 "$@"
WARM=2                      # seconds of warm-up before each throughput run (none under --smoke)
DURATION=$(smoke 1 10)      # seconds of each throughput run
DEPLOYS=$(smoke 2 20)       # deploys under load, per proxy
PAUSE=$(smoke 0 1)          # seconds between runs
[ -z "$SMOKE" ] || RUNS=1   # no spread is reported: one round shows every step
[ "$(id -u)" = 0 ] || { echo "bench-router: run as root (docker, nginx)" >&2; exit 1; }
for tool in wrk nginx etcd etcdctl docker git ssh ssh-keygen curl python3; do
  command -v "$tool" >/dev/null || { echo "bench-router: $tool is missing (apt-get install -y wrk nginx)" >&2; exit 1; }
done
docker info >/dev/null 2>&1 && curl -fsS http://127.0.0.1:5000/v2/ >/dev/null 2>&1 &&
  docker image inspect nap/busybox:latest >/dev/null 2>&1 ||
  { echo "bench-router: dockerd, the registry on 127.0.0.1:5000 or nap/busybox is missing (scripts/services.sh --for-tests)" >&2; exit 1; }

log "building nap and nap-test-upstream"
build_nap
UPSTREAM=$("$ROOT/scripts/build-test-upstream.sh")
REV=$(git -C "$ROOT" rev-parse --short HEAD)$( (cd "$ROOT" && git diff --quiet HEAD -- Cargo.toml Cargo.lock gateway state) || echo ' with uncommitted changes')
TAG=$(od -An -N3 -tx1 /dev/urandom | tr -d ' \n')
APP=bench-router-$TAG
HOST=$APP.bench.test
T=$(mktemp -d /tmp/nap-bench-router.XXXXXX)
PIDS=()
NAP_PID=""
# A private copy: a rebuild during the run cannot swap the binary under nap serve.
cp "$BIN/nap" "$T/nap"
NAP=$T/nap
ssh-keygen -q -t ed25519 -N '' -f "$T/id"
SSH="ssh -i $T/id -o IdentitiesOnly=yes -o BatchMode=yes -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null -o LogLevel=ERROR"
export GIT_SSH_COMMAND=$SSH

stop_pid() { # PID: SIGTERM, up to 30 s, then SIGKILL
  kill -TERM "$1" 2>/dev/null || return 0
  for _ in $(seq 300); do kill -0 "$1" 2>/dev/null || return 0; sleep 0.1; done
  kill -KILL "$1" 2>/dev/null || true
}
cleanup() {
  local status=$?
  set +e
  [ -n "$NAP_PID" ] && $SSH -p "$SSH_PORT" nap@127.0.0.1 apps destroy "$APP" --force >/dev/null 2>&1
  [ -s "$T/ngx/nginx.pid" ] && stop_pid "$(cat "$T/ngx/nginx.pid")"
  [ -n "$NAP_PID" ] && stop_pid "$NAP_PID"
  for pid in "${PIDS[@]}"; do stop_pid "$pid"; done
  docker ps -aq --filter "label=nap.app=$APP" | xargs -r docker rm -f >/dev/null 2>&1
  docker images -q --filter "label=nap.app=$APP" | sort -u | xargs -r docker rmi -f >/dev/null 2>&1
  docker images --format '{{.Repository}}:{{.Tag}}' | grep -E "(^|/)$APP:" | xargs -r docker rmi -f >/dev/null 2>&1
  remove_app_networks "$TAG"
  if [ $status -ne 0 ] && [ -f "$T/nap.log" ]; then
    echo "bench-router: failed; the last lines of nap serve's log:" >&2
    tail -n 20 "$T/nap.log" >&2
  fi
  rm -rf "$T"
  exit $status
}
trap cleanup EXIT
trap 'exit 130' INT TERM

log "a private etcd and nap serve (router on 127.0.0.1, domain bench.test)"
start_etcd
SSH_PORT=$(free_port)
HTTP_PORT=$(free_port)
# HTTP only: nap serve and `nap router` share this file, and both would take :443.
printf 'data_dir = "%s"\nstore = "etcd://%s"\nregistry = "127.0.0.1:5000"\npublic_host = "127.0.0.1"\nrunner = "docker"\nhttps_listen = "off"\n' \
  "$T/data" "$ETCD" >"$T/nap.toml"
"$NAP" --config "$T/nap.toml" keys add bench --admin <"$T/id.pub" >/dev/null

start_nap() { # [VAR=VALUE...]: nap serve with that environment; waits until the router routes the app (once pushed)
  # Not NAP_HTTP_LISTEN=off, which bench-lib's setup_bench exports: the router is what is measured.
  env "$@" NAP_HTTP_LISTEN="127.0.0.1:$HTTP_PORT" "$NAP" --config "$T/nap.toml" serve \
    --listen "127.0.0.1:$SSH_PORT" --http-listen "127.0.0.1:$HTTP_PORT" --domain bench.test >/dev/null 2>>"$T/nap.log" &
  NAP_PID=$!
  wait_port "$SSH_PORT"
  wait_port "$HTTP_PORT"
  [ -z "${UPSTREAM_ADDR:-}" ] && return 0
  for _ in $(seq 100); do
    [ "$(curl -s -o /dev/null -w '%{http_code}' -H "Host: $HOST" "http://127.0.0.1:$HTTP_PORT/")" = 200 ] && return 0
    sleep 0.1
  done
  echo "bench-router: the router does not route $HOST" >&2
  return 1
}
stop_nap() { stop_pid "$NAP_PID"; wait "$NAP_PID" 2>/dev/null || true; NAP_PID=""; }
start_nap

log "pushing the upstream app $APP"
NAP_TEST_UPSTREAM=$UPSTREAM "$ROOT/tests/fixtures/app.sh" "$T/app" upstream
git -C "$T/app" push -q "ssh://nap@127.0.0.1:$SSH_PORT/$APP" master 2>"$T/push.log" || { cat "$T/push.log" >&2; exit 1; }
instance() { # KEY: the value of /nap/apps/APP/instances/*/KEY of the serving instance
  ETCDCTL_API=3 etcdctl --endpoints "$ETCD" get --prefix "/nap/apps/$APP/instances/" |
    awk -v k="/$1" 'NR % 2 == 1 { key = $0; next } substr(key, length(key) - length(k) + 1) == k { print; exit }'
}
UPSTREAM_ADDR=$(instance ip):$(instance port)
curl -fsS "http://$UPSTREAM_ADDR/" >/dev/null || { echo "bench-router: the container does not answer at $UPSTREAM_ADDR" >&2; exit 1; }
echo "the container answers at $UPSTREAM_ADDR" >&2

# nginx (b): configs of its own, in the foreground, access log off, or on
# (buffered, as production sets it) to compare with the router, which logs
# a line per request by default. The issue's pool is `keepalive 64`; with
# 256 client connections nginx then opens and closes an upstream connection
# for most requests, so a pool as large as the load (keepalive 256) is
# measured beside it. With `fwd`, nginx also sets the headers nap's router
# sets on every request it forwards (X-Forwarded-For/-Proto/-Host/-Port and
# X-Request-Id, the client's or a new one), so that both do the same work.
nginx_conf() { # WORKERS KEEPALIVE PORT DIR [log|""] [fwd]
  mkdir -p "$4"
  local access="access_log off;" map="" fwd=""
  [ "${5:-}" != log ] || access="access_log $4/access.log combined buffer=64k flush=1s;"
  if [ "${6:-}" = fwd ]; then
    map="map \$http_x_request_id \$nap_request_id { default \$http_x_request_id; \"\" \$request_id; }"
    fwd="proxy_set_header X-Forwarded-For \$proxy_add_x_forwarded_for;
      proxy_set_header X-Forwarded-Proto \$scheme;
      proxy_set_header X-Forwarded-Host \$host;
      proxy_set_header X-Forwarded-Port \$server_port;
      proxy_set_header X-Request-Id \$nap_request_id;"
  fi
  cat >"$4/nginx.conf" <<CONF
worker_processes $1;
daemon off;
pid $4/nginx.pid;
error_log $4/error.log;
events { worker_connections 4096; }
http {
  $access
  $map
  upstream app { server $UPSTREAM_ADDR; keepalive $2; }
  server {
    listen 127.0.0.1:$3;
    location / {
      proxy_pass http://app;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_set_header Host \$host;
      $fwd
    }
  }
}
CONF
}
declare -A NGINX_PORT NGINX_PID
for variant in 1:64 auto:64 1:256 auto:256 1:256:log 1:256::fwd 1:256:log:fwd; do
  IFS=: read -r workers pool access fwd <<<"$variant"
  NGINX_PORT[$variant]=$(free_port)
  nginx_conf "$workers" "$pool" "${NGINX_PORT[$variant]}" "$T/nginx-${variant//:/-}" "$access" "$fwd"
  nginx -c "$T/nginx-${variant//:/-}/nginx.conf" 2>>"$T/nginx-${variant//:/-}/error.log" &
  NGINX_PID[$variant]=$!
  PIDS+=($!)
  wait_port "${NGINX_PORT[$variant]}"
done
nginx_pids() { echo "${NGINX_PID[$1]}" $(pgrep -P "${NGINX_PID[$1]}"); }   # the master and its workers

# (c''): `nap router`, the router alone, beside nap serve on the same store.
ALONE_PORT=$(free_port)
"$NAP" --config "$T/nap.toml" router --http-listen "127.0.0.1:$ALONE_PORT" --domain bench.test >/dev/null 2>>"$T/router.log" &
ALONE_PID=$!
PIDS+=($!)
wait_port "$ALONE_PORT"

# Peak of the summed VmRSS (kB) of some processes, sampled every 50 ms until SIGTERM.
cat >"$T/sampler.py" <<'PY'
import os, signal, sys, time
out, pids = sys.argv[1], sys.argv[2:]
peak = samples = 0
def stop(*_):
    with open(out, "w") as f:
        f.write(f"{peak} {samples}\n")
    # Not sys.exit: once its SystemExit was lost after the peak was written,
    # and the script waited on the sampler for minutes. os._exit cannot be.
    os._exit(0)
signal.signal(signal.SIGTERM, stop)
def rss(pid):
    try:
        return next(int(l.split()[1]) for l in open(f"/proc/{pid}/status") if l.startswith("VmRSS:"))
    except (OSError, StopIteration):
        return 0
while True:
    peak, samples = max(peak, sum(rss(pid) for pid in pids)), samples + 1
    time.sleep(0.05)
PY
ticks() { # PID...: their CPU time so far (user + system, clock ticks)
  local pid sum=0
  for pid in "$@"; do sum=$((sum + $(awk '{print $14 + $15}' "/proc/$pid/stat"))); done
  echo "$sum"
}
rss_kb() { awk '$1 == "VmRSS:" {print $2}' "/proc/$1/status"; }

mkdir -p "$T/runs"
measure() { # NAME URL [PID...]: a 2 s warm-up, then wrk into runs/NAME-$r.txt; of the PIDs (the proxy):
  # peak summed RSS into .rss, VmHWM of the first into .hwm, CPU time into .cpu (ticks)
  local name=$1 url=$2 sampler="" before
  shift 2
  [ -n "$SMOKE" ] || wrk -t2 -c256 -d"$WARM"s -H "Host: $HOST" "$url" >/dev/null
  if [ $# -gt 0 ]; then
    python3 "$T/sampler.py" "$T/runs/$name-$r.rss" "$@" &
    sampler=$!
    before=$(ticks "$@")
  fi
  wrk -t2 -c256 -d"$DURATION"s --latency -H "Host: $HOST" "$url" >"$T/runs/$name-$r.txt"
  if [ -n "$sampler" ]; then
    echo $(($(ticks "$@") - before)) "$(getconf CLK_TCK)" >"$T/runs/$name-$r.cpu"
    kill -TERM "$sampler"
    wait "$sampler" || true
    awk '$1 == "VmHWM:" {print $2}' "/proc/$1/status" >"$T/runs/$name-$r.hwm"
  fi
  echo "$name run $r: $(grep -E 'Requests/sec' "$T/runs/$name-$r.txt")" >&2
  : >"$T/nap.log"   # the access lines of this run: not worth keeping
  : >"$T/router.log"
  sleep "$PAUSE"
}

ROUTER_URL=http://127.0.0.1:$HTTP_PORT/
for _ in 1 2 3; do curl -s -o /dev/null -H "Host: $HOST" "http://127.0.0.1:$ALONE_PORT/"; done
sleep "$PAUSE"
IDLE_SERVE_KB=$(rss_kb "$NAP_PID")
IDLE_ALONE_KB=$(rss_kb "$ALONE_PID")
LOAD_START=$(cut -d' ' -f1-3 /proc/loadavg)
measure_target() { # direct | nginx:VARIANT | router | alone
  case $1 in
    direct) measure direct "http://$UPSTREAM_ADDR/" ;;
    nginx:*) local variant=${1#nginx:}
      measure "nginx-${variant//:/-}" "http://127.0.0.1:${NGINX_PORT[$variant]}/" $(nginx_pids "$variant")
      [ ! -f "$T/nginx-${variant//:/-}/access.log" ] || : >"$T/nginx-${variant//:/-}/access.log" ;;
    router) measure router "$ROUTER_URL" "$NAP_PID" ;;
    alone) measure alone "http://127.0.0.1:$ALONE_PORT/" "$ALONE_PID" ;;
  esac
}
# Odd runs in this order, even runs in the reverse one: a drift of the
# machine's speed during the runs (other guests on its host, say) then
# weighs on every target alike, whatever its place in the order.
ORDER=(direct nginx:1:256 nginx:auto:256 nginx:1:256:log nginx:1:256::fwd nginx:1:256:log:fwd router alone)
log "throughput: $RUNS runs of (a) direct, (b) nginx, (c) nap serve's router and nap router alone, interleaved"
for r in $(seq "$RUNS"); do
  if [ $((r % 2)) = 1 ]; then targets=("${ORDER[@]}"); else targets=(); for t in "${ORDER[@]}"; do targets=("$t" "${targets[@]}"); done; fi
  for t in "${targets[@]}"; do measure_target "$t"; done
done
stop_pid "$ALONE_PID"

# Side by side: nginx (like for like: logging, setting the forwarding
# headers) and nap serve's router, each under a wrk of its own, at once.
# Both meet the same machine at every moment, so a drift of its speed
# cannot favour either; each round, the other one's wrk starts first.
log "side by side: $RUNS runs of nginx (like for like) and nap serve's router at once, wrk -t1 -c128 each"
NGINX_LIKE="http://127.0.0.1:${NGINX_PORT[1:256:log:fwd]}/"
both() { # SECONDS SUFFIX: both loads at once, the router's file runs/both-router-SUFFIX.txt, nginx's runs/both-nginx-SUFFIX.txt
  local first=router second=nginx
  [ $((r % 2)) = 1 ] || { first=nginx; second=router; }
  wrk -t1 -c128 -d"$1"s --latency -H "Host: $HOST" "$(both_url $first)" >"$T/runs/both-$first-$2.txt" &
  local load=$!
  wrk -t1 -c128 -d"$1"s --latency -H "Host: $HOST" "$(both_url $second)" >"$T/runs/both-$second-$2.txt"
  wait "$load"
}
both_url() { if [ "$1" = router ]; then echo "$ROUTER_URL"; else echo "$NGINX_LIKE"; fi; }
for r in $(seq "$RUNS"); do
  both 2 warm
  both 10 "$r"
  echo "side by side run $r: router $(grep -E 'Requests/sec' "$T/runs/both-router-$r.txt"), nginx $(grep -E 'Requests/sec' "$T/runs/both-nginx-$r.txt")" >&2
  : >"$T/nap.log"
  : >"$T/nginx-1-256-log-fwd/access.log"
  sleep "$PAUSE"
done

log "throughput: $RUNS runs of (c) with the access log off (NAP_LOG=info,nap::access=warn)"
stop_nap
start_nap NAP_LOG=info,nap::access=warn
for r in $(seq "$RUNS"); do measure routerquiet "$ROUTER_URL" "$NAP_PID"; done
# Last: with a pool of 64 for 256 connections nginx opens and closes an
# upstream connection for most requests, and the sockets it leaves in
# TIME_WAIT would take the ports the runs after it need to reach the app.
log "throughput: $RUNS runs of (b) nginx with keepalive 64, after the others"
for r in $(seq "$RUNS"); do
  for variant in 1:64 auto:64; do
    measure "nginx-${variant/:/-}" "http://127.0.0.1:${NGINX_PORT[$variant]}/" $(nginx_pids "$variant")
  done
done
LOAD_END=$(cut -d' ' -f1-3 /proc/loadavg)
# The deploys below open connections to the app too: TIME_WAIT lasts 60 s.
for _ in $(seq "$(smoke 10 70)"); do [ "$(ss -Htan state time-wait | wc -l)" -lt 1000 ] && break; sleep 1; done
for variant in "${!NGINX_PID[@]}"; do stop_pid "${NGINX_PID[$variant]}"; done

# Counts every answer that is not 2xx, by status, beside wrk's own error counts.
cat >"$T/count.lua" <<'LUA'
local threads = {}
function setup(thread) table.insert(threads, thread) end
function init(args) bad = 0; seen = "" end
function response(status, headers, body)
  if status < 200 or status >= 300 then
    bad = bad + 1
    if #seen < 200 then seen = seen .. status .. "," end
  end
end
function done(summary, latency, requests)
  local total, statuses = 0, ""
  for _, t in ipairs(threads) do total = total + t:get("bad"); statuses = statuses .. t:get("seen") end
  local e = summary.errors
  io.write(string.format("COUNT requests=%d non2xx=%d connect=%d read=%d write=%d timeout=%d seconds=%.1f statuses=%s\n",
    summary.requests, total, e.connect, e.read, e.write, e.timeout, summary.duration / 1e6, statuses == "" and "-" or statuses))
end
LUA

deploys() { # NAME URL: $DEPLOYS deploys under wrk -c50 through URL: runs/NAME.txt (wrk), runs/NAME.ms (each deploy's time)
  local name=$1 url=$2 i started
  wrk -t2 -c50 -d900s -s "$T/count.lua" -H "Host: $HOST" "$url" >"$T/runs/$name.txt" &
  local load=$!
  PIDS+=("$load")
  sleep 2
  for i in $(seq "$DEPLOYS"); do
    started=$(date +%s%N)
    if [ $((i % 2)) = 1 ]; then
      git -C "$T/app" commit -q --allow-empty -m "$name deploy $i"
      git -C "$T/app" push -q "ssh://nap@127.0.0.1:$SSH_PORT/$APP" master 2>"$T/deploy.log" ||
        { cat "$T/deploy.log" >&2; exit 1; }
    else
      $SSH -p "$SSH_PORT" nap@127.0.0.1 config set "$APP" "DEPLOY=$name-$i" >"$T/deploy.log" 2>&1 ||
        { cat "$T/deploy.log" >&2; exit 1; }
    fi
    echo $(( ($(date +%s%N) - started) / 1000000 )) >>"$T/runs/$name.ms"
  done
  sleep 2
  kill -INT "$load"
  wait "$load" || true
  grep COUNT "$T/runs/$name.txt" >&2 ||
    { echo "bench-router: wrk counted nothing through $url:" >&2; cat "$T/runs/$name.txt" >&2; exit 1; }
}

log "$DEPLOYS deploys under wrk -c50 through nap's router (default log level)"
stop_nap
start_nap
RELEASE_BEFORE=$(instance release)
deploys deploy-router "$ROUTER_URL"
: >"$T/nap.log"
RELEASE_ROUTER=$(instance release)
[ "$RELEASE_ROUTER" = $((RELEASE_BEFORE + DEPLOYS)) ] ||
  { echo "bench-router: release $RELEASE_ROUTER serves after $DEPLOYS deploys from $RELEASE_BEFORE" >&2; exit 1; }

log "$DEPLOYS deploys under wrk -c50 through examples/nginx (nap watch + nginx -s reload)"
mkdir -p "$T/ngx"
for sub in conf.d templates; do
  mkdir -p "$T/ngx/$sub"
  for file in "$ROOT/examples/nginx/$sub"/*; do
    sed "s#/etc/nap/nginx#$T/ngx#g" "$file" >"$T/ngx/$sub/$(basename "$file")"
  done
done
NGX_PORT=$(free_port)
export NAP_NGINX_DIR=$T/ngx NAP_NGINX_PORT=$NGX_PORT NAP_NGINX_DOMAIN=bench.test
"$NAP" --store "etcd://$ETCD" watch --confdir "$T/ngx/conf.d" --onetime 2>"$T/ngx/watch.log" ||
  { echo "bench-router: nap watch --onetime failed:" >&2; cat "$T/ngx/watch.log" >&2; exit 1; }
nginx -c "$T/ngx/nginx.conf" >/dev/null 2>"$T/ngx/nginx.log" ||
  { echo "bench-router: examples/nginx's nginx did not start:" >&2; cat "$T/ngx/nginx.log" >&2; exit 1; }
"$NAP" --store "etcd://$ETCD" watch --confdir "$T/ngx/conf.d" 2>"$T/ngx/watching.log" &
PIDS+=($!)
for _ in $(seq 100); do
  [ "$(curl -s -o /dev/null -w '%{http_code}' -H "Host: $HOST" "http://127.0.0.1:$NGX_PORT/")" = 200 ] && break
  sleep 0.1
done
deploys deploy-nginx "http://127.0.0.1:$NGX_PORT/"
[ "$(instance release)" = $((RELEASE_ROUTER + DEPLOYS)) ] ||
  { echo "bench-router: release $(instance release) serves after $DEPLOYS deploys from $RELEASE_ROUTER" >&2; exit 1; }
RELOADS=$(grep -c 'updated' "$T/ngx/watching.log" || true)   # each replaced nginx.conf, then nginx -s reload

export RUNS LOAD_START LOAD_END REV RELOADS IDLE_SERVE_KB IDLE_ALONE_KB ELAPSED=$(( $(date +%s) - STARTED ))
export DATE_UTC=$(date -u '+%Y-%m-%d %H:%M UTC')
export MACHINE="$(nproc) cores ($(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -n1)), $(. /etc/os-release; echo "$PRETTY_NAME"), Linux $(uname -r)"
export VERSIONS="$(wrk --version 2>&1 | head -n1 | cut -d' ' -f1-2), $(nginx -v 2>&1 | sed 's/^nginx version: //'), Docker $(docker version --format '{{.Server.Version}}')"
python3 - "$T/runs" >"$T/results.md" <<'PY'
import os, re, statistics, sys
runs, e = sys.argv[1], os.environ
n = int(e["RUNS"])
mib = lambda kb: int(kb) / 1024

def ms(text):
    value, unit = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text).groups()
    return float(value) * {"us": 0.001, "ms": 1, "s": 1000, "m": 60000}[unit]

def wrk(path):
    text = open(path).read()
    out = {"rps": float(re.search(r"Requests/sec:\s+([\d.]+)", text).group(1)),
           "requests": int(re.search(r"(\d+) requests in", text).group(1)),
           "p50": ms(re.search(r"^\s+50%\s+(\S+)", text, re.M).group(1)),
           "p99": ms(re.search(r"^\s+99%\s+(\S+)", text, re.M).group(1))}
    socket = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", text)
    non = re.search(r"Non-2xx or 3xx responses: (\d+)", text)
    out["errors"] = (sum(map(int, socket.groups())) if socket else 0) + (int(non.group(1)) if non else 0)
    return out

def target(name):
    out, rs = {}, []
    for r in range(1, n + 1):
        x = wrk(f"{runs}/{name}-{r}.txt")
        if os.path.exists(f"{runs}/{name}-{r}.cpu"):
            ticks, hz = map(int, open(f"{runs}/{name}-{r}.cpu").read().split())
            x["cpu_us"] = ticks / hz / x["requests"] * 1e6
            x["rss"] = mib(open(f"{runs}/{name}-{r}.rss").read().split()[0])
            x["hwm"] = mib(open(f"{runs}/{name}-{r}.hwm").read())
        rs.append(x)
    for k in ("rps", "p50", "p99", "cpu_us", "rss"):
        if k in rs[0]:
            out[k] = statistics.median(x[k] for x in rs)
    out["errors"] = sum(x["errors"] for x in rs)
    out["runs"] = [x["rps"] for x in rs]
    if "rss" in rs[0]:
        out["rss_max"], out["hwm"] = max(x["rss"] for x in rs), max(x["hwm"] for x in rs)
    return out

labels = {
    "direct": "(a) direct to the container",
    "nginx-1-64": "(b) nginx, worker_processes 1, keepalive 64 (the issue's pool)",
    "nginx-auto-64": "(b) nginx, worker_processes auto (2), keepalive 64",
    "nginx-1-256": "(b) nginx, worker_processes 1, keepalive 256 (a pool as large as the load)",
    "nginx-auto-256": "(b) nginx, worker_processes auto (2), keepalive 256",
    "nginx-1-256-log": "(b) nginx, worker_processes 1, keepalive 256, access log on (`buffer=64k flush=1s`)",
    "nginx-1-256--fwd": "(b) nginx, worker_processes 1, keepalive 256, setting the router's forwarding headers",
    "nginx-1-256-log-fwd": "(b) nginx, worker_processes 1, keepalive 256, access log on, setting the router's forwarding headers (**like for like**)",
    "router": "(c) nap serve's router, default log level: an access line per request (**headline**)",
    "routerquiet": "(c) nap serve's router, access log off (`NAP_LOG=info,nap::access=warn`)",
    "alone": "(c) `nap router` alone, default log level",
}
t = {name: target(name) for name in labels}
verdict = lambda ok: "pass" if ok else "**FAIL**"
print(f"Measured with `scripts/bench-router.sh` on the release build of {e['REV']}, {e['DATE_UTC']}, runtime {e['ELAPSED']} s; "
      f"{e['MACHINE']}; {e['VERSIONS']}. Load average {e['LOAD_START']} before the throughput runs, {e['LOAD_END']} after.\n")
print(f"Throughput: `wrk -t2 -c256 -d10s --latency` after a 2 s warm-up, medians of {n} runs; the targets interleaved "
      "run by run (odd runs in one order, even runs in the reverse one), except the router without access log, measured after them (nap serve restarted), and nginx with "
      "keepalive 64, measured last (the connections it closes leave sockets in TIME_WAIT that would starve the runs after it of ports). "
      "The proxy's CPU is its user + system time over the run per request; its RSS is the summed VmRSS of its "
      "processes (nginx: master and workers; nap: the one process, which for `nap serve` holds the SSH gateway too) "
      "sampled every 50 ms: the median of the runs' peaks, then the highest peak. nap serve's RSS before the runs: "
      f"{mib(e['IDLE_SERVE_KB']):.1f} MiB; `nap router`'s: {mib(e['IDLE_ALONE_KB']):.1f} MiB.\n")
print("| target | requests/s | p50 | p99 | errors | proxy CPU per request | proxy RSS under 256 connections |")
print("|---|---|---|---|---|---|---|")
for name, label in labels.items():
    x = t[name]
    cpu = f"{x['cpu_us']:.1f} µs" if "cpu_us" in x else "–"
    rss = f"{x['rss']:.1f} MiB (highest {x['rss_max']:.1f})" if "rss" in x else "–"
    print(f"| {label} | {x['rps']:,.0f} | {x['p50']:.2f} ms | {x['p99']:.2f} ms | {x['errors']} | {cpu} | {rss} |")
print()
r, q, a, d = t["router"], t["routerquiet"], t["alone"], t["direct"]
b, b256, blog = t["nginx-1-64"], t["nginx-1-256"], t["nginx-1-256-log"]
fwd, fwdlog = t["nginx-1-256--fwd"], t["nginx-1-256-log-fwd"]
print("| target | nap serve's router against nginx (worker_processes 1) | result |")
print("|---|---|---|")
# Like for like: both doing the same work per request (the forwarding
# headers the issue asks of the router, and a log line each, or no log),
# judged; then nginx doing less than the router, reported.
pairs = (("both log each request and set the forwarding headers, keepalive 256", r, fwdlog, True),
         ("neither logs, both set the forwarding headers, keepalive 256", q, fwd, True),
         ("both log, nginx sets no forwarding header, keepalive 256", r, blog, False),
         ("neither logs, nginx sets no forwarding header, keepalive 256", q, b256, False),
         ("router logs, nginx neither logs nor sets a header, keepalive 256", r, b256, False),
         ("keepalive 64, the issue's, router logs", r, b, False))
for what, router, nginx, judged in pairs:
    # Runs of the router and nginx in one run of the loop are minutes apart at most (the
    # quiet router's are not: it runs after a restart, so its run by run is not given).
    paired = ", ".join(f"{x / y:.2f}" for x, y in zip(router["runs"], nginx["runs"])) if router is not q else ""
    by_run = f"; run by run {paired}" if paired else ""
    print(f"| router requests/s ≥ nginx's ({what}) | {router['rps'] / nginx['rps']:.2f} × nginx ({router['rps']:,.0f} against {nginx['rps']:,.0f}{by_run}) "
          f"| {verdict(router['rps'] >= nginx['rps']) if judged else 'reported'} |")
for what, router, nginx, judged in pairs:
    print(f"| router p99 ≤ nginx p99 + 1 ms ({what}) | {router['p99'] - nginx['p99']:+.2f} ms ({router['p99']:.2f} against {nginx['p99']:.2f}) "
          f"| {verdict(router['p99'] <= nginx['p99'] + 1) if judged else 'reported'} |")
both_router = [wrk(f"{runs}/both-router-{r}.txt")["rps"] for r in range(1, n + 1)]
both_nginx = [wrk(f"{runs}/both-nginx-{r}.txt")["rps"] for r in range(1, n + 1)]
br, bn = statistics.median(both_router), statistics.median(both_nginx)
print(f"| router requests/s ≥ nginx's, side by side (both loads at once, 128 connections each; both log and set the forwarding headers) "
      f"| {br / bn:.2f} × nginx ({br:,.0f} against {bn:,.0f}; run by run {', '.join(f'{x / y:.2f}' for x, y in zip(both_router, both_nginx))}) | reported |")
print(f"| router RSS ≤ 32 MiB at 256 open connections (highest peak) | nap serve {r['rss_max']:.1f} MiB "
      f"({r['rss_max'] / 32:.0%} of 32 MiB); access log off {q['rss_max']:.1f} MiB; `nap router` alone {a['rss_max']:.1f} MiB "
      f"| {verdict(r['rss_max'] <= 32)} |")
print(f"\nFor scale: direct to the container, {d['rps']:,.0f} requests/s; the router reaches {r['rps'] / d['rps']:.0%} of that, "
      f"nginx {b['rps'] / d['rps']:.0%} (keepalive 64) and {b256['rps'] / d['rps']:.0%} (keepalive 256).\n")

def deploy(name):
    text = open(f"{runs}/{name}.txt").read()
    c = dict(re.findall(r"(\w+)=(\S+)", re.search(r"^COUNT .*$", text, re.M).group(0)))
    times = [int(x) for x in open(f"{runs}/{name}.ms").read().split()]
    failed = sum(int(c[k]) for k in ("non2xx", "connect", "read", "write", "timeout"))
    return c, times, failed

print("Deploys: 20 deploys of the app, one after the other, pushes of an empty commit (the image is reused) alternating "
      "with `config set APP DEPLOY=…` (a new release of the same image), while `wrk -t2 -c50` runs through the proxy "
      "from 2 s before the first to 2 s after the last; a wrk Lua `response` hook counts every status outside 2xx. "
      "nap serve runs at its default log level. examples/nginx runs as its README says: `nap watch` (debounce 100 ms) "
      "renders nginx.conf on each change of the store, `nginx -t` checks it, `nginx -s reload` "
      f"({e['RELOADS']} configs rendered and reloaded).\n")
print("| 20 deploys under 50 connections | requests | failed: non-2xx | failed: socket errors (connect/read/write/timeout) | requests/s | deploy time, median (max) | target | result |")
print("|---|---|---|---|---|---|---|---|")
for name, label, judged in (("deploy-router", "through nap's router", True),
                            ("deploy-nginx", "through examples/nginx (nginx + template hooks, as Dokku does)", False)):
    c, times, failed = deploy(name)
    rps = int(c["requests"]) / float(c["seconds"])
    codes = sorted(set(c["statuses"].strip(",").split(","))) if c["statuses"] != "-" else []
    statuses = f" (status {', '.join(codes)})" if codes else ""
    print(f"| {label} | {int(c['requests']):,} | {c['non2xx']}{statuses} | {c['connect']}/{c['read']}/{c['write']}/{c['timeout']} "
          f"| {rps:,.0f} | {statistics.median(times):.0f} ms ({max(times)} ms) | {'0 failed' if judged else 'none'} "
          f"| {verdict(failed == 0) if judged else 'reported'} |")
PY
log "results"
[ -z "$SMOKE" ] || echo "Smoke run: ${DURATION}-second runs of a debug build; the figures and verdicts mean nothing."
cat "$T/results.md"
[ -z "$WRITE" ] || write_results "$WRITE" bench-router "The HTTP router" "$T/results.md"
