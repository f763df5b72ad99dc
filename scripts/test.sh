#!/usr/bin/env bash
# The whole test suite, exactly what CI runs (.ci/run calls this).
# Installs and starts the real services first (scripts/services.sh), builds
# the nap binary the end-to-end tests drive, then runs every test.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/services.sh --for-tests
status=0
# The lints, all as errors: formatting, clippy (pedantic, as the workspace
# configures it) and the docs, private items included (so that their links
# resolve, and every link is checked). A failure fails the run, after the tests.
cargo fmt --all --check || status=$?
cargo clippy --workspace --all-targets --locked -- -D warnings || status=$?
RUSTDOCFLAGS="-D warnings -A rustdoc::private_intra_doc_links" \
  cargo doc --workspace --no-deps --document-private-items --locked --quiet || status=$?
cargo build --workspace --bins --locked
# The static nap-watch that the entrypoint test copies into an image.
scripts/build-nap-watch.sh >/dev/null
# The static app the router tests push (tests/upstream); the tests build it
# too, once each, but then cargo has nothing left to do.
scripts/build-test-upstream.sh >/dev/null
# Tests that need a real Kubernetes cluster are #[ignore]d; KUBECONFIG runs them too.
if cargo nextest --version >/dev/null 2>&1; then
  ignored=()
  if [ -n "${KUBECONFIG:-}" ]; then ignored=(--run-ignored all); fi
  cargo nextest run --workspace --locked --no-fail-fast "${ignored[@]}" || status=$?
else
  ignored=()
  if [ -n "${KUBECONFIG:-}" ]; then ignored=(-- --include-ignored); fi
  cargo test --workspace --locked --no-fail-fast "${ignored[@]}" || status=$?
fi
# The tests' guards leave the last build step of each app they pushed (it
# names the app): removing it while another push builds would break that
# push's cache lookup, so it goes here, once no test builds.
docker image prune --force --filter label=nap.app >/dev/null
exit "$status"
