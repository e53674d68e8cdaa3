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
if ! "$venv/bin/python" -c "import onnxruntime, onnx, tokenizers, safetensors, numpy, fastapi, uvicorn, celery, redis, jwt" 2>/dev/null; then
  python3 -m venv "$venv" \
    && "$venv/bin/pip" install -q --disable-pip-version-check -r scripts/peers/requirements.txt \
    || echo "[bench] the peers could not be installed; their rows will say so" >&2
fi
if "$venv/bin/python" -c "import onnxruntime" 2>/dev/null; then
  export BENCH_PYTHON="$venv/bin/python"
fi
# The intake peer's broker: a Redis of its own, on a port of its own, keeping nothing on disk.
command -v redis-server >/dev/null || { sudo_cmd=""; [ "$(id -u)" = 0 ] || sudo_cmd=sudo; $sudo_cmd apt-get install -y -q redis-server >/dev/null || true; }
if command -v redis-server >/dev/null; then
  redis-server --port 6391 --save '' --appendonly no --daemonize yes >/dev/null
  export BENCH_REDIS_URL="redis://127.0.0.1:6391/0"
  trap 'redis-cli -p 6391 shutdown nosave >/dev/null 2>&1 || true' EXIT
fi
cargo build --release --bins
"$root/target/release/bench"
