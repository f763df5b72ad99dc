#!/usr/bin/env bash
# Benchmarks nap's SSH gateway (`nap serve`) against plain OpenSSH + git-shell,
# and nap's deploy against a hand-run `docker build` + `docker run`.
#
#   scripts/bench.sh                             # run, print a markdown results table
#   scripts/bench.sh --write docs/benchmarks.md  # also put the results into that file
#                                                # (between its bench:begin/bench:end markers)
#   scripts/bench.sh --runs 10                   # timed runs per command (default 10)
#   scripts/bench.sh --smoke                     # every step once, with small repos, on the debug
#                                                # build: shows the script runs; nothing judged
#   NAP_BIN=/path/to/nap [NAP_BIN_DESC=...] scripts/bench.sh  # benchmark that binary instead of building
#                                                # this checkout with `cargo build --release -p nap`
#
# Everything runs on 127.0.0.1 under a temporary directory that is removed on
# exit, with a private `nap serve` and a private sshd on free loopback ports.
# Needs root (sshd, docker). Calls scripts/services.sh first for dockerd and
# the nap/busybox base image. Takes about 4-6 minutes on 2 cores.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
. "$ROOT/scripts/bench-lib.sh"
parse_args 10 "$@"
[ "$(id -u)" = 0 ] || { echo "bench: run as root (own sshd, docker)" >&2; exit 1; }
# The repos pushed: 50 MiB (first pushes) and 200 MiB (memory), or 10 and 20 MiB under --smoke.
SMALL_MIB=$(smoke 10 50)
LARGE_MIB=$(smoke 20 200)

# ---------------------------------------------------------------- setup ----
log "services"
"$ROOT/scripts/services.sh" --for-tests >&2
for tool in hyperfine git ssh ssh-keygen /usr/sbin/sshd git-shell docker curl python3; do
  command -v "$tool" >/dev/null || { echo "bench: $tool is missing" >&2; exit 1; }
done

if [ -n "${NAP_BIN:-}" ]; then
  NAP=$(realpath "$NAP_BIN")
  NAP_BUILT=${NAP_BIN_DESC:-binary $NAP}   # e.g. NAP_BIN_DESC="release build of fd7bb0c"
else
  log "building nap"
  build_nap || { echo "bench: the build failed; fix it or point NAP_BIN at a nap binary" >&2; exit 1; }
  NAP=$BIN/nap
  NAP_BUILT="$(smoke debug release) build of $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo '?')$((cd "$ROOT" && git diff --quiet HEAD -- Cargo.toml Cargo.lock gateway builder runner state hooks 2>/dev/null) || echo ' with uncommitted changes')"
fi

[ -x "$NAP" ] || { echo "bench: $NAP is not executable" >&2; exit 1; }
TAG=$(od -An -N3 -tx1 /dev/urandom | tr -d ' \n')   # names this run's apps, images and containers
APP_BIG=bench-big-$TAG       # 50 MB first pushes (repo deleted before each run)
APP_MEM=bench-mem-$TAG       # 200 MB push for the memory figures
APP_NOOP=bench-noop-$TAG     # no-op pushes
APP_WEB=bench-web-$TAG       # deploys
BASE_LABEL=nap-bench-baseline-$TAG
BASE_IMAGE=nap-bench-baseline-$TAG:latest
NAP_PID=""
SSHD_PID=""
SAMPLER_PID=""

stop_pid() { # pid: SIGTERM, wait up to 10 s, then SIGKILL
  local pid=$1
  [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null || return 0
  kill -TERM "$pid" 2>/dev/null || true
  for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || return 0; sleep 0.1; done
  kill -KILL "$pid" 2>/dev/null || true
}

cleanup() {
  local status=$?
  set +e
  stop_pid "$SAMPLER_PID"
  stop_pid "$NAP_PID"
  stop_pid "$SSHD_PID"
  local ids
  ids=$( {
    docker ps -aq --filter "label=nap.app=$APP_WEB"
    docker ps -aq --filter "label=$BASE_LABEL"
    docker ps -aq --filter "name=nap-bench-.*-$TAG"
  } 2>/dev/null | sort -u)
  [ -n "$ids" ] && docker rm -f $ids >/dev/null 2>&1
  remove_app_networks "$TAG"
  ids=$( {
    docker images -q --filter "label=nap.app=$APP_WEB"
    docker images -q "nap/$APP_WEB"
    docker images -q "nap-bench-baseline-$TAG"
  } 2>/dev/null | sort -u)
  [ -n "$ids" ] && docker rmi -f $ids >/dev/null 2>&1
  if [ $status -ne 0 ] && [ -f "$TMP/nap.log" ]; then
    echo "bench: failed; last lines of nap serve's log:" >&2
    tail -n 20 "$TMP/nap.log" >&2
  fi
  rm -rf "$TMP"
  exit $status
}
TMP=$(mktemp -d /tmp/nap-bench.XXXXXX)
trap cleanup EXIT
trap 'exit 130' INT TERM
# A private copy: a rebuild of the checkout during the run cannot swap the
# binary under the running server or the pre-receive hooks that call it.
cp "$NAP" "$TMP/nap"
NAP=$TMP/nap

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}
wait_port() { # port: until something listens (at most 15 s)
  for _ in $(seq 1 150); do
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
    sleep 0.1
  done
  echo "bench: nothing listens on 127.0.0.1:$1" >&2; return 1
}

export GIT_AUTHOR_NAME=bench GIT_AUTHOR_EMAIL=bench@localhost
export GIT_COMMITTER_NAME=bench GIT_COMMITTER_EMAIL=bench@localhost
ssh-keygen -q -t ed25519 -N '' -C bench -f "$TMP/id"
SSH_OPTS="-i $TMP/id -o IdentitiesOnly=yes -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null -o LogLevel=ERROR"
export GIT_SSH_COMMAND="ssh $SSH_OPTS"

# Repos with incompressible content, committed once, packed so each push
# streams the existing pack instead of re-deflating loose objects.
make_repo() { # dir MiB
  local dir=$1 mib=$2 i
  git init -q -b main "$dir"
  for i in $(seq 1 $((mib / 10))); do head -c 10M /dev/urandom >"$dir/blob$i.bin"; done
  git -C "$dir" add -A
  git -C "$dir" commit -q -m "random $mib MiB"
  git -C "$dir" repack -adq
}
log "making $SMALL_MIB MiB and $LARGE_MIB MiB repos of random content"
make_repo "$TMP/repo50" "$SMALL_MIB"
make_repo "$TMP/repo200" "$LARGE_MIB"

# The deploy example app.
mkdir -p "$TMP/web" "$TMP/webctx"
cat >"$TMP/webctx/Dockerfile" <<'EOF'
FROM nap/busybox
COPY index.html /www/index.html
CMD ["sh","-c","exec httpd -f -p $PORT -h /www"]
EOF
echo '<h1>nap bench</h1>' >"$TMP/webctx/index.html"
cp "$TMP/webctx/Dockerfile" "$TMP/webctx/index.html" "$TMP/web/"
git init -q -b master "$TMP/web"
git -C "$TMP/web" add -A
git -C "$TMP/web" commit -q -m web

# ------------------------------------------------------------ nap serve ----
export NAP_DATA_DIR=$TMP/data
NAP_PORT=$(free_port)
"$NAP" keys add --admin bench <"$TMP/id.pub" >/dev/null   # admin: may create any app
log "starting nap serve on 127.0.0.1:$NAP_PORT (no --registry)"
"$NAP" serve --listen "127.0.0.1:$NAP_PORT" --http-listen off --public-host 127.0.0.1 2>"$TMP/nap.log" &
NAP_PID=$!
wait_port "$NAP_PORT"
NAP_URL=ssh://nap@127.0.0.1:$NAP_PORT

# ----------------------------------------------------------------- sshd ----
SSHD_PORT=$(free_port)
mkdir -p "$TMP/sshd" "$TMP/bare" /run/sshd
ssh-keygen -q -t ed25519 -N '' -f "$TMP/sshd/host_ed25519"
printf 'command="git-shell -c \\"$SSH_ORIGINAL_COMMAND\\"",restrict %s\n' "$(cat "$TMP/id.pub")" \
  >"$TMP/sshd/authorized_keys"
cat >"$TMP/sshd/sshd_config" <<EOF
Port $SSHD_PORT
ListenAddress 127.0.0.1
HostKey $TMP/sshd/host_ed25519
AuthorizedKeysFile $TMP/sshd/authorized_keys
PidFile $TMP/sshd/sshd.pid
StrictModes no
UsePAM no
PermitRootLogin forced-commands-only
PasswordAuthentication no
KbdInteractiveAuthentication no
# sshd runs the forced command with the account's shell; bash sources ~/.bashrc
# when started by sshd at shell level 1, and root's may be slow (pyenv init takes
# ~330 ms here). A real git-shell account runs no rc file: skip it.
SetEnv SHLVL=1
EOF
log "starting OpenSSH sshd on 127.0.0.1:$SSHD_PORT (git-shell forced command)"
/usr/sbin/sshd -D -f "$TMP/sshd/sshd_config" -E "$TMP/sshd/sshd.log" &
SSHD_PID=$!
wait_port "$SSHD_PORT"
SSHD_URL=ssh://root@127.0.0.1:$SSHD_PORT$TMP/bare
# OpenSSH's default key exchange, sntrup761x25519, costs the client ~100 ms of
# CPU per connection; nap (russh) negotiates curve25519-sha256. The baseline is
# also timed with that key exchange forced, to compare the transports alone.
SAME_KEX="env GIT_SSH_COMMAND='ssh $SSH_OPTS -o KexAlgorithms=curve25519-sha256'"

# What each side negotiated, with the ssh client's defaults.
negotiated() { # port user command
  ssh -v $SSH_OPTS -p "$1" "$2@127.0.0.1" "$3" 2>&1 </dev/null | tr -d '\r' |
    sed -n 's/.*debug1: kex: algorithm: \(.*\)/kex=\1/p; s/.*debug1: kex: client->server cipher: \([^ ]*\) MAC: \([^ ]*\) compression: \([^ ]*\).*/cipher=\1 mac=\2 compression=\3/p' |
    paste -sd' ' || true
}
NEG_NAP=$(negotiated "$NAP_PORT" nap version)
NEG_SSHD=$(negotiated "$SSHD_PORT" root "git-receive-pack '$TMP/none.git'")
LOAD_START=$(cut -d' ' -f1-3 /proc/loadavg)
echo "nap serve negotiated: $NEG_NAP" >&2
echo "OpenSSH   negotiated: $NEG_SSHD" >&2

# ------------------------------------------------------- helper scripts ----
# RSS sampler: nap serve's VmRSS and the summed VmRSS of its descendants
# (git receive-pack, index-pack/unpack-objects, the pre-receive hook), every 50 ms.
cat >"$TMP/sampler.py" <<'EOF'
import json, os, sys, time
pid, stop, out = int(sys.argv[1]), sys.argv[2], sys.argv[3]
def rss(p):
    try:
        with open(f"/proc/{p}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0
def descendants(root):
    parent = {}
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                with open(f"/proc/{d}/stat") as f:
                    parent[int(d)] = int(f.read().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                pass
    found, todo = [], [root]
    while todo:
        p = todo.pop()
        kids = [c for c, pp in parent.items() if pp == p]
        found += kids
        todo += kids
    return found
peak = peak_kids = samples = 0
deadline = time.time() + 600
while not os.path.exists(stop) and time.time() < deadline:
    peak = max(peak, rss(pid))
    peak_kids = max(peak_kids, sum(rss(c) for c in descendants(pid)))
    samples += 1
    time.sleep(0.05)
json.dump({"peak_kb": peak, "peak_children_kb": peak_kids, "samples": samples}, open(out, "w"))
EOF

# Baseline deploy: cached docker build + docker run + poll HTTP + remove the previous one.
cat >"$TMP/baseline-deploy.sh" <<EOF
#!/usr/bin/env bash
set -euo pipefail
docker build -q -t $BASE_IMAGE "$TMP/webctx" >/dev/null
cid=\$(docker run -d --init --restart unless-stopped --label $BASE_LABEL -p 0:5000 -e PORT=5000 $BASE_IMAGE)
port=\$(docker port "\$cid" 5000/tcp | head -n1); port=\${port##*:}
ok=0
for _ in \$(seq 1 1500); do
  if curl -fsS -o /dev/null --max-time 2 "http://127.0.0.1:\$port/" 2>/dev/null; then ok=1; break; fi
  sleep 0.02
done
[ \$ok = 1 ] || { echo "baseline container did not answer" >&2; exit 1; }
if [ -s "$TMP/baseline.prev" ]; then docker rm -f "\$(cat "$TMP/baseline.prev")" >/dev/null; fi
echo "\$cid" >"$TMP/baseline.prev"
EOF
chmod +x "$TMP/baseline-deploy.sh"

# hyperfine NAME [hyperfine args...]: results in $TMP/NAME.json
bench() {
  local name=$1; shift
  hyperfine --style basic --warmup 1 --runs "$RUNS" --export-json "$TMP/$name.json" "$@" >&2
}
kb() { awk -v k="$2" '$1==k":" {print $2}' "/proc/$1/status"; }

# ------------------------------------------------- 3. nap serve memory ----
# First, on the fresh process, so VmHWM covers only idle + the 200 MB push.
log "memory: idle after one command"
ssh $SSH_OPTS -p "$NAP_PORT" nap@127.0.0.1 version >/dev/null
sleep 1
IDLE_KB=$(kb "$NAP_PID" VmRSS)
log "memory: 200 MiB push to a non-deploy branch, sampling every 50 ms"
python3 "$TMP/sampler.py" "$NAP_PID" "$TMP/sampler.stop" "$TMP/sampler.json" &
SAMPLER_PID=$!
sleep 0.2
git -C "$TMP/repo200" push -q "$NAP_URL/$APP_MEM" HEAD:refs/heads/bench 2>"$TMP/push200.err" ||
  { cat "$TMP/push200.err" >&2; exit 1; }
touch "$TMP/sampler.stop"
wait "$SAMPLER_PID"
SAMPLER_PID=""
HWM_KB=$(kb "$NAP_PID" VmHWM)
sleep 1
AFTER_KB=$(kb "$NAP_PID" VmRSS)
read -r PEAK_KB PEAK_CHILD_KB SAMPLES < <(python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); print(d["peak_kb"], d["peak_children_kb"], d["samples"])' "$TMP/sampler.json")
[ "$(git --git-dir "$NAP_DATA_DIR/repos/$APP_MEM.git" rev-parse bench)" = "$(git -C "$TMP/repo200" rev-parse HEAD)" ] ||
  { echo "bench: the 200 MiB push did not land" >&2; exit 1; }

# ---------------------------------------------- 1. 50 MB first push ----
log "first push of 50 MiB: nap serve vs OpenSSH + git-shell"
bench push50 \
  --command-name nap --prepare "rm -rf '$NAP_DATA_DIR/repos/$APP_BIG.git'" \
  "git -C '$TMP/repo50' push -q '$NAP_URL/$APP_BIG' HEAD:refs/heads/bench" \
  --command-name openssh --prepare "rm -rf '$TMP/bare/big.git' && git init -q --bare '$TMP/bare/big.git'" \
  "git -C '$TMP/repo50' push -q '$SSHD_URL/big.git' HEAD:refs/heads/bench" \
  --command-name openssh-kex --prepare "rm -rf '$TMP/bare/big.git' && git init -q --bare '$TMP/bare/big.git'" \
  "$SAME_KEX git -C '$TMP/repo50' push -q '$SSHD_URL/big.git' HEAD:refs/heads/bench" \
  --command-name local --prepare "rm -rf '$TMP/bare/local.git' && git init -q --bare '$TMP/bare/local.git'" \
  "git -C '$TMP/repo50' push -q '$TMP/bare/local.git' HEAD:refs/heads/bench"
for dir in "$NAP_DATA_DIR/repos/$APP_BIG.git" "$TMP/bare/big.git"; do
  [ "$(git --git-dir "$dir" rev-parse bench)" = "$(git -C "$TMP/repo50" rev-parse HEAD)" ] ||
    { echo "bench: the 50 MiB push did not land in $dir" >&2; exit 1; }
done

# ----------------------------------------------------- 2. no-op push ----
log "no-op push: nap serve vs OpenSSH + git-shell"
git init -q --bare "$TMP/bare/noop.git"
git -C "$TMP/web" push -q "$NAP_URL/$APP_NOOP" HEAD:refs/heads/bench 2>/dev/null
git -C "$TMP/web" push -q "$SSHD_URL/noop.git" HEAD:refs/heads/bench
git -C "$TMP/web" push "$NAP_URL/$APP_NOOP" HEAD:refs/heads/bench >"$TMP/noop.out" 2>&1
grep -q 'Everything up-to-date' "$TMP/noop.out" || { echo "bench: the nap no-op push was not up to date" >&2; exit 1; }
bench noop \
  --command-name nap "git -C '$TMP/web' push -q '$NAP_URL/$APP_NOOP' HEAD:refs/heads/bench" \
  --command-name openssh "git -C '$TMP/web' push -q '$SSHD_URL/noop.git' HEAD:refs/heads/bench" \
  --command-name openssh-kex "$SAME_KEX git -C '$TMP/web' push -q '$SSHD_URL/noop.git' HEAD:refs/heads/bench"
# hyperfine keeps one export per invocation with several commands: split it.
python3 - "$TMP" <<'EOF'
import json, sys
tmp = sys.argv[1]
for name in ("push50", "noop"):
    d = json.load(open(f"{tmp}/{name}.json"))
    for r in d["results"]:
        json.dump({"results": [r]}, open(f"{tmp}/{name}-{r['command']}.json", "w"))
EOF

# -------------------------------------------------------- 4. deploys ----
log "deploy: first deploy of $APP_WEB (builds the image)"
git -C "$TMP/web" push "$NAP_URL/$APP_WEB" master 2>"$TMP/deploy1.err" || { cat "$TMP/deploy1.err" >&2; exit 1; }
grep -qE '=====> http://[0-9.]+:[0-9]+/' "$TMP/deploy1.err" || { cat "$TMP/deploy1.err" >&2; exit 1; }
log "deploy: cached redeploy through nap vs docker build + run + HTTP check + rm"
bench deploy \
  --command-name nap "git -C '$TMP/web' commit -q --allow-empty -m redeploy && git -C '$TMP/web' push -q '$NAP_URL/$APP_WEB' master" \
  --command-name baseline "'$TMP/baseline-deploy.sh'"
python3 - "$TMP" <<'EOF'
import json, sys
tmp = sys.argv[1]
d = json.load(open(f"{tmp}/deploy.json"))
for r in d["results"]:
    json.dump({"results": [r]}, open(f"{tmp}/deploy-{r['command']}.json", "w"))
EOF
# The last redeploy must have gone live with the image reused, and retired the old release.
git -C "$TMP/web" commit -q --allow-empty -m check
git -C "$TMP/web" push "$NAP_URL/$APP_WEB" master 2>"$TMP/deploy-last.err" || { cat "$TMP/deploy-last.err" >&2; exit 1; }
grep -q 'no rebuild' "$TMP/deploy-last.err" && grep -qE '=====> http://[0-9.]+:[0-9]+/' "$TMP/deploy-last.err" ||
  { echo "bench: the redeploy did not reuse the image or did not go live:" >&2; cat "$TMP/deploy-last.err" >&2; exit 1; }
LIVE=$(docker ps -q --filter "label=nap.app=$APP_WEB" | wc -l)
[ "$LIVE" = 1 ] || { echo "bench: $LIVE containers of $APP_WEB running, expected 1" >&2; exit 1; }

# -------------------------------------------------------------- report ----
ELAPSED=$(( $(date +%s) - STARTED ))
LOAD_END=$(cut -d' ' -f1-3 /proc/loadavg)
export LOAD_START LOAD_END RUNS IDLE_KB PEAK_KB HWM_KB AFTER_KB PEAK_CHILD_KB SAMPLES NEG_NAP NEG_SSHD ELAPSED
export DATE_UTC=$(date -u '+%Y-%m-%d %H:%M UTC')
export MACHINE="$(nproc) CPUs ($(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -n1)), $(awk '/MemTotal/ {printf "%.1f GiB", $2/1048576}' /proc/meminfo) RAM, $(. /etc/os-release; echo "$PRETTY_NAME"), Linux $(uname -r)"
export VERSIONS="$("$NAP" version 2>/dev/null | head -n1) ($NAP_BUILT); $(ssh -V 2>&1); git $(git --version | awk '{print $3}'); Docker $(docker version --format '{{.Server.Version}}'); hyperfine $(hyperfine --version | awk '{print $2}')"
python3 - "$TMP" >"$TMP/results.md" <<'EOF'
import json, os, sys
tmp, e = sys.argv[1], os.environ
def res(name):
    return json.load(open(f"{tmp}/{name}.json"))["results"][0]
def ms(r):
    return r["mean"] * 1000
def fmt(r):
    return f"{ms(r):.0f} ms ± {(r['stddev'] or 0) * 1000:.0f}"
def verdict(ok):
    return "**pass**" if ok else "**FAIL**"
mib = lambda kb: int(kb) / 1024
rows = []
for name, label, limit in (("push50", "First push, 50 MiB random, non-deploy branch", 1.10),
                           ("noop", "No-op push (Everything up-to-date)", 1.00)):
    n, o, k = res(f"{name}-nap"), res(f"{name}-openssh"), res(f"{name}-openssh-kex")
    ratio = ms(n) / ms(o)
    rows.append((label, fmt(n), f"{fmt(o)} (OpenSSH + git-shell, default negotiation)",
                 f"{ratio:.2f}", f"≤ {limit:.2f}", verdict(ratio <= limit)))
    ratio = ms(n) / ms(k)
    rows.append((f"{label}, baseline with nap's key exchange", fmt(n),
                 f"{fmt(k)} (OpenSSH + git-shell, KexAlgorithms=curve25519-sha256)",
                 f"{ratio:.2f}", f"≤ {limit:.2f} (supplementary)", verdict(ratio <= limit)))
idle = mib(e["IDLE_KB"])
rows.append(("nap serve RSS, idle after start + one command", f"{idle:.1f} MiB", "–", "–", "≤ 20 MiB",
             verdict(idle <= 20)))
peak = max(mib(e["PEAK_KB"]), mib(e["HWM_KB"]))
rows.append(("nap serve peak RSS during a 200 MiB push (max of 50 ms VmRSS samples and VmHWM)",
             f"{peak:.1f} MiB (sampled {mib(e['PEAK_KB']):.1f}, VmHWM {mib(e['HWM_KB']):.1f})",
             f"git receive-pack and its children: {mib(e['PEAK_CHILD_KB']):.1f} MiB peak (not counted)", "–",
             "≤ 64 MiB", verdict(peak <= 64)))
n, b = res("deploy-nap"), res("deploy-baseline")
diff = ms(n) - ms(b)
rows.append(("Redeploy of a cached image: commit --allow-empty + git push to master", fmt(n),
             f"{fmt(b)} (docker build cached + docker run + curl poll + docker rm -f)",
             f"{ms(n) / ms(b):.2f} (+{diff:.0f} ms)" if diff >= 0 else f"{ms(n) / ms(b):.2f} ({diff:.0f} ms)",
             "difference < 300 ms", verdict(diff < 300)))
print(f"Run: {e['DATE_UTC']}, {e['ELAPSED']} s in all; hyperfine --warmup 1 --runs {e['RUNS']} (mean ± standard deviation); "
      f"load average {e['LOAD_START']} before the timed runs, {e['LOAD_END']} after.")
print()
print(f"Machine: {e['MACHINE']}.")
print()
print(f"Software: {e['VERSIONS']}.")
print()
print("| Figure | nap | Baseline | Ratio nap/baseline | Target | Result |")
print("|---|---|---|---|---|---|")
for row in rows:
    print("| " + " | ".join(row) + " |")
print()
print(f"Negotiated by `ssh` with its defaults (from `ssh -v`): nap serve: `{e['NEG_NAP'] or 'unknown'}`; "
      f"OpenSSH sshd: `{e['NEG_SSHD'] or 'unknown'}` (and `kex=curve25519-sha256` in the supplementary rows).")
print()
local = res("push50-local")
print(f"For scale: the same 50 MiB first push to a local path, with no SSH at all, took {fmt(local)}: "
      "most of a first push is git itself (pack-objects on the client, unpack-objects on the server).")
print()
print(f"Memory detail: nap serve VmRSS idle {mib(e['IDLE_KB']):.1f} MiB; peak of {e['SAMPLES']} samples during the "
      f"200 MiB push {mib(e['PEAK_KB']):.1f} MiB; VmHWM after it {mib(e['HWM_KB']):.1f} MiB; VmRSS 1 s after it "
      f"{mib(e['AFTER_KB']):.1f} MiB.")
EOF

if [ -n "$WRITE" ]; then
  python3 - "$WRITE" "$TMP/results.md" <<'EOF'
import sys, os
path, results = sys.argv[1], open(sys.argv[2]).read().rstrip("\n")
begin, end = "<!-- bench:begin (generated by scripts/bench.sh --write) -->", "<!-- bench:end -->"
block = f"{begin}\n{results}\n{end}"
text = open(path).read() if os.path.exists(path) else f"# nap benchmarks\n\nRe-run with `scripts/bench.sh --write {path}`.\n\n{begin}\n{end}\n"
if begin in text and end in text:
    head, rest = text.split(begin, 1)
    text = head + block + rest.split(end, 1)[1]
else:
    text = text.rstrip("\n") + "\n\n" + block + "\n"
open(path, "w").write(text)
EOF
  log "wrote the results into $WRITE"
fi
log "results"
[ -z "$SMOKE" ] || echo "Smoke run: one round of a debug build with $SMALL_MIB and $LARGE_MIB MiB repos; the figures and verdicts mean nothing."
cat "$TMP/results.md"
