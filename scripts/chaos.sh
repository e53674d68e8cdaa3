#!/usr/bin/env bash
# `make chaos`: the outage battery (tests/src/bin/chaos.rs) against the release binaries:
# NATS killed and restarted during intake, Postgres unreachable for 30 s. Takes a few
# minutes; not part of `make test`. Prints what was sent, stored, indexed and dead-lettered.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
bash scripts/setup.sh
. scripts/dotenv.sh
. scripts/throwaway-keys.sh
export PATH="$HOME/.cargo/bin:$PATH"
command -v nats-server >/dev/null || { apt-get update -qq && apt-get install -y -qq nats-server >/dev/null; }
cargo build --release --bins
"$root/target/release/chaos"
