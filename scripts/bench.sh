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
# Peers measured beside the product, for the benchmark only (the product never uses them).
venv="$root/target/bench-venv"
if ! "$venv/bin/python" -c "import onnxruntime, onnx, tokenizers, safetensors, numpy" 2>/dev/null; then
  python3 -m venv "$venv" \
    && "$venv/bin/pip" install -q --disable-pip-version-check -r scripts/peers/requirements.txt \
    || echo "[bench] the peers could not be installed; their rows will say so" >&2
fi
if "$venv/bin/python" -c "import onnxruntime" 2>/dev/null; then
  export BENCH_PYTHON="$venv/bin/python"
fi
cargo build --release --bins
"$root/target/release/bench"
