#!/usr/bin/env bash
# Installs and starts the real services nap needs on a Debian 12 host:
# dockerd, a registry on 127.0.0.1:5000 and etcd on 127.0.0.1:2379, and the
# nap/busybox base image apps build FROM. Idempotent: anything already
# running is left alone.
#
#   scripts/services.sh              what serving needs (scripts/serve.sh)
#   scripts/services.sh --for-tests  and what the tests and benchmarks need
#                                    (scripts/test.sh): nginx, wrk, pebble,
#                                    OpenSSH's server, the nap/systemd image
#   scripts/services.sh --stop       stops the services this script started
set -euo pipefail

STATE=${NAP_SERVICES_DIR:-/var/lib/nap-services}
MODE=serve
case "${1:-}" in
  "") ;;
  --for-tests) MODE=tests ;;
  --stop) MODE=stop ;;
  *) echo "usage: scripts/services.sh [--for-tests | --stop]" >&2; exit 2 ;;
esac

# Stops what this script started (it keeps their PIDs in $STATE).
if [ "$MODE" = stop ]; then
  for service in etcd registry dockerd; do
    pid=$(cat "$STATE/$service.pid" 2>/dev/null || true)
    if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then
      kill "$pid"
      for _ in $(seq 1 40); do kill -0 "$pid" 2>/dev/null || break; sleep 0.25; done
      echo "services: stopped $service (PID $pid)"
    fi
    rm -f "$STATE/$service.pid"
  done
  exit 0
fi

# Serving: Docker, the registry, etcd, git (the repos' hooks), busybox (the
# base image), and protoc and curl to build and check them.
PACKAGES=(docker.io docker-registry etcd-server etcd-client busybox-static
          openssh-client git protobuf-compiler curl)
if [ "$MODE" = tests ]; then
  PACKAGES+=(openssh-server hyperfine apache2-utils debootstrap iproute2 util-linux openssl nginx pebble wrk)
fi

missing=()
for p in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "services: installing Debian packages: ${missing[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi

mkdir -p "$STATE"

wait_for() { # what, command...
  local what=$1; shift
  for _ in $(seq 1 60); do "$@" >/dev/null 2>&1 && return 0; sleep 0.5; done
  echo "services: $what did not come up" >&2; return 1
}

started=()
if ! docker info >/dev/null 2>&1; then
  echo "services: starting dockerd"
  nohup dockerd --host unix:///var/run/docker.sock >"$STATE/dockerd.log" 2>&1 &
  echo $! >"$STATE/dockerd.pid"
  wait_for dockerd docker info
  started+=("dockerd (log $STATE/dockerd.log)")
fi

if ! curl -fsS http://127.0.0.1:5000/v2/ >/dev/null 2>&1; then
  echo "services: starting the registry on 127.0.0.1:5000"
  mkdir -p "$STATE/registry"
  cat >"$STATE/registry.yml" <<YML
version: 0.1
storage:
  filesystem:
    rootdirectory: $STATE/registry
  delete:
    enabled: true
http:
  addr: 127.0.0.1:5000
YML
  nohup docker-registry serve "$STATE/registry.yml" >"$STATE/registry.log" 2>&1 &
  echo $! >"$STATE/registry.pid"
  wait_for registry curl -fsS http://127.0.0.1:5000/v2/
  started+=("the registry on 127.0.0.1:5000 (log $STATE/registry.log)")
fi

if ! ETCDCTL_API=3 etcdctl --endpoints http://127.0.0.1:2379 endpoint health >/dev/null 2>&1; then
  echo "services: starting etcd on 127.0.0.1:2379"
  nohup etcd --data-dir "$STATE/etcd" \
    --listen-client-urls http://127.0.0.1:2379 --advertise-client-urls http://127.0.0.1:2379 \
    --listen-peer-urls http://127.0.0.1:2380 >"$STATE/etcd.log" 2>&1 &
  echo $! >"$STATE/etcd.pid"
  wait_for etcd env ETCDCTL_API=3 etcdctl --endpoints http://127.0.0.1:2379 endpoint health
  started+=("etcd on 127.0.0.1:2379 (log $STATE/etcd.log)")
fi

# The base image apps build FROM: nothing can be pulled here, so it is made
# from the static busybox on this host.
if ! docker image inspect nap/busybox:latest >/dev/null 2>&1; then
  echo "services: building the nap/busybox base image"
  ctx=$(mktemp -d)
  cp /bin/busybox "$ctx/busybox"
  printf 'FROM scratch\nCOPY busybox /bin/busybox\nRUN ["/bin/busybox","--install","-s","/bin"]\n' >"$ctx/Dockerfile"
  DOCKER_BUILDKIT=0 docker build -q -t nap/busybox:latest "$ctx" >/dev/null
  rm -rf "$ctx"
fi


# The Debian mirror this machine's apt uses for bookworm itself (not
# -updates or -security), from deb822 .sources files or sources.list lines;
# NAP_DEBIAN_MIRROR overrides it, deb.debian.org is the last resort.
debian_mirror() {
  if [ -n "${NAP_DEBIAN_MIRROR:-}" ]; then echo "$NAP_DEBIAN_MIRROR"; return; fi
  local found
  found=$(awk '
    function stanza() {
      if (!found && suites ~ /(^| )bookworm( |$)/ && uris != "") { print uris; found = 1; exit }
      uris = ""; suites = ""
    }
    FNR == 1 && NR != 1 { stanza() }
    /^[[:space:]]*$/ { stanza(); next }
    /^URIs:/ { uris = $2 }
    /^Suites:/ { $1 = ""; suites = $0 " " }
    END { stanza() }
  ' /etc/apt/sources.list.d/*.sources 2>/dev/null)
  if [ -z "$found" ]; then
    found=$(awk '$1 == "deb" { i = 2; if ($2 ~ /^\[/) { while ($i !~ /\]$/) i++; i++ } if ($(i + 1) == "bookworm") { print $i; exit } }' \
      /etc/apt/sources.list /etc/apt/sources.list.d/*.list 2>/dev/null)
  fi
  echo "${found:-http://deb.debian.org/debian}"
}

# A Debian image with systemd as PID 1, for the systemd runner's tests:
# nothing can be pulled here, so it is made with debootstrap, from the
# machine's own Debian mirror.
if [ "$MODE" = tests ] && ! docker image inspect nap/systemd:bookworm >/dev/null 2>&1; then
  mirror=$(debian_mirror)
  echo "services: building the nap/systemd:bookworm image with debootstrap from $mirror (about a minute)"
  root=$(mktemp -d)
  debootstrap --variant=minbase --include=systemd,systemd-sysv,dbus bookworm "$root" "$mirror" >"$STATE/debootstrap.log" 2>&1
  tar -C "$root" -c . | docker import - nap/systemd:bookworm >/dev/null
  rm -rf "$root"
fi
# The swarm tests' overlay network is VXLAN between the nodes' namespaces,
# and their bridge needs iptables: say so here, not in a test's timeout.
if [ "$MODE" = tests ]; then
  probe="napvx$$"
  if ! ip link add "$probe" type vxlan id 4242 dstport 4789 dev lo >/dev/null 2>&1; then
    echo "services: this kernel cannot make VXLAN links (modprobe vxlan); the swarm tests (tests/tests/swarm.rs) need them" >&2
    exit 1
  fi
  ip link del "$probe" >/dev/null 2>&1 || true
  command -v iptables >/dev/null ||
    { echo "services: iptables is missing; the swarm tests need it for their bridge" >&2; exit 1; }
fi
images="nap/busybox"
if [ "$MODE" = tests ]; then images="nap/busybox and nap/systemd:bookworm"; fi
echo "services: dockerd, the registry (127.0.0.1:5000), etcd (127.0.0.1:2379) and $images are ready"
if [ ${#started[@]} -gt 0 ]; then
  echo "services: started in the background: $(IFS=';'; echo "${started[*]}" | sed 's/;/, /g')"
  echo "services: they keep running after this script; stop them with: scripts/services.sh --stop"
fi
