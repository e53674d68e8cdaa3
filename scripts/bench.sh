#!/usr/bin/env bash
# `make bench`: release build, then the benchmark harness (tests/src/bin/bench.rs), which runs
# every service as its own process and writes BENCHMARKS.md.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
bash scripts/setup.sh
. scripts/dotenv.sh
# Without a .env (a fresh clone), sign the benchmark's tokens with a throwaway secret.
: "${SECRET_KEY:=$(head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n')}"
export SECRET_KEY
: "${TOKEN_ENCRYPTION_KEYS:=bench:$(head -c 32 /dev/urandom | base64 | tr -d '\n')}"
export TOKEN_ENCRYPTION_KEYS
export PATH="$HOME/.cargo/bin:$PATH"
cargo build --release --bins
"$root/target/release/bench"
