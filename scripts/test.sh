#!/usr/bin/env bash
# The whole test suite, exactly what CI runs (.ci/run calls this).
# Installs and starts the real services first (scripts/services.sh), builds
# the nap binary the end-to-end tests drive, then runs every test.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/services.sh
cargo build --workspace --bins --locked
# The static nap-watch that the entrypoint test copies into an image.
scripts/build-nap-watch.sh >/dev/null
# Tests that need a real Kubernetes cluster are #[ignore]d; KUBECONFIG runs them too.
if cargo nextest --version >/dev/null 2>&1; then
  ignored=()
  if [ -n "${KUBECONFIG:-}" ]; then ignored=(--run-ignored all); fi
  cargo nextest run --workspace --locked --no-fail-fast "${ignored[@]}"
else
  ignored=()
  if [ -n "${KUBECONFIG:-}" ]; then ignored=(-- --include-ignored); fi
  cargo test --workspace --locked --no-fail-fast "${ignored[@]}"
fi
