# LotLens: `make up` runs the whole stack locally, `make test` runs every check.
SHELL := /bin/bash
export PATH := $(HOME)/.local/bin:$(PATH)
PY := .venv/bin/python
INFRA_ENV = eval "$$(scripts/infra.sh env)"

.PHONY: bootstrap infra browser tools up down test lint typecheck pytest bench chaos smoke-openai

bootstrap:
	@scripts/bootstrap.sh

infra: bootstrap
	@scripts/infra.sh install
	@scripts/infra.sh start

# Debian's Chromium for the console's browser tests (skipped when installed).
browser:
	@scripts/browser.sh

# kustomize, kubeconform (built once into ~/.cache/lotlens-tools) and promtool, for the deploy checks;
# axe-core (pinned, checksum verified) for the console's accessibility tests; squawk (likewise) for
# the migrations' lint (tests/integration/test_migration_lint.py).
tools:
	@scripts/tools.sh >/dev/null

up: infra
	@$(INFRA_ENV) && $(PY) scripts/stack.py up

down:
	@if [ -x $(PY) ]; then $(PY) scripts/stack.py down; fi
	@scripts/infra.sh stop

lint: bootstrap
	.venv/bin/ruff check .

typecheck: bootstrap
	.venv/bin/mypy libs/common/src libs/client/src services/*/src tools/openai-standin/src tools/admin/src bench chaos tests

# The local PostgreSQL's autovacuum visits each database every 10 s while tests run (scripts/infra.sh).
pytest: export LOTLENS_PG_AUTOVACUUM_NAPTIME = 10s
# Four workers on the 2 cores: most tests wait on Kafka, PostgreSQL, a subprocess or a browser. A
# fresh-clone run took 858 s with four (2,607 tests; load average median 3.3) against 965-1,032 s
# with three (2,432 tests). Each worker has its own database and ports (tests/conftest.py,
# tests/servers.py). PYTEST_WORKERS=0 runs in-process.
PYTEST_WORKERS ?= 4
pytest: infra browser tools
	@$(INFRA_ENV) && $(PY) -m pytest -q -p no:cacheprovider --durations=15 \
		$(if $(filter-out 0,$(PYTEST_WORKERS)),-n $(PYTEST_WORKERS) --dist loadscope --no-loadscope-reorder) $(PYTEST_ARGS)

test: lint typecheck pytest

# The live check against the real OpenAI API (spends a few cents); skipped without OPENAI_API_KEY.
# Its database is its own (`lotlens_smoke`): its stages take up every shard of their name,
# and `make test`'s, whose stand-ins are gone, would pause them.
smoke-openai: infra
	@if [ -z "$$OPENAI_API_KEY" ]; then \
		echo "smoke-openai: skipped, OPENAI_API_KEY is not set (it talks to the real OpenAI API)"; \
	else $(INFRA_ENV) && LOTLENS_SMOKE_OPENAI=1 LOTLENS_TEST_DATABASE=lotlens_smoke $(PY) -m pytest -q -p no:cacheprovider -rs tests/smoke; fi

bench: infra
	@$(INFRA_ENV) && $(PY) -m bench $(BENCH_ARGS)

# Seeded fault schedules against an isolated stack (not part of `make test`, which runs one short
# seed): CHAOS_ARGS="--seed 7 --seeds 1" reruns one seed. Then the soak tests (`-m soak`), which
# `make test` leaves out, whether or not a seed broke an invariant (SOAK=0 skips them); the exit
# status is the first failure's.
SOAK ?= 1
chaos: infra
	@$(INFRA_ENV) && seeds=0 && { $(PY) -m chaos $(CHAOS_ARGS) || seeds=$$?; } && \
		if [ "$(SOAK)" != 0 ]; then $(PY) -m pytest -q -p no:cacheprovider -m soak tests/chaos || \
		{ soak=$$?; [ $$seeds != 0 ] || seeds=$$soak; }; fi; exit $$seeds
