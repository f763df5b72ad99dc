#!/usr/bin/env bash
# Builds `nap-watch` (template hooks alone) as a static binary for images
# (`FROM scratch` or busybox) and prints its path. glibc, statically linked:
# this toolchain has no musl target. A static glibc resolves host names only
# through /etc/hosts and DNS without NSS modules, so give etcd by IP address
# (or put its name in the image's /etc/hosts).
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
TARGET=x86_64-unknown-linux-gnu
cd "$ROOT"
# --target keeps build scripts and proc macros dynamic; only nap-watch is static.
RUSTFLAGS="-C target-feature=+crt-static" cargo build --release --locked -q -p nap-hooks --bin nap-watch --target "$TARGET" >&2
BIN=$ROOT/target/$TARGET/release/nap-watch
strip "$BIN"
echo "$BIN"
