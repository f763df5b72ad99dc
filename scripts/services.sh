#!/usr/bin/env bash
# Installs and starts the real services nap needs on a Debian 12 host:
# dockerd, a registry on 127.0.0.1:5000 and etcd on 127.0.0.1:2379.
# Idempotent: anything already running is left alone.
set -euo pipefail

STATE=${NAP_SERVICES_DIR:-/var/lib/nap-services}
PACKAGES=(docker.io docker-registry etcd-server etcd-client busybox-static
          openssh-client openssh-server git protobuf-compiler curl hyperfine
          apache2-utils debootstrap iproute2 util-linux openssl nginx pebble wrk)

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

if ! docker info >/dev/null 2>&1; then
  echo "services: starting dockerd"
  nohup dockerd --host unix:///var/run/docker.sock >"$STATE/dockerd.log" 2>&1 &
  wait_for dockerd docker info
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
  wait_for registry curl -fsS http://127.0.0.1:5000/v2/
fi

if ! ETCDCTL_API=3 etcdctl --endpoints http://127.0.0.1:2379 endpoint health >/dev/null 2>&1; then
  echo "services: starting etcd on 127.0.0.1:2379"
  nohup etcd --data-dir "$STATE/etcd" \
    --listen-client-urls http://127.0.0.1:2379 --advertise-client-urls http://127.0.0.1:2379 \
    --listen-peer-urls http://127.0.0.1:2380 >"$STATE/etcd.log" 2>&1 &
  wait_for etcd env ETCDCTL_API=3 etcdctl --endpoints http://127.0.0.1:2379 endpoint health
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


# A Debian image with systemd as PID 1, for the systemd runner's tests:
# nothing can be pulled here, so it is made with debootstrap.
if ! docker image inspect nap/systemd:bookworm >/dev/null 2>&1; then
  echo "services: building the nap/systemd:bookworm image with debootstrap (about a minute)"
  root=$(mktemp -d)
  debootstrap --variant=minbase --include=systemd,systemd-sysv,dbus bookworm "$root" http://deb.debian.org/debian >"$STATE/debootstrap.log" 2>&1
  tar -C "$root" -c . | docker import - nap/systemd:bookworm >/dev/null
  rm -rf "$root"
fi
echo "services: dockerd, registry (127.0.0.1:5000), etcd (127.0.0.1:2379), nap/busybox and nap/systemd images are ready"
