#!/usr/bin/env bash
# Benchmarks operating apps over SSH (issue "Operate apps over SSH"):
#   A. time from `config set` to the new release answering, under the docker
#      and the systemd runner, against `docker run` of the same image alone;
#   B. latency of `ssh host apps` with 100 apps, beside the OpenSSH round trip
#      of `ssh host true` as the floor.
#
#   scripts/bench-operate.sh [--runs N] [--write docs/benchmarks.md]
#   scripts/bench-operate.sh --smoke    # every step once, briefly, on the debug build; nothing judged
#
# --write replaces the section between the bench-operate:begin/end markers.
# Runs everything on 127.0.0.1 in a temporary directory removed on exit; needs
# root. Calls scripts/services.sh (dockerd, nap/busybox, nap/systemd images).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
. "$ROOT/scripts/bench-lib.sh"
parse_args 10 "$@"

setup_bench operate
SYSTEMD=nap-bench-systemd-$TAG
# One app per gateway: each gateway has a store of its own, and so gives
# its app's network a subnet of its own on the one dockerd.
APP=bench-op-$TAG
APP_SD=bench-op-sd-$TAG
cleanup() {
  for pid in "${PIDS[@]}" $(cat "$T/pids" 2>/dev/null); do kill "$pid" 2>/dev/null || true; done
  docker rm -f "$SYSTEMD" >/dev/null 2>&1 || true
  for app in "$APP" "$APP_SD"; do docker ps -aq --filter "label=nap.app=$app" | xargs -r docker rm -f >/dev/null 2>&1 || true; done
  docker ps -aq --filter "label=nap-bench-operate=$TAG" | xargs -r docker rm -f >/dev/null 2>&1 || true
  remove_app_networks "$TAG"
  rm -rf "$T"
}
trap cleanup EXIT

ssh-keygen -q -t ed25519 -N '' -f "$T/id"
SSH="ssh -i $T/id -o IdentitiesOnly=yes -o BatchMode=yes -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null -o LogLevel=ERROR"

# gateway NAME EXTRA-TOML: starts a nap serve, prints its port.
gateway() {
  local name=$1 extra=$2 port
  port=$(free_port)
  mkdir -p "$T/$name"
  printf 'data_dir = "%s"\npublic_host = "127.0.0.1"\n%s\n' "$T/$name/data" "$extra" >"$T/$name/nap.toml"
  "$NAP" --config "$T/$name/nap.toml" keys add bench --admin <"$T/id.pub" >/dev/null
  # Not on our stdout: the caller's $(...) would wait for it to close.
  "$NAP" --config "$T/$name/nap.toml" serve --listen "127.0.0.1:$port" >/dev/null 2>"$T/$name/serve.log" &
  echo $! >>"$T/pids"
  for _ in $(seq 50); do (echo >/dev/tcp/127.0.0.1/$port) 2>/dev/null && break; sleep 0.1; done
  echo "$port"
}

"$ROOT/tests/fixtures/app.sh" "$T/app" web
deploy() { # PORT APP
  (cd "$T/app" && GIT_SSH_COMMAND="$SSH" git push -q "ssh://nap@127.0.0.1:$1/$2" master 2>"$T/push.log") ||
    { cat "$T/push.log" >&2; exit 1; }
}

log "docker runner gateway"
DOCKER_PORT=$(gateway docker 'runner = "docker"')
deploy "$DOCKER_PORT" "$APP"

log "systemd runner gateway (systemd in a container)"
mkdir -p "$T/sd/units" "$T/sd/bus" "$T/sd/env"
docker run --rm nap/systemd:bookworm tar -C /etc/systemd/system -c . | tar -C "$T/sd/units" -x
docker run -d --name "$SYSTEMD" --cap-add SYS_ADMIN --security-opt seccomp=unconfined \
  -v /sys/fs/cgroup:/sys/fs/cgroup:rw -v "$T/sd/bus:/run/dbus" -v "$T/sd/units:/etc/systemd/system" \
  -v "$T/sd/env:$T/sd/env" -v /var/run/docker.sock:/var/run/docker.sock \
  -v /usr/local/bin/docker:/usr/local/bin/docker:ro --tmpfs /run --tmpfs /run/lock \
  nap/systemd:bookworm /lib/systemd/systemd >/dev/null
for _ in $(seq 100); do
  state=$(docker exec "$SYSTEMD" systemctl is-system-running 2>/dev/null || true)
  [ -S "$T/sd/bus/system_bus_socket" ] && { [ "$state" = running ] || [ "$state" = degraded ]; } && break
  sleep 0.2
done
SYSTEMD_PORT=$(gateway systemd "$(printf 'runner = "systemd"\nsystem_bus = "unix:path=%s"\nunit_dir = "%s"\nenv_dir = "%s"\ndocker_cli = "/usr/local/bin/docker"\n' \
  "$T/sd/bus/system_bus_socket" "$T/sd/units" "$T/sd/env")")
deploy "$SYSTEMD_PORT" "$APP_SD"

log "A: config set -> new release answering"
# The baseline does by hand what a config change is: run the same image with
# the new environment, wait until it answers, remove the previous container.
IMAGE=nap/$APP:v1
cat >"$T/baseline.sh" <<SH
#!/usr/bin/env bash
set -euo pipefail
port=\$(python3 -c 'import socket; s=socket.socket(); s.bind(("0.0.0.0",0)); print(s.getsockname()[1])')
id=\$(docker run -d --label nap-bench-operate=$TAG -p \$port:5000 -e PORT=5000 -e GREETING=\$RANDOM $IMAGE)
until curl -fs -o /dev/null http://127.0.0.1:\$port/; do sleep 0.02; done
for old in \$(cat $T/baseline.prev 2>/dev/null); do docker rm -f \$old >/dev/null; done
echo \$id >$T/baseline.prev
SH
chmod +x "$T/baseline.sh"
hyperfine -N --warmup 1 --runs "$RUNS" --export-json "$T/a.json" \
  -n "config set (docker runner)" "$SSH -p $DOCKER_PORT nap@127.0.0.1 config set $APP GREETING=\$RANDOM" \
  -n "config set (systemd runner)" "$SSH -p $SYSTEMD_PORT nap@127.0.0.1 config set $APP_SD GREETING=\$RANDOM" \
  -n "docker run + wait + rm (baseline)" "$T/baseline.sh" >&2 2>&1 || true
# hyperfine -N does not expand $RANDOM; nap refuses nothing for an unchanged
# value: each run is still a new release. Re-run through a shell if it failed.
if [ ! -s "$T/a.json" ]; then
  hyperfine --warmup 1 --runs "$RUNS" --export-json "$T/a.json" \
    -n "config set (docker runner)" "$SSH -p $DOCKER_PORT nap@127.0.0.1 config set $APP GREETING=\$RANDOM" \
    -n "config set (systemd runner)" "$SSH -p $SYSTEMD_PORT nap@127.0.0.1 config set $APP_SD GREETING=\$RANDOM" \
    -n "docker run + wait + rm (baseline)" "$T/baseline.sh" >&2
fi

log "B: ssh host apps with 100 apps, and ssh host true"
for i in $(seq -w 0 99); do $SSH -p "$DOCKER_PORT" nap@127.0.0.1 apps create "bench-app-$TAG-$i" >/dev/null; done
start_sshd "$T/id.pub"
hyperfine -N --warmup 2 --runs $((RUNS * 3)) --export-json "$T/b.json" \
  -n "ssh host apps (nap, 100 apps)" "$SSH -p $DOCKER_PORT nap@127.0.0.1 apps" \
  -n "ssh host true (OpenSSH floor)" "$SSH -p $SSHD_PORT root@127.0.0.1 true" >&2

python3 - "$T/a.json" "$T/b.json" "$REV" "$(( $(date +%s) - STARTED ))" >"$T/results.md" <<'PY'
import json, sys
a = {r["command"]: r for r in json.load(open(sys.argv[1]))["results"]}
b = {r["command"]: r for r in json.load(open(sys.argv[2]))["results"]}
ms = lambda s: s * 1000
base = a["docker run + wait + rm (baseline)"]
print(f"Measured with `scripts/bench-operate.sh` on the release build of {sys.argv[3]}, runtime {sys.argv[4]} s, "
      f"{len(base['times'])} runs each for A.\n")
print("| figure | mean ± sd | median | baseline | ratio | target | result |")
print("|---|---|---|---|---|---|---|")
for name in ["config set (docker runner)", "config set (systemd runner)"]:
    r = a[name]
    print(f"| A. {name} → new release answers | {ms(r['mean']):.0f} ± {ms(r['stddev']):.0f} ms | {ms(r['median']):.0f} ms "
          f"| {ms(base['mean']):.0f} ± {ms(base['stddev']):.0f} ms (`docker run` + wait + `docker rm -f`) "
          f"| {r['mean']/base['mean']:.2f} | none set | reported |")
apps, floor = b["ssh host apps (nap, 100 apps)"], b["ssh host true (OpenSSH floor)"]
verdict = "pass" if ms(apps["median"]) < 150 else "FAIL"
print(f"| B. `ssh host apps`, 100 apps | {ms(apps['mean']):.0f} ± {ms(apps['stddev']):.0f} ms | {ms(apps['median']):.0f} ms "
      f"| {ms(floor['median']):.0f} ms median (`ssh host true`, OpenSSH) | {ms(apps['median']-floor['median']):+.0f} ms against the floor "
      f"| median < 150 ms | {verdict} |")
PY
cat "$T/results.md"
[ -z "$WRITE" ] || write_results "$WRITE" bench-operate "Operating over SSH" "$T/results.md"
