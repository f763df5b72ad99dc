#!/usr/bin/env bash
# Runs nap's fuzz targets (fuzz/, cargo-fuzz and libFuzzer on the nightly
# toolchain), each for SECONDS from its committed seeds (fuzz/corpus/TARGET);
# what libFuzzer learns goes to fuzz/target/corpus/TARGET, a crash to
# fuzz/artifacts/TARGET. Exits non-zero on the first crash.
#   scripts/fuzz.sh [--seconds N] [TARGET ...]     (default: 600 s, every target)
# Needs: rustup's nightly toolchain, and `cargo install cargo-fuzz`.
set -euo pipefail
cd "$(dirname "$0")/../fuzz"

seconds=600
if [ "${1:-}" = "--seconds" ]; then
  seconds=$2
  shift 2
fi
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
  mapfile -t targets < <(cargo +nightly fuzz list)
fi

# No sanitizer: the code is safe Rust; what is sought is panics, hangs and
# runaway memory. Release mode, so more inputs run in the time.
cargo +nightly fuzz build --sanitizer none -O
for target in "${targets[@]}"; do
  rm -rf "artifacts/$target"
  mkdir -p "target/corpus/$target"
  echo "fuzz: $target for ${seconds}s"
  cargo +nightly fuzz run --sanitizer none -O "$target" "target/corpus/$target" "corpus/$target" -- \
    -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 2>&1 |
    grep -E "^(stat::number_of_executed_units|stat::peak_rss_mb|#[0-9]+ *DONE)|ERROR|panicked|==[0-9]+==" || true
  if [ -n "$(ls -A "artifacts/$target" 2>/dev/null)" ]; then
    echo "fuzz: $target crashed; the input is in fuzz/artifacts/$target" >&2
    exit 1
  fi
done
