# Two commands for a newcomer: `make run` (the product on its embedded defaults) and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test lint test-only test-slurm bench bench-slurm clean bubblewrap

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[test]'
	@command -v bwrap >/dev/null || $(MAKE) --no-print-directory bubblewrap
	touch $(STAMP)

# The local backend runs every job in a bubblewrap sandbox (Debian/Ubuntu package `bubblewrap`).
# Installed here when we are root with apt-get; otherwise say how (or SKYRUN_LOCAL_SANDBOX=off).
bubblewrap:
	@if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		apt-get install -y -qq --no-install-recommends bubblewrap >/dev/null \
		|| { apt-get update -qq && apt-get install -y -qq --no-install-recommends bubblewrap >/dev/null; }; \
	else \
		echo "note: bwrap not found; the local backend needs it: sudo apt-get install bubblewrap" \
		     "(or set SKYRUN_LOCAL_SANDBOX=off on a single-user laptop)"; \
	fi

run: $(STAMP)
	$(BIN)/skyrun dev --example examples/mock-training

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy bot worker tests bench

# Two processes, each with its own Temporal dev server; a file's tests stay in one process. Most
# tests wait on jobs, timers and subprocesses, so two at a time take about 12 minutes, not 21.
test-only: $(STAMP)
	$(BIN)/pytest -n 2 --dist loadfile --durations=15

test: lint test-only

# End to end on a real one-node Slurm cluster through SkyPilot (deploy/local-slurm; needs root).
# The cluster is torn down afterwards unless SKYRUN_SLURM_KEEP=1.
test-slurm: $(STAMP)
	deploy/local-slurm/up.sh
	SKYRUN_SLURM_E2E=1 $(BIN)/pytest tests/slurm --durations=0; status=$$?; \
	if [ "$${SKYRUN_SLURM_KEEP:-}" != 1 ]; then deploy/local-slurm/down.sh; fi; \
	exit $$status

bench: $(STAMP)
	$(BIN)/python bench/overhead.py
	$(BIN)/python bench/bot_startup.py
	$(BIN)/python bench/webhook.py
	$(BIN)/python bench/scaleout.py
	$(BIN)/python bench/capacity.py
	$(BIN)/python bench/dag.py
	$(BIN)/python bench/retry.py

# skyrun's added wall time over the SkyPilot SDK, on the local Slurm cluster (needs root).
bench-slurm: $(STAMP)
	deploy/local-slurm/up.sh
	$(BIN)/python bench/skypilot_overhead.py && $(BIN)/python bench/retry.py slurm; status=$$?; \
	if [ "$${SKYRUN_SLURM_KEEP:-}" != 1 ]; then deploy/local-slurm/down.sh; fi; \
	exit $$status

clean:
	rm -rf $(VENV) .skyrun .mypy_cache .pytest_cache .ruff_cache
