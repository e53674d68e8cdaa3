#!/usr/bin/env bash
# `make bench`: release build, then the benchmark harness (tests/src/bin/bench.rs), which runs
# every service as its own process and writes BENCHMARKS.md.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
bash scripts/setup.sh
. scripts/dotenv.sh
. scripts/throwaway-keys.sh
export PATH="$HOME/.cargo/bin:$PATH"
cargo build --release --bins
"$root/target/release/bench"
