# Shared by the benchmark scripts (sourced, not run): their arguments, free
# ports, a private etcd, a plain sshd for OpenSSH's floor, and writing a
# results section between a script's markers in docs/benchmarks.md. The
# services expect $T (the script's temporary directory) and the PIDS array.

parse_args() { # DEFAULT-RUNS "$@": sets RUNS, WRITE, SMOKE and STARTED; --help prints the script's header
  RUNS=$1
  shift
  WRITE=""
  SMOKE=""
  while [ $# -gt 0 ]; do
    case $1 in
      --write) WRITE=${2:?--write needs a file}; shift 2 ;;
      --runs) RUNS=${2:?--runs needs a number}; shift 2 ;;
      --smoke) SMOKE=1; shift ;;
      -h|--help) sed -n '2,/^set -euo/p' "$0" | sed -e '$d' -e 's/^# \{0,1\}//'; exit 0 ;;
      *) echo "$(basename "$0"): unknown argument $1" >&2; exit 2 ;;
    esac
  done
  case $RUNS in ''|*[!0-9]*|0) echo "$(basename "$0"): --runs needs a positive number" >&2; exit 2 ;; esac
  # --smoke: one short round of every step on the debug build, to show the
  # script still runs to its end (CI runs it); its figures mean nothing, so
  # nothing is judged or written.
  if [ -n "$SMOKE" ]; then
    [ -z "$WRITE" ] || { echo "$(basename "$0"): --smoke writes no results" >&2; exit 2; }
    RUNS=2   # two: hyperfine gives no spread of one run, and the reports print it
  fi
  STARTED=$(date +%s)
}

smoke() { # SMOKE-VALUE FULL-VALUE: the first under --smoke, else the second
  if [ -n "$SMOKE" ]; then echo "$1"; else echo "$2"; fi
}

build_nap() { # [-p CRATE...]: builds nap (and those crates' binaries), release, or debug under --smoke; sets BIN (their directory)
  local profile=(--release) dir=release
  if [ -n "$SMOKE" ]; then profile=(); dir=debug; fi
  (cd "$ROOT" && cargo build "${profile[@]}" -q -p nap "$@") >&2
  BIN=$(cd "$ROOT" && cd "${CARGO_TARGET_DIR:-target}" && pwd)/$dir
}

log() { printf '\n== %s\n' "$*" >&2; }

remove_app_networks() { # NAME-PART: removes the app networks nap made whose names hold it (this run's tag)
  docker network ls -q --filter "label=nap.network=app" --filter "name=$1" | xargs -r docker network rm >/dev/null 2>&1 || true
}

setup_bench() { # NAME: the services, a release build of nap; sets NAP, REV, TAG, T (a temporary directory) and PIDS
  "$ROOT/scripts/services.sh" --for-tests >&2
  build_nap
  NAP=$BIN/nap
  REV=$(git -C "$ROOT" rev-parse --short HEAD)
  TAG=$(od -An -N3 -tx1 /dev/urandom | tr -d ' \n')
  T=$(mktemp -d "/tmp/nap-bench-$1.XXXXXX")
  PIDS=()
  export NAP_HTTP_LISTEN=off   # several gateways run at once; none needs the router here
}

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

wait_port() { # PORT: until something listens there (10 s at most)
  for _ in $(seq 100); do (echo >/dev/tcp/127.0.0.1/"$1") 2>/dev/null && return 0; sleep 0.1; done
  echo "bench: nothing listens on $1" >&2
  return 1
}

start_etcd() { # sets ETCD (HOST:PORT) to a private etcd under $T/etcd
  local client peer
  client=$(free_port)
  peer=$(free_port)
  etcd --name bench --data-dir "$T/etcd" \
    --listen-client-urls "http://127.0.0.1:$client" --advertise-client-urls "http://127.0.0.1:$client" \
    --listen-peer-urls "http://127.0.0.1:$peer" --initial-advertise-peer-urls "http://127.0.0.1:$peer" \
    --initial-cluster "bench=http://127.0.0.1:$peer" >"$T/etcd.log" 2>&1 &
  PIDS+=($!)
  wait_port "$client"
  ETCD=127.0.0.1:$client
}

start_sshd() { # PUBLIC-KEY-FILE: sets SSHD_PORT to a plain sshd that lets that key in as root
  SSHD_PORT=$(free_port)
  ssh-keygen -q -t ed25519 -N '' -f "$T/sshd_host_key"
  echo "restrict $(cat "$1")" >"$T/sshd_authorized_keys"
  mkdir -p /run/sshd
  cat >"$T/sshd_config" <<CFG
Port $SSHD_PORT
ListenAddress 127.0.0.1
HostKey $T/sshd_host_key
AuthorizedKeysFile $T/sshd_authorized_keys
StrictModes no
PidFile $T/sshd.pid
UsePAM no
PermitRootLogin prohibit-password
# bash would source root's ~/.bashrc (pyenv here); a plain account runs none.
SetEnv SHLVL=1
CFG
  /usr/sbin/sshd -D -f "$T/sshd_config" 2>"$T/sshd.log" &
  PIDS+=($!)
  wait_port "$SSHD_PORT"
}

write_results() { # FILE NAME TITLE RESULTS-FILE: puts the results between NAME's markers
  python3 - "$@" <<'PY'
import sys
path, name, title, results = sys.argv[1], sys.argv[2], sys.argv[3], open(sys.argv[4]).read()
text = open(path).read()
begin, end = f"<!-- {name}:begin -->", f"<!-- {name}:end -->"
section = f"{begin}\n{results}{end}"
if begin in text:
    head, rest = text.split(begin, 1)
    text = head + section + rest.split(end, 1)[1]
else:
    text = text.rstrip() + f"\n\n## {title}\n\n" + section + "\n"
open(path, "w").write(text)
PY
}
