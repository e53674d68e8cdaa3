#!/usr/bin/env bash
# `make run`: the whole system on this machine. Prepares what is missing, builds, migrates,
# applies the stream definitions, starts every service, loads the demo tenant and prints how
# to use it. Ctrl-C stops everything cleanly.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"

if [ ! -f .env ]; then
  secret=$(head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n')
  token_key="k1:$(head -c 32 /dev/urandom | base64 | tr -d '\n')"
  # This machine's own deployment: development, so the console offers the demo sign-in.
  sed -e "s/^SECRET_KEY=.*/SECRET_KEY=$secret/" -e "s|^TOKEN_ENCRYPTION_KEYS=.*|TOKEN_ENCRYPTION_KEYS=$token_key|" \
    -e "s/^APP_ENV=.*/APP_ENV=development/" .env.example > .env
  echo "created .env from .env.example with a fresh SECRET_KEY and TOKEN_ENCRYPTION_KEYS (APP_ENV=development)"
fi
bash scripts/setup.sh
. scripts/dotenv.sh
export PATH="$HOME/.cargo/bin:$PATH"

echo "building (first time: a few minutes)..."
cargo build --bins
bin="$root/target/debug"
"$bin/ctl" migrate
"$bin/ctl" nats apply

logs="$root/.state/logs"; mkdir -p "$logs"
pids=()
stop() {
  trap - INT TERM EXIT
  echo; echo "stopping..."
  for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  wait "${pids[@]}" 2>/dev/null || true
  echo "stopped."
}
trap stop INT TERM EXIT

for svc in gateway ingest embedding rules-engine tool-executor; do
  "$bin/$svc" >"$logs/$svc.log" 2>&1 &
  pids+=("$!")
done

url="${PUBLIC_URL:-http://localhost:8000}"
for _ in $(seq 1 120); do
  curl -fs "$url/ready" >/dev/null 2>&1 && break
  sleep 0.5
done
curl -fs "$url/ready" >/dev/null || { echo "gateway did not become ready; see $logs/gateway.log"; exit 1; }

token=$("$bin/ctl" demo load)
product_token=$("$bin/ctl" demo load-product)
if [ "${APP_ENV:-production}" = development ]; then
  console_how="open it and click \"Enter as the demo advisor\" (or product team)"
else
  console_how="Google sign-in only: APP_ENV=$APP_ENV (the demo sign-in needs APP_ENV=development)"
fi
cat <<MSG

  The assistant is running.

  Console:    $url/            ($console_how)
  API:        $url            (docs: $url/docs, spec: $url/openapi.json)
  Metrics:    $url/metrics
  Logs:       $logs/
  Demo user:  demo@advisor.example
  Token:      $token
  Product team demo user: demo@product.example (product intelligence on)
  Token:      $product_token

  Try:
    curl -s -H "Authorization: Bearer $token" "$url/api/embeddings/search?q=retirement+rollover&top_k=3"
    curl -s -H "Authorization: Bearer $product_token" "$url/api/insights/themes?sort=accounts"

  Ctrl-C stops everything.
MSG
wait "${pids[@]}"
