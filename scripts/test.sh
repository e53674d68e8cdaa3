#!/usr/bin/env bash
# `make test`: prepare the machine like `make run` does, then run every test against the real
# Postgres + pgvector and NATS JetStream. Each test makes its own database and stream prefix.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
bash scripts/setup.sh
. scripts/dotenv.sh
export PATH="$HOME/.cargo/bin:$PATH"
: "${DATABASE_URL:=postgres://postgres:postgres@127.0.0.1:5432/assistant}"
admin_url="${DATABASE_URL%/*}/postgres"

# Databases left by interrupted runs, and templates of older schemas.
for db in $(psql "$admin_url" -tAc "select datname from pg_database where datname like 'test\_%' or datname like 'assistant\_tmpl\_%'"); do
  psql "$admin_url" -qc "drop database if exists \"$db\" with (force)" >/dev/null
done

# The console's browser tests (tests/browser, run by the e2e test `console`): Debian's
# Chromium, Node.js, and the script's one package (playwright-core, pinned in the lockfile).
sudo_cmd=""; [ "$(id -u)" = 0 ] || sudo_cmd=sudo
missing=()
[ -x /usr/bin/chromium ] || missing+=(chromium)
command -v node >/dev/null || missing+=(nodejs)
command -v npm >/dev/null || missing+=(npm)
if [ ${#missing[@]} -gt 0 ]; then
  echo "installing ${missing[*]} for the browser tests..."
  $sudo_cmd apt-get update -q >/dev/null
  DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -q --no-install-recommends "${missing[@]}" >/dev/null
fi
if ! cmp -s tests/browser/package-lock.json tests/browser/node_modules/.installed-lock 2>/dev/null; then
  (cd tests/browser && npm ci --no-audit --no-fund --loglevel=error && cp package-lock.json node_modules/.installed-lock)
fi

if ! cargo nextest --version >/dev/null 2>&1; then
  echo "installing cargo-nextest..."
  cargo install --locked cargo-nextest
fi
cargo nextest run --workspace --no-fail-fast "$@"
