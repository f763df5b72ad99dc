#!/usr/bin/env bash
# Builds `nap-test-upstream` (tests/upstream: the app the router tests run
# behind nap) as a static binary for `FROM nap/busybox` images and prints its
# path. Static glibc, as scripts/build-nap-watch.sh builds nap-watch (this
# toolchain has no musl target). Honours CARGO_TARGET_DIR.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
TARGET=x86_64-unknown-linux-gnu
cd "$ROOT"
# --target keeps build scripts and proc macros dynamic; only the binary is static.
RUSTFLAGS="-C target-feature=+crt-static" cargo build --release --locked -q -p nap-test-upstream --target "$TARGET" >&2
# A relative CARGO_TARGET_DIR is relative to $ROOT, where cargo ran.
TARGET_DIR=$(cd "${CARGO_TARGET_DIR:-$ROOT/target}" && pwd)
BIN=$TARGET_DIR/$TARGET/release/nap-test-upstream
strip "$BIN"
echo "$BIN"
