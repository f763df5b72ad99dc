#!/usr/bin/env bash
# Quick start on a fresh Debian 12 host: installs Debian packages (docker.io,
# docker-registry, etcd, git, OpenSSH, ...), starts dockerd and a registry on
# 127.0.0.1:5000, builds nap and runs `nap serve` on 0.0.0.0:2222 in the
# foreground. Ctrl-C (or SIGTERM) stops it gracefully.
#
# The settings go to /etc/nap/nap.toml (made if missing, never overwritten),
# the one file every entry point reads: `nap serve`, OpenSSH's forced
# command (`nap ssh-command`) and `nap VERB` on the host.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/services.sh
cargo build --release --locked -p nap
install -m 0755 target/release/nap /usr/local/bin/nap
if [ ! -e /etc/nap/nap.toml ]; then
  mkdir -p /etc/nap
  printf '# nap settings: every nap command on this host reads this file (see README, Settings)\nregistry = "%s"\n' \
    "${NAP_REGISTRY:-127.0.0.1:5000}" >/etc/nap/nap.toml
  echo "serve: wrote /etc/nap/nap.toml (registry = \"${NAP_REGISTRY:-127.0.0.1:5000}\")"
fi
echo "serve: nap is installed as /usr/local/bin/nap, with its settings in /etc/nap/nap.toml"
echo "serve: add your key with: nap keys add NAME --admin < KEY.pub"
exec /usr/local/bin/nap serve "$@"
