#!/usr/bin/env bash
# Quick start on a fresh Debian 12 host: installs Debian packages (docker.io,
# docker-registry, etcd, git, OpenSSH, ...), starts dockerd and a registry on
# 127.0.0.1:5000, builds nap and runs `nap serve` on 0.0.0.0:2222 in the
# foreground. Ctrl-C (or SIGTERM) stops it gracefully.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/services.sh
cargo build --release --locked -p nap
install -m 0755 target/release/nap /usr/local/bin/nap
echo "serve: nap is installed as /usr/local/bin/nap; add a key with: nap keys add NAME < KEY.pub"
exec /usr/local/bin/nap serve --registry "${NAP_REGISTRY:-127.0.0.1:5000}" "$@"
