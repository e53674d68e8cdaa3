# The two commands a newcomer needs: `make run` and `make test`. See README.md.
.PHONY: run test lint bench chaos fuzz setup build fmt openapi migrate insights-head

## Start the whole system (installs and starts what is missing) with a demo tenant.
run:
	bash scripts/run.sh

## Prepare the machine, then run the whole test suite against real Postgres and NATS.
test:
	bash scripts/test.sh

## Formatting and clippy, as CI checks them.
lint:
	cargo fmt --all -- --check
	cargo clippy --workspace --all-targets -- -D warnings

## Benchmarks (release build): prints a table and writes BENCHMARKS.md.
bench:
	bash scripts/bench.sh

## Train the local tier 1's head again from shared/insights/data (after changing that data).
insights-head:
	bash scripts/setup.sh && . scripts/dotenv.sh && . scripts/throwaway-keys.sh && cargo run --release -p assistant-tests --bin train_head

## Generated inputs against every parser and checker of outside input (a million per target;
## FUZZ_INPUTS, FUZZ_SEED); what it finds is kept in tests/fuzz/.
fuzz:
	cargo run --release -q -p assistant-tests --bin fuzz

## Outage battery (minutes; not part of `make test`): NATS killed during intake, Postgres away 30 s.
chaos:
	bash scripts/chaos.sh

## Install and start Postgres (+pgvector) and NATS if missing, fetch the embedding model.
setup:
	bash scripts/setup.sh

build:
	cargo build --bins

fmt:
	cargo fmt --all

## Regenerate docs/openapi.json from the code.
openapi:
	bash scripts/setup.sh
	UPDATE_OPENAPI=1 cargo nextest run -p assistant-tests -E 'test(openapi)'

migrate:
	cargo run -q -p ctl -- migrate
