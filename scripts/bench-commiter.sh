#!/usr/bin/env bash
# Benchmarks the etcd store and the commiter flow (issue "etcd state, the
# commiter flow and the Kubernetes runner"):
#   A. `nap commit` of 10 running containers, against a shell loop of
#      `docker commit` over the same containers (state 2: commit without
#      pushing, so both sides do the same work), for containers that wrote
#      little (a config file, 64 KiB) and for containers that wrote 8 MiB;
#   B. latency of `ssh host apps` with 100 apps on the etcd store, beside the
#      OpenSSH round trip of `ssh host true` as the floor.
#
#   scripts/bench-commiter.sh [--runs N] [--write docs/benchmarks.md]
#   scripts/bench-commiter.sh --smoke    # every step once, briefly, on the debug build; nothing judged
#
# --write replaces the section between the bench-commiter:begin/end markers.
# Runs on 127.0.0.1 with a private etcd in a temporary directory removed on
# exit; needs root. Calls scripts/services.sh (dockerd, nap/busybox).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
. "$ROOT/scripts/bench-lib.sh"
parse_args 5 "$@"

setup_bench commiter
APP=bench$TAG
LIGHT=light$TAG
cleanup() {
  for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
  docker ps -aq --filter "name=${APP}rc-web-" --filter "name=${LIGHT}rc-web-" | xargs -r docker rm -f >/dev/null 2>&1 || true
  docker images -q --filter "reference=127.0.0.1:5000/$APP-*" --filter "reference=127.0.0.1:5000/$LIGHT-*" \
    | sort -u | xargs -r docker rmi -f >/dev/null 2>&1 || true
  docker images -q --filter "reference=nap-bench-commit-$TAG/*" | sort -u | xargs -r docker rmi -f >/dev/null 2>&1 || true
  rm -rf "$T"
}
trap cleanup EXIT

log "a private etcd"
start_etcd

HOST_IP=10.251.0.1
cat >"$T/nap.toml" <<TOML
data_dir = "$T/data"
public_host = "127.0.0.1"
runner = "docker"
store = "etcd://$ETCD"
host_ip = "$HOST_IP"
TOML
NAPC=("$NAP" --config "$T/nap.toml")

log "A: 10 running containers per app: $LIGHT wrote 64 KiB each, $APP 8 MiB each"
for i in $(seq 0 9); do
  docker run -d --name "${LIGHT}rc-web-$i" nap/busybox sh -c \
    'dd if=/dev/urandom of=/data.bin bs=64k count=1 2>/dev/null; exec sleep 3600' >/dev/null
  docker run -d --name "${APP}rc-web-$i" nap/busybox sh -c \
    'dd if=/dev/urandom of=/data.bin bs=1M count=8 2>/dev/null; exec sleep 3600' >/dev/null
done
sleep 2
for app in "$LIGHT" "$APP"; do
  printf 'App: %s\nComponent: web\nRepository: 127.0.0.1:5000\nIps:\n  - Ip: %s\n' "$app" "$HOST_IP" \
    | "${NAPC[@]}" import --commit 2 >&2
  cat >"$T/loop-$app.sh" <<SH
#!/usr/bin/env bash
set -euo pipefail
tag=\$(date +%s%N)
for i in \$(seq 0 9); do docker commit "${app}rc-web-\$i" "nap-bench-commit-$TAG/$app-c\$i:\$tag" >/dev/null; done
SH
  cat >"$T/parallel-$app.sh" <<SH
#!/usr/bin/env bash
set -euo pipefail
tag=\$(date +%s%N)
for i in \$(seq 0 9); do docker commit "${app}rc-web-\$i" "nap-bench-commit-$TAG/$app-p\$i:\$tag" >/dev/null & done
wait
SH
  chmod +x "$T/loop-$app.sh" "$T/parallel-$app.sh"
done
for app in "$LIGHT" "$APP"; do
  hyperfine -N --warmup 1 --runs "$RUNS" --export-json "$T/a-$app.json" \
    -n "nap commit (10 containers)" "${NAPC[*]} commit $app" \
    -n "docker commit loop (baseline)" "$T/loop-$app.sh" \
    -n "docker commit & in parallel" "$T/parallel-$app.sh" >&2
done

log "B: ssh host apps with 100 apps on etcd, and ssh host true"
ssh-keygen -q -t ed25519 -N '' -f "$T/id"
SSH="ssh -i $T/id -o IdentitiesOnly=yes -o BatchMode=yes -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null -o LogLevel=ERROR"
"${NAPC[@]}" keys add bench --admin <"$T/id.pub" >/dev/null
NAP_PORT=$(free_port)
"${NAPC[@]}" serve --listen "127.0.0.1:$NAP_PORT" >/dev/null 2>"$T/serve.log" &
PIDS+=($!)
wait_port "$NAP_PORT"
for i in $(seq -w 0 99); do "${NAPC[@]}" apps create "bench-app-$TAG-$i" >/dev/null; done
start_sshd "$T/id.pub"
apps=$($SSH -p "$NAP_PORT" nap@127.0.0.1 apps --json | python3 -c 'import json,sys; print(len(json.load(sys.stdin)))')
[ "$apps" = 100 ] || { echo "bench-commiter: expected 100 apps, got $apps" >&2; exit 1; }
hyperfine -N --warmup 3 --runs $((RUNS * 6)) --export-json "$T/b.json" \
  -n "ssh host apps (nap, 100 apps, etcd)" "$SSH -p $NAP_PORT nap@127.0.0.1 apps" \
  -n "ssh host true (OpenSSH floor)" "$SSH -p $SSHD_PORT root@127.0.0.1 true" >&2

python3 - "$T/a-$LIGHT.json" "$T/a-$APP.json" "$T/b.json" "$REV" "$(( $(date +%s) - STARTED ))" "$(nproc)" \
  "$(etcd --version | head -1)" "$(docker version -f '{{.Server.Version}}')" >"$T/results.md" <<'PY'
import json, sys
light = {r["command"]: r for r in json.load(open(sys.argv[1]))["results"]}
heavy = {r["command"]: r for r in json.load(open(sys.argv[2]))["results"]}
b = {r["command"]: r for r in json.load(open(sys.argv[3]))["results"]}
ms = lambda s: s * 1000
print(f"Measured with `scripts/bench-commiter.sh` on the release build of {sys.argv[4]}, runtime {sys.argv[5]} s, "
      f"{sys.argv[6]} cores, {sys.argv[7]}, dockerd {sys.argv[8]}; a private etcd on loopback. "
      "Commits are state 2 (commit without pushing) on both sides.\n")
print("| figure | nap mean ± sd (median) | baseline mean ± sd (median) | ratio | target | result |")
print("|---|---|---|---|---|---|")
for label, a in [("64 KiB", light), ("8 MiB", heavy)]:
    nap, loop, par = a["nap commit (10 containers)"], a["docker commit loop (baseline)"], a["docker commit & in parallel"]
    ratio = nap["mean"] / loop["mean"]
    print(f"| A. commit 10 running containers that wrote {label} each | {ms(nap['mean']):.0f} ± {ms(nap['stddev']):.0f} ms ({ms(nap['median']):.0f}) "
          f"| {ms(loop['mean']):.0f} ± {ms(loop['stddev']):.0f} ms ({ms(loop['median']):.0f}), a shell loop of `docker commit` | {ratio:.3f} | ≤ 0.5 | {'pass' if ratio <= 0.5 else 'FAIL'} |")
    print(f"| A'. ({label}) the same 10 `docker commit`s started at once from a shell (the daemon pauses each) | {ms(par['mean']):.0f} ± {ms(par['stddev']):.0f} ms ({ms(par['median']):.0f}) "
          f"| the loop above | {par['mean']/loop['mean']:.3f} | none | reported |")
apps, floor = b["ssh host apps (nap, 100 apps, etcd)"], b["ssh host true (OpenSSH floor)"]
print(f"| B. `ssh host apps`, 100 apps on etcd | {ms(apps['mean']):.0f} ± {ms(apps['stddev']):.0f} ms ({ms(apps['median']):.0f}) "
      f"| {ms(floor['mean']):.0f} ± {ms(floor['stddev']):.0f} ms ({ms(floor['median']):.0f}), `ssh host true` (OpenSSH) "
      f"| {ms(apps['median']-floor['median']):+.0f} ms over the floor | median < 200 ms | {'pass' if ms(apps['median']) < 200 else 'FAIL'} |")
PY
cat "$T/results.md"
[ -z "$WRITE" ] || write_results "$WRITE" bench-commiter "etcd and the commiter flow" "$T/results.md"
